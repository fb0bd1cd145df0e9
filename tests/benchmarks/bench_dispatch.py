"""Task dispatch throughput and claim latency per topology, against raw appends, in one run.

Usage::

    python tests/benchmarks/bench_dispatch.py [--tasks N] [--agents 4,8] [--capacity C]
                                               [--rounds R] [--own-connections] [--json]

The script starts its own nats-server (``aqe.server.NatsServerProcess``), applies the
project's streams and, for each round (topologies and agent counts in a rotated order so
machine noise hits every side alike), measures:

* **baseline**: raw pipelined appends (``JetStreamEventLog.append_many``) of ``3 * N``
  events, the number a dispatched task writes (submitted, claimed, completed);
* **dispatch** per topology and agent count: ``N`` no-op tasks submitted at once to a
  fresh :class:`~aqe.coordination.dispatch.Fleet` of in-process workers (``C`` slots
  each); tasks/s is ``N`` over server time from the first submission to the last
  completion, and ``x raw`` is ``3 * tasks/s`` over the baseline's events/s;
* **claim latency** per topology and agent count, at a paced load of half that
  topology's measured throughput (capped at 500 tasks/s): server time from a task's
  submission to its claim, p50 and p99;
* the **cost model** beside it: the claim latency :func:`~aqe.coordination.topology.costs`
  predicts for that agent count and paced rate, with the default constants;
* the bare round trips behind the model's constants on this machine: a conditional
  append (``append_ms``), a core request to another subscriber (``hop_ms``) and a
  work-queue fetch (``pull_ms``); the model's defaults are effective costs, larger.

``AQE_COORD`` is purged between measurements. Medians over rounds. The script reports;
it never fails on a number (exit 0), only on errors, or when a task ran twice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client

from aqe.coordination.dispatch import DISPATCHERS, DispatchConfig, Fleet, Worker
from aqe.coordination.nats_bus import NatsBus
from aqe.coordination.tasks import (
    COORD_STREAM,
    TASK_SUBJECTS,
    fold_board,
    percentile,
    submit_tasks,
)
from aqe.coordination.topology import Signals, costs
from aqe.events import TaskSubmitted
from aqe.events.coordination import Topology
from aqe.log import NewEvent, load_stream_specs
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.server import NatsServerProcess

TOPOLOGIES: tuple[Topology, ...] = tuple(DISPATCHERS)
PACED_CAP = 500.0
PACED_SECONDS = 2.0
_DEADLINE_S = 120.0


@contextmanager
def nats_server() -> Iterator[str]:
    """A throwaway JetStream server on a free port; yields its URL."""
    workdir = Path(tempfile.mkdtemp(prefix="aqe-bench-dispatch-"))
    try:
        with NatsServerProcess.start_sync(workdir / "js", log_file=workdir / "nats.log") as server:
            yield server.url
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def fresh_tasks(n: int) -> list[TaskSubmitted]:
    tag = uuid.uuid4().hex[:8]
    return [TaskSubmitted(task_id=f"b-{tag}-{i}", kind="noop") for i in range(n)]


async def purge(nc: Client) -> None:
    await nc.jetstream().purge_stream(COORD_STREAM)


async def raw_append(log: JetStreamEventLog, n_events: int) -> float:
    """Events/s of pipelined appends of ``n_events`` fresh task events."""
    events = [NewEvent(event=t) for t in fresh_tasks(n_events)]
    started = time.perf_counter()
    for i in range(0, len(events), 2000):
        await log.append_many(events[i : i + 2000])
    return n_events / (time.perf_counter() - started)


async def model_constants(
    log: JetStreamEventLog, bus: NatsBus, samples: int = 200
) -> dict[str, float]:
    """append_ms, hop_ms and pull_ms as the cost model defines them, p50."""
    appends: list[float] = []
    for t in fresh_tasks(samples):
        started = time.perf_counter()
        await log.append(t, expected_subject=f"aqe.coord.task.{t.task_id}.*", expected_last_seq=0)
        appends.append((time.perf_counter() - started) * 1000)

    async def echo(message: Any) -> None:
        await message.respond(b"ok")

    sub = await bus.subscribe("aqe.work.bench.echo", echo)
    hops: list[float] = []
    for _ in range(samples):
        started = time.perf_counter()
        await bus.request("aqe.work.bench.echo", b"x", 1.0)
        hops.append((time.perf_counter() - started) * 1000)
    await sub.unsubscribe()
    await bus.create_work_queue(
        COORD_STREAM, "bench-pull", ["aqe.coord.task.*.submitted"], start_seq=1
    )
    puller = await bus.open_work_queue(COORD_STREAM, "bench-pull")
    pulls: list[float] = []
    for _ in range(samples // 2):
        started = time.perf_counter()
        items = await puller.fetch(1, 1.0)
        pulls.append((time.perf_counter() - started) * 1000)
        for item in items:
            await item.ack()
    await puller.close()
    await bus.delete_work_queue(COORD_STREAM, "bench-pull")
    return {
        "append_ms": percentile(appends, 0.5),
        "hop_ms": percentile(hops, 0.5),
        "pull_ms": percentile(pulls, 0.5),
    }


class Run:
    """One fleet: workers counting their runs."""

    def __init__(
        self,
        log: JetStreamEventLog,
        bus: NatsBus,
        topology: Topology,
        agents: int,
        capacity: int,
        worker_logs: Sequence[JetStreamEventLog] | None,
    ) -> None:
        self.runs: Counter[str] = Counter()

        async def handler(task: TaskSubmitted) -> None:
            self.runs[task.task_id] += 1

        workers = [
            Worker(
                f"w{i}",
                handler,
                log=worker_logs[i] if worker_logs else log,
                capacity=capacity,
            )
            for i in range(agents)
        ]
        self.fleet = Fleet(
            log, bus, workers, fleet=f"bench-{uuid.uuid4().hex[:6]}", initial=topology,
            config=DispatchConfig(),
        )  # fmt: skip


async def wait_completed(fleet: Fleet, n: int) -> None:
    deadline = time.monotonic() + _DEADLINE_S
    while fleet.board.board.completed < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{fleet.topology}: only {fleet.board.board.completed}/{n} done")
        await asyncio.sleep(0.01)


async def dispatch(
    log: JetStreamEventLog, bus: NatsBus, topology: Topology, agents: int, capacity: int,
    n: int, worker_logs: Sequence[JetStreamEventLog] | None,
) -> dict[str, float]:  # fmt: skip
    """Burst throughput, then claim latency at a paced load, on one fresh fleet."""
    run = Run(log, bus, topology, agents, capacity, worker_logs)
    fleet = run.fleet
    await fleet.start()
    try:
        burst = fresh_tasks(n)
        await submit_tasks(log, burst)
        await wait_completed(fleet, n)
        board = fleet.board.board
        ids = {t.task_id for t in burst}
        first = min(board.tasks[i].submitted_ns for i in ids)
        last = max(board.tasks[i].completed_ns for i in ids)
        rate = n / max((last - first) / 1e9, 1e-9)

        paced_rate = min(PACED_CAP, rate / 2)
        paced: list[TaskSubmitted] = []
        step = 0.02
        per_step = max(1, round(paced_rate * step))
        started = time.monotonic()
        while time.monotonic() - started < PACED_SECONDS:
            batch = fresh_tasks(per_step)
            paced += batch
            await submit_tasks(log, batch)
            await asyncio.sleep(step)
        await wait_completed(fleet, n + len(paced))
        paced_ids = {t.task_id for t in paced}
        latencies = [c.latency_ms for c in board.claims if c.task_id in paced_ids]
    finally:
        await fleet.stop()
    envelopes = [env async for env in log.read(COORD_STREAM, subjects=TASK_SUBJECTS)]
    stored = fold_board(envelopes)
    twice = [t for t, k in run.runs.items() if k > 1]
    if twice or stored.anomalies or stored.claimed != stored.completed:
        raise RuntimeError(f"{topology}: exactly-once violated: {twice[:5]} {stored.anomalies[:5]}")
    return {
        "tasks_per_s": rate,
        "paced_rate": len(paced) / PACED_SECONDS,
        "claim_p50_ms": percentile(latencies, 0.5),
        "claim_p99_ms": percentile(latencies, 0.99),
    }


async def measure(
    url: str, n: int, agent_counts: Sequence[int], capacity: int, rounds: int, own: bool
) -> dict[str, Any]:
    nc = await nats.connect(url)
    specs = load_stream_specs()
    await apply_streams(nc, specs)
    log = JetStreamEventLog(nc, specs)
    bus = NatsBus(nc)
    extra: list[JetStreamEventLog] = []
    if own:
        for _ in range(max(agent_counts)):
            extra.append(JetStreamEventLog(await nats.connect(url), specs))
    samples: dict[str, list[dict[str, float]]] = {}
    baseline: list[float] = []
    constants = await model_constants(log, bus)
    cases = [(t, a) for a in agent_counts for t in TOPOLOGIES]
    try:
        for rnd in range(rounds + 1):  # round 0 warms up
            await purge(nc)
            raw = await raw_append(log, 3 * n)
            if rnd:
                baseline.append(raw)
            shift = rnd % len(cases)
            for topology, agents in cases[shift:] + cases[:shift]:
                await purge(nc)
                result = await dispatch(log, bus, topology, agents, capacity, n, extra or None)
                if rnd:
                    samples.setdefault(f"{topology}/{agents}", []).append(result)
                print(
                    f"round {rnd}{' (warm-up)' if not rnd else ''}: {topology:12} {agents} agents "
                    f"{result['tasks_per_s']:8,.0f} tasks/s",
                    file=sys.stderr,
                )
    finally:
        for other in extra:
            await other.close()
        await bus.close()
        await log.close()
    return {"constants": constants, "baseline": baseline, "samples": samples}


def summarize(data: dict[str, Any], n: int) -> list[dict[str, Any]]:
    raw = statistics.median(data["baseline"])
    rows = []
    for key, results in data["samples"].items():
        topology, agents = key.split("/")
        rate = statistics.median(r["tasks_per_s"] for r in results)
        rows.append(
            {
                "topology": topology,
                "agents": int(agents),
                "tasks_per_s": rate,
                "x_raw": 3 * rate / raw,
                "paced_rate": statistics.median(r["paced_rate"] for r in results),
                "claim_p50_ms": statistics.median(r["claim_p50_ms"] for r in results),
                "claim_p99_ms": statistics.median(r["claim_p99_ms"] for r in results),
            }
        )
    for r in rows:
        # The cost model's (uncalibrated) claim latency for this load, beside the measure.
        signals = Signals(agents=r["agents"], rate=r["paced_rate"], task_ms=0.01)
        r["model_ms"] = costs(signals)[0][r["topology"]]
    rows.sort(key=lambda r: (r["agents"], TOPOLOGIES.index(r["topology"])))
    return rows


def print_table(rows: list[dict[str, Any]], data: dict[str, Any], n: int, capacity: int) -> None:
    raw = statistics.median(data["baseline"])
    rounds = len(data["baseline"])
    print(f"{n:,} no-op tasks per burst, {capacity} slots per agent, median of {rounds} rounds")
    print(f"baseline: raw append_many of {3 * n:,} events: {raw:,.0f} events/s")
    header = (
        f"{'topology':<13}{'agents':>6}{'tasks/s':>10}{'x raw':>8}"
        f"{'paced/s':>9}{'claim p50 ms':>14}{'claim p99 ms':>14}{'model ms':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['topology']:<13}{r['agents']:>6}{r['tasks_per_s']:>10,.0f}{r['x_raw']:>8.3f}"
            f"{r['paced_rate']:>9,.0f}{r['claim_p50_ms']:>14.2f}{r['claim_p99_ms']:>14.2f}"
            f"{r['model_ms']:>10.2f}"
        )
    c = data["constants"]
    print(
        f"\nbare round trips here (p50): append {c['append_ms']:.3f} ms  core request "
        f"{c['hop_ms']:.3f} ms  fetch {c['pull_ms']:.3f} ms"
    )
    print("x raw = 3 events per task x tasks/s / raw append events/s")
    print("model ms = CostModel's claim latency at the paced rate (defaults, uncalibrated)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000, help="tasks per burst (default 2000)")
    parser.add_argument("--agents", default="4,8", help="agent counts (default 4,8)")
    parser.add_argument("--capacity", type=int, default=4, help="slots per agent (default 4)")
    parser.add_argument("--rounds", type=int, default=2, help="measured rounds (default 2)")
    parser.add_argument(
        "--own-connections", action="store_true",
        help="each worker completes tasks over its own connection (default: one shared)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    counts = [int(a) for a in args.agents.split(",") if a.strip()]
    with nats_server() as url:
        data = asyncio.run(
            measure(url, args.tasks, counts, args.capacity, args.rounds, args.own_connections)
        )
    rows = summarize(data, args.tasks)
    if args.json:
        print(json.dumps({"tasks": args.tasks, "capacity": args.capacity, **data, "results": rows},
                         indent=2))  # fmt: skip
    else:
        print_table(rows, data, args.tasks, args.capacity)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
