"""kill -9 the workflow driver and a runner in the middle of a task; every workflow completes,
no step runs twice, no result is lost.

Real processes against a real nats-server: one ``aqe workflows run`` and two
``aqe agent run --capability pytest``. Several ``rerun`` instances run a test that takes
a while; once a runner holds a claim, that runner and the driver are killed with SIGKILL,
a new driver (and a replacement runner) start, and the test checks from the log:

* every instance finished ``succeeded`` with every run ``passed``;
* every step is one task, submitted once; each task was claimed once per attempt
  (claims == abandons + 1), completed exactly once, and only the killed runner's task
  has a second attempt, claimed by another runner after the ack wait.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

import nats
import pytest

from aqe.coordination.tasks import COORD_STREAM, TASK_SUBJECTS, TaskBoard
from aqe.events import TaskSubmitted
from aqe.log import load_stream_specs
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.workflows._store import read_instances, start_instance
from support.waiting import until

pytestmark = [pytest.mark.faults, pytest.mark.nats, pytest.mark.timeout(300)]

AQE = str(Path(sys.executable).with_name("aqe"))
INSTANCES = 3
TIMES = 3
ACK_WAIT = "3"


@pytest.fixture
async def log(nats_url: str) -> AsyncIterator[JetStreamEventLog]:
    nc = await nats.connect(nats_url)
    specs = load_stream_specs()
    await apply_streams(nc, specs)
    out = JetStreamEventLog(nc, specs)
    yield out
    await out.close()


class Fleet:
    def __init__(self, url: str, root: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AQE_")}
        self.env.update(AQE_NATS_URL=url, AQE_DATA_DIR=str(root / "data"))
        self.root = root
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.files: list[BinaryIO] = []

    def spawn(self, name: str, *args: str) -> None:
        out = (self.root / f"{name}.log").open("wb")
        self.files.append(out)
        self.procs[name] = subprocess.Popen(
            [AQE, *args], env=self.env, stdout=out, stderr=subprocess.STDOUT
        )

    def runner(self, name: str) -> None:
        self.spawn(name, "agent", "run", "--capability", "pytest", "--agent-id", name,
                   "--ack-wait", ACK_WAIT, "--heartbeat", "0.5")  # fmt: skip

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() not in (None, -signal.SIGKILL):
                raise AssertionError(f"{name} exited with {proc.returncode}\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
            for p in sorted(self.root.glob("*.log"))
        )

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for out in self.files:
            out.close()


async def board(log: JetStreamEventLog) -> TaskBoard:
    out = TaskBoard()
    async for env in log.read(COORD_STREAM, subjects=TASK_SUBJECTS):
        out.apply(env)
    return out


async def test_kill_the_driver_and_a_runner_mid_task(
    log: JetStreamEventLog, nats_url: str, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_slow.py").write_text("import time\n\ndef test_slow():\n    time.sleep(1.5)\n")
    fleet = Fleet(nats_url, tmp_path)
    try:
        fleet.spawn("driver-1", "workflows", "run")
        fleet.runner("runner-a")
        fleet.runner("runner-b")
        ids = []
        for n in range(INSTANCES):
            instance_id, _ = await start_instance(
                log,
                "rerun",
                {
                    "test": "test_slow.py::test_slow",
                    "source": str(project),
                    "times": str(TIMES),
                    "python": sys.executable,
                },
                instance_id=f"fleet-kill-{n}",
            )
            ids.append(instance_id)

        async def a_claim_in_flight() -> str | None:
            state = await board(log)
            held = {t.agent for t in state.tasks.values() if t.status == "claimed"}
            return next((a for a in ("runner-a", "runner-b") if a in held), None)

        victim = await until(
            a_claim_in_flight, "a runner to hold a claim", timeout_s=120, alive=fleet.alive,
            context=fleet.logs,
        )  # fmt: skip
        fleet.kill(victim)
        fleet.kill("driver-1")
        before = await board(log)
        killed_tasks = {t.task_id for t in before.tasks.values() if t.agent == victim
                        and t.status == "claimed"}  # fmt: skip
        assert killed_tasks
        fleet.spawn("driver-2", "workflows", "run")
        fleet.runner("runner-c")

        async def all_finished() -> bool:
            instances = await read_instances(log)
            return all(i in instances and instances[i].finished for i in ids)

        await until(all_finished, "every workflow to finish", timeout_s=240,
                    alive=fleet.alive, context=fleet.logs)  # fmt: skip
    finally:
        fleet.stop()

    instances = await read_instances(log)
    for instance_id in ids:
        instance = instances[instance_id]
        assert instance.status == "succeeded", (instance_id, instance.reasons, fleet.logs())
        assert instance.result["passed"] == str(TIMES)
        assert sorted(instance.steps) == [f"run-{i}" for i in range(1, TIMES + 1)]
    steps = [t for i in ids for t in instances[i].steps.values()]
    assert len(set(steps)) == INSTANCES * TIMES

    state = await board(log)
    assert state.anomalies == []
    submitted = Counter(
        [
            env.decode().task_id  # type: ignore[attr-defined]
            async for env in log.read(COORD_STREAM, subjects="aqe.coord.task.*.submitted")
            if isinstance(env.decode(), TaskSubmitted)
        ]
    )
    assert submitted == Counter({t: 1 for t in steps})  # one task per step, submitted once
    claims = Counter(c.task_id for c in state.claims)
    for task_id in steps:
        entry = state.tasks[task_id]
        assert entry.status == "completed"
        assert entry.completions == 1  # one result counts, none lost
        assert claims[task_id] == entry.abandons + 1  # one claim per attempt
        if task_id in killed_tasks:
            assert entry.attempt == 2
            assert entry.agent != victim
        else:
            assert entry.attempt == 1
    # Every run appended its own test run to the history (the killed attempt appended none).
    runs = Counter(
        [
            env.decode().run_id  # type: ignore[attr-defined]
            async for env in log.read("AQE_TESTS", subjects="aqe.tests.run.*.finished")
        ]
    )
    assert len(runs) == INSTANCES * TIMES
    assert all(n == 1 for n in runs.values())
