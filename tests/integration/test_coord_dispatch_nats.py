"""Dispatch on a real nats-server: every topology, a switch under load, adaptive selection.

Exactly-once is checked twice: from the stream (one winning claim and one completion per
task, folded from ``AQE_COORD`` by a fresh reader) and in the workers (each task's handler
ran once).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import click
import nats
import pytest
from click.testing import CliRunner

from aqe.app import AppContext
from aqe.cli._tasks import tasks as cli_tasks
from aqe.cli._tasks import topology as cli_topology
from aqe.coordination.dispatch import (
    AutoSelect,
    DispatchConfig,
    Fleet,
    MeshDispatcher,
    RingDispatcher,
    StarDispatcher,
    Worker,
)
from aqe.coordination.nats_bus import NatsBus
from aqe.coordination.tasks import TASK_SUBJECTS, TaskBoard, fold_board, new_task_id, submit_tasks
from aqe.coordination.topology import Hysteresis, topology_subject
from aqe.errors import CommandRejectedError, LogError
from aqe.events import Envelope, TaskClaimed, TaskSubmitted, TopologySelected
from aqe.events.coordination import Topology
from aqe.log import load_stream_specs
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.log.retry import while_unavailable
from aqe.server import LocalCluster

pytestmark = [pytest.mark.nats, pytest.mark.timeout(90)]

CONFIG = DispatchConfig(lease_ms=1000, reroute_s=1.0)


class Link:
    def __init__(self, log: JetStreamEventLog, bus: NatsBus) -> None:
        self.log = log
        self.bus = bus


@pytest.fixture
async def link(nats_url: str) -> AsyncIterator[Link]:
    nc = await nats.connect(nats_url)
    specs = load_stream_specs()
    await apply_streams(nc, specs)
    log = JetStreamEventLog(nc, specs)
    bus = NatsBus(nc)
    yield Link(log, bus)
    await bus.close()
    await log.close()


Runs = Counter[str]


def workers(log: JetStreamEventLog, n: int, runs: Runs, *, max_delay: float = 0.0) -> list[Worker]:
    async def handler(task: TaskSubmitted) -> str:
        runs[task.task_id] += 1
        if max_delay:
            await asyncio.sleep(random.random() * max_delay)
        if task.params.get("fail") == "yes":
            raise RuntimeError("this task fails")
        return "ok"

    return [Worker(f"agent-{i}", handler, log=log, capacity=2) for i in range(n)]


def tasks(n: int, **params: str) -> list[TaskSubmitted]:
    return [
        TaskSubmitted(task_id=new_task_id(), kind="noop", params=dict(params)) for _ in range(n)
    ]


async def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def stream_envelopes(log: JetStreamEventLog) -> list[Envelope]:
    return [env async for env in log.read("AQE_COORD", subjects=TASK_SUBJECTS)]


def assert_exactly_once(board: TaskBoard, runs: Runs, expected: int) -> None:
    """One claim, one completion per task in the log; one run per task in the workers."""
    assert board.anomalies == []
    assert board.submitted == expected
    assert board.claimed == expected, board.summary()
    assert board.completed == expected
    assert board.abandoned == 0
    assert all(e.completions == 1 and e.attempt == 1 for e in board.tasks.values())
    assert set(runs) == set(board.tasks)
    assert max(runs.values()) == 1, [t for t, n in runs.items() if n > 1]


@pytest.mark.parametrize("topology", ["star", "mesh", "ring", "hierarchical"])
async def test_each_topology_dispatches_100_tasks_once(link: Link, topology: Topology) -> None:
    runs: Runs = Counter()
    fleet = Fleet(
        link.log,
        link.bus,
        workers(link.log, 4, runs, max_delay=0.002),
        fleet="it",
        initial=topology,
        config=CONFIG,
    )
    async with fleet:
        await submit_tasks(link.log, tasks(100))
        await wait_for(lambda: fleet.board.board.completed == 100, 30, "100 completions")
    board = fold_board(await stream_envelopes(link.log))
    assert_exactly_once(board, runs, 100)
    assert board.claims_by_topology == {topology: 100}
    # Every agent got work.
    assert len({e.agent for e in board.tasks.values()}) == 4


async def test_switch_under_load_loses_nothing_and_runs_nothing_twice(link: Link) -> None:
    """500 tasks arrive while the fleet goes star -> mesh -> ring -> hierarchical."""
    runs: Runs = Counter()
    fleet = Fleet(
        link.log,
        link.bus,
        workers(link.log, 6, runs, max_delay=0.01),
        fleet="it",
        initial="star",
        config=CONFIG,
    )
    order: list[Topology] = ["mesh", "ring", "hierarchical"]
    async with fleet:
        for batch in range(10):
            await submit_tasks(link.log, tasks(50))
            if batch in (2, 5, 8):  # right after a batch: work is waiting
                decided = await fleet.select(order.pop(0), reasons=("switch under load",))
                assert await fleet.wait_epoch(decided.seq)
            await asyncio.sleep(0.05)
        await wait_for(lambda: fleet.board.board.completed == 500, 60, "500 completions")

    envelopes = await stream_envelopes(link.log)
    board = fold_board(envelopes)
    assert_exactly_once(board, runs, 500)
    # Every topology dispatched part of the load, and at each switch tasks submitted
    # before it were handed over to the new topology.
    assert set(board.claims_by_topology) == {"star", "mesh", "ring", "hierarchical"}
    # Claims were made under the epoch in force: the old topology stopped before the new
    # one began, so epochs never go back in stream order.
    decisions = [env async for env in link.log.read("AQE_COORD", subjects=topology_subject("it"))]
    epochs = {0: "star"} | {env.seq: env.decode().topology for env in decisions}  # type: ignore[attr-defined]
    claims = [env.decode() for env in envelopes if env.subject.endswith(".claimed")]
    assert all(isinstance(c, TaskClaimed) and epochs[c.epoch] == c.topology for c in claims)
    claim_epochs = [c.epoch for c in claims if isinstance(c, TaskClaimed)]
    assert claim_epochs == sorted(claim_epochs)
    for epoch, topology in epochs.items():
        handed_over = [
            e for e in board.tasks.values() if e.submitted_seq < epoch and e.epoch == epoch
        ]
        assert epoch == 0 or handed_over, f"nothing was pending when {topology} took over"
    # The recorded switches chain: previous is what ran before.
    recorded = [env.decode() for env in decisions]
    assert [(e.previous, e.topology) for e in recorded if isinstance(e, TopologySelected)] == [
        ("star", "mesh"),
        ("mesh", "ring"),
        ("ring", "hierarchical"),
    ]
    assert [s.topology for s in fleet.switches] == ["star", "mesh", "ring", "hierarchical"]


async def test_claimers_of_three_topologies_at_once_still_claim_each_task_once(
    link: Link,
) -> None:
    """Stale claimers that never heard of a switch cannot make a task run twice."""
    runs: Runs = Counter()
    fleet = Fleet(
        link.log,
        link.bus,
        workers(link.log, 4, runs, max_delay=0.002),
        fleet="it",
        initial="star",
        config=CONFIG,
    )
    async with fleet:
        extra = [MeshDispatcher(fleet.ctx, epoch=101), RingDispatcher(fleet.ctx, epoch=102)]
        for dispatcher in extra:
            await dispatcher.start()
        await submit_tasks(link.log, tasks(200))
        await wait_for(lambda: fleet.board.board.completed == 200, 40, "200 completions")
        for dispatcher in extra:
            await dispatcher.drain()
        assert isinstance(fleet.dispatcher, StarDispatcher)
        lost = fleet.dispatcher.lost + sum(d.lost for d in extra)
    board = fold_board(await stream_envelopes(link.log))
    assert_exactly_once(board, runs, 200)
    assert len(board.claims_by_topology) >= 2  # they really competed...
    assert lost > 0  # ...and the server turned the losers away


async def test_fleet_adapts_its_topology_to_a_failing_workload(link: Link) -> None:
    """Many failures make single points of failure costly: the fleet leaves star for mesh."""
    runs: Runs = Counter()
    auto = AutoSelect(
        interval_s=0.3, window_s=30, min_claims=20, policy=Hysteresis(margin=0.2, window=2)
    )
    fleet = Fleet(
        link.log,
        link.bus,
        workers(link.log, 4, runs),
        fleet="it",
        initial="star",
        config=CONFIG,
        auto=auto,
    )
    async with fleet:
        await submit_tasks(link.log, tasks(30, fail="yes") + tasks(30))
        await wait_for(lambda: fleet.topology == "mesh", 20, "a switch to mesh")
        await submit_tasks(link.log, tasks(40))
        await wait_for(lambda: fleet.board.board.completed == 100, 30, "100 completions")
    board = fold_board(await stream_envelopes(link.log))
    assert board.failed == 30
    assert board.claimed == board.completed == 100
    assert max(runs.values()) == 1
    assert board.claims_by_topology.get("mesh", 0) > 0
    last = await link.log.last(topology_subject("it"))
    assert last is not None
    decision = last.decode()
    assert isinstance(decision, TopologySelected)
    assert (decision.previous, decision.topology) == ("star", "mesh")
    assert decision.signals["failure_rate"] > 0.2
    assert decision.signals["agents"] == 4
    assert decision.scores["mesh"] < decision.scores["star"]
    assert any("failure rate" in r for r in decision.reasons)
    assert "switch" in decision.reasons[-1]
    # The decisions before the switch waited out the hysteresis window.
    assert [d.switch for d in fleet.decisions][:2] == [False, True]


# -- the CLI ----------------------------------------------------------------------------------


def test_tasks_and_topology_cli(nats_url: str, tmp_path: Path) -> None:
    runner = CliRunner()
    app = AppContext(str(tmp_path / "data"), nats_url)

    def call(group: click.Group, *args: str) -> Any:
        result = runner.invoke(group, [*args, "--json"], obj=app)
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    rows = call(cli_tasks, "submit", "lint", "--complexity", "2", "--param", "repo=aqe",
                "--count", "3")  # fmt: skip
    assert len(rows) == 3
    assert len({r["task_id"] for r in rows}) == 3
    assert call(cli_tasks, "submit", "lint", "--id", "fixed")[0]["task_id"] == "fixed"
    again = runner.invoke(cli_tasks, ["submit", "lint", "--id", "fixed"], obj=app)
    assert isinstance(again.exception, CommandRejectedError)
    assert "task fixed exists already" in str(again.exception)
    bad = runner.invoke(cli_tasks, ["submit", "lint", "--param", "novalue"], obj=app)
    assert bad.exit_code == 2
    assert "KEY=VALUE" in bad.output

    status = call(cli_tasks, "status")
    assert (status["submitted"], status["pending"], status["completed"]) == (4, 4, 0)

    assert call(cli_topology, "show")["topology"] is None
    chosen = call(cli_topology, "select", "--fleet", "cli", "--agents", "3", "--record")
    assert (chosen["current"], chosen["switch"]) == (None, True)
    assert chosen["topology"] == chosen["best"] == "star"
    assert chosen["signals"]["agents"] == 3.0
    assert chosen["signals"]["complexity"] == pytest.approx(1.75)
    assert set(chosen["scores"]) == {"star", "mesh", "ring", "hierarchical"}
    assert chosen["recorded_epoch"] > 0
    shown = call(cli_topology, "show", "--fleet", "cli")
    assert (shown["topology"], shown["epoch"]) == ("star", chosen["recorded_epoch"])
    assert shown["reasons"] == chosen["reasons"]
    # Measured again with star in force: it stays, and nothing is recorded.
    stay = call(cli_topology, "select", "--fleet", "cli", "--agents", "3", "--record")
    assert (stay["switch"], stay["recorded_epoch"]) == (False, None)

    # Run the submitted tasks with a fleet that follows the CLI's decisions.
    moved = call(cli_topology, "set", "ring", "--fleet", "cli", "--reason", "try a ring")
    assert (moved["previous"], moved["topology"]) == ("star", "ring")

    async def work() -> None:
        nc = await nats.connect(nats_url)
        log = JetStreamEventLog(nc, load_stream_specs())
        bus = NatsBus(nc)
        fleet = Fleet(log, bus, workers(log, 3, Counter()), fleet="cli", config=CONFIG)
        async with fleet:
            assert (fleet.topology, fleet.epoch) == ("ring", moved["epoch"])
            await wait_for(lambda: fleet.board.board.completed == 4, 20, "4 completions")
        await bus.close()
        await log.close()

    asyncio.run(work())
    status = call(cli_tasks, "status")
    assert (status["completed"], status["pending"]) == (4, 0)
    assert status["by_topology"]["ring"]["claims"] == 4.0
    listed = call(cli_tasks, "list", "--status", "completed", "--limit", "2")
    assert len(listed) == 2
    assert all(e["topology"] == "ring" and e["agent"] for e in listed)
    history = call(cli_topology, "show", "--fleet", "cli", "--history")
    assert [h["topology"] for h in history] == ["star", "ring"]
    assert history[1]["reasons"] == ["try a ring"]

    text = runner.invoke(cli_topology, ["select", "--fleet", "cli", "--agents", "3"], obj=app)
    assert text.exit_code == 0, text.output
    assert "score ms/task" in text.output
    assert "<- best" in text.output
    table = runner.invoke(cli_topology, ["table"], obj=app, env={"COLUMNS": "250"})
    assert table.exit_code == 0
    assert "200 agents" in table.output
    assert len(call(cli_topology, "table")) == 11


# -- the 3-node cluster ------------------------------------------------------------------------


@pytest.mark.cluster
@pytest.mark.timeout(150)
async def test_dispatch_survives_the_stream_leader_dying_mid_switch(
    nats_cluster: LocalCluster,
) -> None:
    """Kill AQE_COORD's Raft leader under load, then switch topology: still exactly once."""
    nc = await nats.connect(nats_cluster.urls, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    specs = load_stream_specs()
    await apply_streams(nc, specs)
    log = JetStreamEventLog(nc, specs)
    bus = NatsBus(nc)
    runs: Runs = Counter()
    fleet = Fleet(log, bus, workers(log, 4, runs, max_delay=0.005), fleet="c",
                  initial="star", config=CONFIG)  # fmt: skip
    killed_at = 0.0
    try:
        async with fleet:
            for batch in range(12):
                while True:  # submitting rides out the failover too
                    try:
                        await submit_tasks(log, tasks(25))
                        break
                    except LogError:
                        await asyncio.sleep(0.2)
                if batch == 4:
                    nats_cluster.kill(await nats_cluster.stream_leader("AQE_COORD"))
                    killed_at = time.monotonic()
                if batch == 8:
                    decided = await fleet.select("mesh", reasons=("after a failover",))
                    # Under the full suite's load the mesh's durable consumer can take
                    # well over 30 s to be created right after a failover (seen once).
                    assert await fleet.wait_epoch(decided.seq, 75)
                await asyncio.sleep(0.1)
            await wait_for(lambda: fleet.board.board.completed >= 300, 40, "300 completions")
        board = fold_board(await while_unavailable(lambda: stream_envelopes(log), within_s=45))
        assert_exactly_once(board, runs, 300)
        assert set(board.claims_by_topology) == {"star", "mesh"}
        assert time.monotonic() - killed_at < 50
    finally:
        await bus.close()
        await log.close()
