"""Runner agents on a real nats-server: a pytest task in the process sandbox, redelivery
after a runner dies, parking after max deliveries, two runners sharing a queue.

Crashes are in-process (:meth:`RunnerAgent.kill`: the pull is cancelled mid-task, nothing
is acked, completed or retired); tests/faults/test_fleet_kill.py kills real processes.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import msgspec
import nats
import pytest

from aqe.coordination.nats_bus import NatsBus
from aqe.coordination.tasks import COORD_STREAM, TASK_SUBJECTS, TaskBoard
from aqe.errors import CommandRejectedError
from aqe.events import (
    Envelope,
    TaskAbandoned,
    TaskClaimed,
    TaskCompleted,
    TaskParked,
    TestCaseExecuted,
    TestRunFinished,
)
from aqe.log import load_stream_specs
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.projections.deadletter import JetStreamDeadLetters
from aqe.runners import (
    NOOP,
    RunnerAgent,
    RunnerConfig,
    read_task,
    runner_payload,
    submit_runner_task,
)
from aqe.sandbox import Limits, SandboxResult, SandboxSpec, open_sandbox
from support.waiting import until

pytestmark = [pytest.mark.nats, pytest.mark.timeout(120)]

FAST = RunnerConfig(ack_wait_s=2.0, max_attempts=3, fetch_timeout_s=0.5, heartbeat_s=0.5)

SAMPLE_TESTS = """
def test_passes():
    assert 1 + 1 == 2

def test_fails():
    assert 1 + 1 == 3

def test_also_passes():
    pass
