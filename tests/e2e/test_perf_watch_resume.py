"""`aqe perf watch` resumes from its projections' checkpoints, not from sequence 1.

Before, every start (and every round, several times) folded all of ``AQE_PERF`` again,
and read all of ``AQE_WORKFLOWS`` twice a round (the confirm instances, the verdicts).
The tests watch the JetStream API from outside, on the same server: every consumer a
second `aqe perf watch --once` creates on ``AQE_PERF`` (``AQE_WORKFLOWS``) must start
past what the first one read, and the second round must still see the whole series (a
step that straddles the two starts is found) and the verdict that came in between.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import nats
import pytest

from aqe.config import Settings
from aqe.events import WorkflowDecided, WorkflowStarted
from aqe.events.perf import BenchmarkMeasured, MachineFingerprint
from aqe.log.admin import create_missing_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.perf.confirms import confirm_instance_id
from aqe.perf.pipeline import append_measurements, new_changes, read_state

pytestmark = pytest.mark.nats

MACHINE = MachineFingerprint(machine_class="x86_64-test-2c-py3.12", cores=2)
FLAT, STEP = 30, 8


def _points(first: int, count: int, level: float) -> list[BenchmarkMeasured]:
    out = []
    for i in range(first, first + count):
        wobble = 1 + 0.01 * ((i * 7) % 5 - 2)
        out.append(
            BenchmarkMeasured(
                series_id="s1",
                benchmark="bench_x",
                metric="time",
                unit="s",
                samples=(level * wobble, level * wobble * 1.01, level * wobble * 0.99),
                machine=MACHINE,
                commit=f"c{i:03d}",
                run_id=f"r{i}",
            )
        )
    return out


async def _append(url: str, points: list[BenchmarkMeasured]) -> int:
    log = await JetStreamEventLog.connect(Settings(nats_url=url))
    try:
        await create_missing_streams(log.connection, log.specs)
        await append_measurements(log, points)
        return await log.last_seq("AQE_PERF")
    finally:
        await log.close()


async def _expected_changes(url: str) -> list[str]:
    log = await JetStreamEventLog.connect(Settings(nats_url=url))
    try:
        return [c.change_id for c in new_changes(await read_state(log))]
    finally:
        await log.close()


async def _watch_once(
    url: str, env: dict[str, str], stream: str = "AQE_PERF"
) -> tuple[dict[str, Any], list[int]]:
    """Run `aqe perf watch --once --json`; its report, and where each consumer it
    created on ``stream`` starts (the create requests, seen on the server)."""
    nc = await nats.connect(url)
    starts: list[int] = []

    async def seen(msg: Any) -> None:
        config = json.loads(msg.data).get("config", {})
        if config.get("deliver_policy") == "by_start_sequence":
            starts.append(int(config.get("opt_start_seq", 0)))
        else:  # all, last, new...: not a resume
            starts.append(0)

    try:
        for subject in (f"$JS.API.CONSUMER.CREATE.{stream}", f"$JS.API.CONSUMER.CREATE.{stream}.>"):
            await nc.subscribe(subject, cb=seen)
        await nc.flush()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "aqe.cli", "perf", "watch", "--once", "--no-stdout", "--json"),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()
        await nc.flush()
    finally:
        await nc.close()
    (report,) = json.loads(out)
    return report, starts


def test_perf_watch_resumes_from_its_checkpoint(nats_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AQE_")}
    env.update(AQE_NATS_URL=nats_url, AQE_DATA_DIR=str(tmp_path / "data"))

    folded = asyncio.run(_append(nats_url, _points(0, FLAT, 1.0)))
    report, starts = asyncio.run(_watch_once(nats_url, env))
    assert report["series"] == 1
    assert report["detected"] == []
    assert starts  # the first start reads the stream

    last = asyncio.run(_append(nats_url, _points(FLAT, STEP, 2.0)))
    assert last == folded + STEP
    expected = asyncio.run(_expected_changes(nats_url))  # from a full read of AQE_PERF
    assert expected
    report, starts = asyncio.run(_watch_once(nats_url, env))
    assert starts
    assert min(starts) > folded, f"a consumer started at {min(starts)}, not past {folded}"
    # The resumed state holds the whole series: the step after point FLAT is found.
    assert sorted(report["detected"]) == sorted(expected)


async def _append_workflow_events(url: str, events: list[Any]) -> int:
    log = await JetStreamEventLog.connect(Settings(nats_url=url))
    try:
        await create_missing_streams(log.connection, log.specs)
        for event in events:
            await log.append(event)
        return await log.last_seq("AQE_WORKFLOWS")
    finally:
        await log.close()


def test_perf_watch_reads_only_new_workflow_events_for_verdicts(
    nats_url: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AQE_")}
    env.update(AQE_NATS_URL=nats_url, AQE_DATA_DIR=str(tmp_path / "data"))

    asyncio.run(_append(nats_url, _points(0, FLAT, 1.0) + _points(FLAT, STEP, 2.0)))
    # Other workflows' history, which a round used to read twice over.
    others = [
        WorkflowStarted(instance_id=f"flaky-{i}", workflow="flaky", params={"test_id": f"t{i}"})
        for i in range(40)
    ]
    read = asyncio.run(_append_workflow_events(nats_url, others))
    report, starts = asyncio.run(_watch_once(nats_url, env, "AQE_WORKFLOWS"))
    (change_id,) = report["detected"]
    assert report["verdicts"] == 0
    assert starts  # the first start reads the stream

    # A fleet's confirm instance decides; the next round carries the verdict over.
    decided = WorkflowDecided(
        instance_id=confirm_instance_id(change_id),
        key="verdict",
        decision="confirmed",
        reasons=("re-runs differ",),
        data={"change_id": change_id, "magnitude": "2.0", "p_value": "0.0001"},
    )
    last = asyncio.run(_append_workflow_events(nats_url, [decided]))
    assert last == read + 1
    report, starts = asyncio.run(_watch_once(nats_url, env, "AQE_WORKFLOWS"))
    assert starts
    assert min(starts) > read, f"a consumer started at {min(starts)}, not past {read}"
    assert report["verdicts"] == 1
    assert report["alerts"] == 1
