"""The workflow driver on a real nats-server, with a runner: rerun a test N times, restart
the driver mid-way (no step twice), cancel, and a timer that outlives its driver."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from aqe.coordination.nats_bus import NatsBus
from aqe.coordination.tasks import COORD_STREAM, TASK_SUBJECTS
from aqe.events import TaskClaimed, TaskSubmitted, WorkflowDecided, WorkflowTimerFired
from aqe.log import load_stream_specs
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.runners import RunnerAgent, RunnerConfig
from aqe.workflows._store import cancel_instance, read_instance, start_instance
from aqe.workflows.driver import WorkflowDriver
from aqe.workflows.rerun import RerunWorkflow
from support.waiting import until

pytestmark = [pytest.mark.nats, pytest.mark.timeout(180)]

FAST = RunnerConfig(ack_wait_s=5.0, fetch_timeout_s=0.5, heartbeat_s=0.5)
WORKFLOWS = {"rerun": RerunWorkflow()}


@pytest.fixture
async def log(nats_url: str) -> AsyncIterator[JetStreamEventLog]:
    nc = await nats.connect(nats_url)
    specs = load_stream_specs()
    await apply_streams(nc, specs)
    out = JetStreamEventLog(nc, specs)
    yield out
    await out.close()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "test_it.py").write_text("def test_ok():\n    assert True\n")
    return folder


def params(project: Path, times: int = 3, **more: str) -> dict[str, str]:
    return {
        "test": "test_it.py::test_ok",
        "source": str(project),
        "times": str(times),
        "python": sys.executable,
        **more,
    }


async def finished(log: JetStreamEventLog, instance_id: str) -> bool:
    instance, _ = await read_instance(log, instance_id)
    return instance is not None and instance.finished


async def test_rerun_runs_a_test_n_times_and_records_the_outcomes(
    log: JetStreamEventLog, project: Path
) -> None:
    runner = RunnerAgent(log, NatsBus(log.connection), ["pytest"], config=FAST)
    async with runner, WorkflowDriver(log, WORKFLOWS, tick_s=0.1):
        instance_id, _ = await start_instance(log, "rerun", params(project))
        await until(lambda: finished(log, instance_id), "the rerun to finish", timeout_s=150)
    instance, facts = await read_instance(log, instance_id)
    assert instance is not None
    assert instance.status == "succeeded"
    assert instance.result["passed"] == "3"
    assert sorted(instance.results) == ["run-1", "run-2", "run-3"]
    decided = [f.event for f in facts if isinstance(f.event, WorkflowDecided)]
    assert [(d.key, d.decision) for d in decided] == [("outcomes", "3/3 passed")]
    # Each step was one task, claimed once.
    claims = Counter(
        [
            env.decode().task_id  # type: ignore[attr-defined]
            async for env in log.read(COORD_STREAM, subjects="aqe.coord.task.*.claimed")
        ]
    )
    assert sorted(claims.values()) == [1, 1, 1]
    assert set(claims) == set(instance.steps.values())


async def test_a_restarted_driver_runs_no_step_twice(log: JetStreamEventLog, project: Path) -> None:
    instance_id, _ = await start_instance(log, "rerun", params(project, times=2))
    first = WorkflowDriver(log, WORKFLOWS, tick_s=0.1)
    await first.start()

    async def scheduled() -> bool:
        instance, _ = await read_instance(log, instance_id)
        return instance is not None and len(instance.steps) == 2

    await until(scheduled, "both steps to be scheduled", timeout_s=60)
    await first.stop()  # no runner yet: both tasks wait on the queue
    second = WorkflowDriver(log, WORKFLOWS, tick_s=0.1)
    runner = RunnerAgent(log, NatsBus(log.connection), ["pytest"], config=FAST)
    async with second, runner:
        await until(lambda: finished(log, instance_id), "the rerun to finish", timeout_s=150)
    submitted = [
        env.decode()
        async for env in log.read(COORD_STREAM, subjects=TASK_SUBJECTS)
        if env.subject.endswith(".submitted")
    ]
    assert len(submitted) == 2
    assert all(isinstance(s, TaskSubmitted) for s in submitted)
    claimed = [
        env.decode() async for env in log.read(COORD_STREAM, subjects="aqe.coord.task.*.claimed")
    ]
    assert len(claimed) == 2
    assert all(isinstance(c, TaskClaimed) and c.attempt == 1 for c in claimed)
    instance, _ = await read_instance(log, instance_id)
    assert instance is not None
    assert instance.status == "succeeded"


async def test_cancel_ends_an_instance(log: JetStreamEventLog, project: Path) -> None:
    async with WorkflowDriver(log, WORKFLOWS, tick_s=0.1):
        instance_id, _ = await start_instance(log, "rerun", params(project))
        await cancel_instance(log, instance_id, reason="not needed", by="test")
        await until(lambda: finished(log, instance_id), "the cancel to land", timeout_s=60)
    instance, _ = await read_instance(log, instance_id)
    assert instance is not None
    assert instance.status == "cancelled"
    assert instance.reasons == ("not needed",)


async def test_a_timer_fires_after_its_driver_restarts(
    log: JetStreamEventLog, project: Path
) -> None:
    # No runner: the runs never end, so only the give-up timer can finish the instance.
    instance_id, _ = await start_instance(
        log, "rerun", params(project, times=1, give_up_after_s="2")
    )
    async with WorkflowDriver(log, WORKFLOWS, tick_s=0.1):

        async def timer_set() -> bool:
            instance, _ = await read_instance(log, instance_id)
            return instance is not None and "give-up" in instance.timers

        await until(timer_set, "the give-up timer to be set", timeout_s=60)
    # The driver is gone when the timer comes due; a new one fires it.
    async with WorkflowDriver(log, WORKFLOWS, tick_s=0.1):
        await until(lambda: finished(log, instance_id), "the give-up", timeout_s=60)
    instance, facts = await read_instance(log, instance_id)
    assert instance is not None
    assert instance.status == "gave-up"
    assert [f.event.timer for f in facts if isinstance(f.event, WorkflowTimerFired)] == ["give-up"]