"""


class Link:
    def __init__(self, nc: nats.NATS, log: JetStreamEventLog, bus: NatsBus) -> None:
        self.nc = nc
        self.log = log
        self.bus = bus

    def runner(self, *capabilities: str, **kwargs: object) -> RunnerAgent:
        return RunnerAgent(
            self.log,
            self.bus,
            capabilities,
            config=kwargs.pop("config", FAST),  # type: ignore[arg-type]
            dead_letters=JetStreamDeadLetters(self.nc),
            **kwargs,  # type: ignore[arg-type]
        )


async def connect(url: str) -> Link:
    nc = await nats.connect(url)
    specs = load_stream_specs()
    log = JetStreamEventLog(nc, specs)
    return Link(nc, log, NatsBus(nc))


@pytest.fixture
async def links(nats_url: str) -> AsyncIterator[list[Link]]:
    """Three independent connections (a submitter and two runners)."""
    nc = await nats.connect(nats_url)
    await apply_streams(nc, load_stream_specs())
    await nc.close()
    made = [await connect(nats_url) for _ in range(3)]
    yield made
    for link in made:
        await link.bus.close()
        await link.log.close()


async def board(log: JetStreamEventLog) -> TaskBoard:
    out = TaskBoard()
    async for env in log.read(COORD_STREAM, subjects=TASK_SUBJECTS):
        out.apply(env)
    return out


async def events_of(log: JetStreamEventLog, stream: str) -> list[tuple[Envelope, object]]:
    return [(env, env.decode()) async for env in log.read(stream)]


def pytest_spec(tmp_path: Path) -> SandboxSpec:
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_sample.py").write_text(SAMPLE_TESTS)
    return SandboxSpec(source=str(project), limits=Limits(wall_s=120.0, memory_mb=None))


PYTEST_ARGV = (
    sys.executable,
    "-m",
    "pytest",
    "-q",
    "-p",
    "no:cacheprovider",
    "-p",
    "no:randomly",
    "--junitxml=report.xml",
    "test_sample.py",
)


class BlockingSandbox:
    """A sandbox whose runs never end (until cancelled): a runner stuck mid-task."""

    name = "blocking"

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def run(
        self, spec: SandboxSpec, argv: Sequence[str], *, workdir: str = "."
    ) -> SandboxResult:
        self.started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class GatedSandbox:
    """The process sandbox, whose runs first wait for ``gate``: a runner kept busy."""

    name = "process"

    def __init__(self, gate: asyncio.Event) -> None:
        self.gate = gate
        self.started = asyncio.Event()
        self.inner = open_sandbox("process")

    async def run(
        self, spec: SandboxSpec, argv: Sequence[str], *, workdir: str = "."
    ) -> SandboxResult:
        self.started.set()
        await self.gate.wait()
        return await self.inner.run(spec, argv, workdir=workdir)


async def test_a_runner_runs_a_pytest_task_in_the_process_sandbox(
    links: list[Link], tmp_path: Path
) -> None:
    submitter, one, _ = links
    payload = runner_payload(pytest_spec(tmp_path), PYTEST_ARGV)
    await submit_runner_task(submitter.log, "t-pytest", "pytest", payload=payload)
    # The same submission again is a no-op; another task under the same id is refused.
    await submit_runner_task(submitter.log, "t-pytest", "pytest", payload=payload)
    with pytest.raises(CommandRejectedError):
        await submit_runner_task(submitter.log, "t-pytest", "pytest", payload="{}")

    async with one.runner("pytest") as runner:

        async def completed() -> bool:
            entry = await read_task(submitter.log, "t-pytest")
            return entry is not None and entry.status == "completed"

        await until(completed, "the task to complete", timeout_s=90)
        assert runner.stats.failed == 1  # the sample has one failing test

    coord = await events_of(submitter.log, COORD_STREAM)
    done = [e for _, e in coord if isinstance(e, TaskCompleted)]
    assert len(done) == 1
    outcome = done[0].outcome
    assert outcome is not None
    assert outcome.backend == "process"
    assert outcome.exit_code == 1
    assert (outcome.tests, outcome.passed, outcome.failed) == (3, 2, 1)
    assert outcome.outcomes["test_sample.py::test_fails"] == "failed"
    assert outcome.run_id == "t-pytest-a1"
    # The report went through ingest: the run and its cases are in the test history.
    tests = [e for _, e in await events_of(submitter.log, "AQE_TESTS")]
    cases = [e for e in tests if isinstance(e, TestCaseExecuted)]
    assert {(c.nodeid, c.outcome, c.run_id) for c in cases} == {
        ("test_sample.py::test_passes", "passed", "t-pytest-a1"),
        ("test_sample.py::test_fails", "failed", "t-pytest-a1"),
        ("test_sample.py::test_also_passes", "passed", "t-pytest-a1"),
    }
    assert [e.run_id for e in tests if isinstance(e, TestRunFinished)] == ["t-pytest-a1"]
    # The runner joined the fleet while it worked.
    agents = [e for _, e in await events_of(submitter.log, "AQE_AGENTS")]
    assert any(getattr(e, "agent_id", None) == runner.agent_id for e in agents)


async def test_a_task_is_redelivered_to_another_runner_when_its_runner_dies(
    links: list[Link],
) -> None:
    submitter, first, second = links
    stuck = BlockingSandbox()
    payload = runner_payload(SandboxSpec(source="."), ("true",))
    await submit_runner_task(submitter.log, "t-redeliver", "work", payload=payload)

    dying = first.runner("work", agent_id="dying", open_sandbox_for=lambda _b: stuck)
    await dying.start()
    await asyncio.wait_for(stuck.started.wait(), 60)
    await dying.kill()  # mid-task: claimed, never acked or completed

    ran: list[str] = []

    class Quick:
        name = "quick"

        async def run(
            self, spec: SandboxSpec, argv: Sequence[str], *, workdir: str = "."
        ) -> SandboxResult:
            ran.append(" ".join(argv))
            return SandboxResult(exit_code=0, backend="quick")

    async with second.runner("work", agent_id="heir", open_sandbox_for=lambda _b: Quick()):

        async def completed() -> bool:
            entry = await read_task(submitter.log, "t-redeliver")
            return entry is not None and entry.status == "completed"

        await until(completed, "the heir to complete the task", timeout_s=60)

    events = [e for _, e in await events_of(submitter.log, COORD_STREAM)]
    claims = [e for e in events if isinstance(e, TaskClaimed)]
    assert [(c.agent_id, c.attempt) for c in claims] == [("dying", 1), ("heir", 2)]
    abandoned = [e for e in events if isinstance(e, TaskAbandoned)]
    assert [a.agent_id for a in abandoned] == ["dying"]
    assert "stopped acknowledging" in abandoned[0].reason
    done = [e for e in events if isinstance(e, TaskCompleted)]
    assert [d.agent_id for d in done] == ["heir"]
    assert ran == ["true"]


async def test_a_task_is_parked_after_max_deliveries(links: list[Link]) -> None:
    submitter, first, second = links
    payload = runner_payload(SandboxSpec(source="."), ("true",))
    await submit_runner_task(
        submitter.log, "t-poison", "work", payload=payload, params={"max_attempts": "2"}
    )
    # Two runners die in the middle of it, one after the other.
    for n in (1, 2):
        stuck = BlockingSandbox()
        dying = first.runner("work", agent_id=f"dying-{n}", open_sandbox_for=lambda _b, s=stuck: s)
        await dying.start()
        await asyncio.wait_for(stuck.started.wait(), 60)
        await dying.kill()

    parker = second.runner("work", agent_id="parker")
    async with parker:

        async def parked() -> bool:
            entry = await read_task(submitter.log, "t-poison")
            return entry is not None and entry.status == "parked"

        await until(parked, "the third delivery to park the task", timeout_s=60)
    assert parker.stats.parked == 1
    assert parker.stats.completed == 0

    events = [e for _, e in await events_of(submitter.log, COORD_STREAM)]
    claims = [(e.agent_id, e.attempt) for e in events if isinstance(e, TaskClaimed)]
    assert claims == [("dying-1", 1), ("dying-2", 2)]
    (park,) = [e for e in events if isinstance(e, TaskParked)]
    assert (park.agent_id, park.attempts) == ("parker", 2)
    assert park.deliveries >= 3
    assert "max attempts 2" in park.reason
    assert "dying-2" in park.reason
    # ... and its queue message is on the dead-letter stream with the reason.
    letters = [env async for env in submitter.log.read("AQE_DLQ")]
    assert len(letters) == 1
    assert letters[0].subject == "aqe.dlq.runners.AQE_COORD"
    assert "max attempts 2" in letters[0].headers["Aqe-Dlq-Reason"]


async def test_two_runners_share_a_queue(links: list[Link], tmp_path: Path) -> None:
    submitter, first, second = links
    spec = SandboxSpec(source=str(tmp_path), limits=Limits(wall_s=60.0))
    # Each task takes a while, so one runner cannot drain the queue alone.
    payload = runner_payload(spec, (sys.executable, "-c", "import time; time.sleep(0.3)"))
    ids = [f"t-shared-{i}" for i in range(12)]
    # Both runners' first runs wait at one gate: each must have pulled a task from the
    # shared queue before any finishes (which one pulls first is the server's choice).
    gate = asyncio.Event()
    boxes = [GatedSandbox(gate), GatedSandbox(gate)]
    async with (
        first.runner("shared", NOOP, open_sandbox_for=lambda _b: boxes[0]) as a,
        second.runner("shared", open_sandbox_for=lambda _b: boxes[1]) as b,
    ):
        for task_id in ids:
            await submit_runner_task(submitter.log, task_id, "shared", payload=payload)
        await asyncio.wait_for(asyncio.gather(boxes[0].started.wait(), boxes[1].started.wait()), 60)
        gate.set()

        async def all_done() -> bool:
            done = await board(submitter.log)
            return all(t in done.tasks and done.tasks[t].status == "completed" for t in ids)

        await until(all_done, "every task to complete", timeout_s=90)
        assert a.stats.completed + b.stats.completed == len(ids)
        assert a.stats.completed > 0
        assert b.stats.completed > 0

    done = await board(submitter.log)
    assert done.anomalies == []
    claims = Counter(c.task_id for c in done.claims)
    assert claims == Counter({t: 1 for t in ids})
    assert {done.tasks[t].agent for t in ids} == {a.agent_id, b.agent_id}
    assert all(done.tasks[t].completions == 1 for t in ids)


def test_a_payload_is_a_runner_task_as_json(tmp_path: Path) -> None:
    payload = runner_payload(SandboxSpec(source=str(tmp_path)), ("pytest", "-x"), workdir="sub")
    decoded = msgspec.json.decode(payload)
    assert decoded["argv"] == ["pytest", "-x"]
    assert decoded["workdir"] == "sub"
    assert decoded["spec"]["source"] == str(tmp_path)
