"""The perf pipeline on a real nats-server with real HTTP receivers: benchmark files in,
a change detected, a confirm instance started, its verdict turned into an alert that
each sink gets once (firing, then resolved), and the projection rebuilt equal."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from aqe.config import Settings
from aqe.events import WorkflowDecided
from aqe.log.admin import create_missing_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.perf._fingerprint import make_fingerprint
from aqe.perf.confirms import confirm_instance_id
from aqe.perf.formats import parse_bench_file
from aqe.perf.pipeline import (
    append_measurements,
    measured_events,
    read_state,
    watch_once,
)
from aqe.perf.series import PerfProjection
from aqe.perf.sinks import AlertmanagerSink, StdoutSink, WebhookSink
from aqe.projections import MemoryDeadLetters, rebuild
from aqe.projections.store import SnapshotStore
from support.http_receiver import receiving

MACHINE = make_fingerprint(cpu="Test CPU", cores=2, arch="x86_64", python="3.12.1")


def bench_file(tmp_path: Path, i: int, level: float) -> Path:
    """A pytest-benchmark file with every sample (``--benchmark-save-data``)."""
    wobble = [1.0, 1.02, 0.99, 1.01, 0.98]
    data = [level * w * (1 + 0.003 * ((i + k) % 3)) for k, w in enumerate(wobble)]
    doc = {
        "commit_info": {"id": f"{i:040x}"},
        "benchmarks": [
            {
                "name": "test_parse",
                "fullname": "tests/test_b.py::test_parse",
                "stats": {"median": sorted(data)[2], "data": data},
            }
        ],
    }
    path = tmp_path / f"bench-{i}.json"
    path.write_text(json.dumps(doc))
    return path


async def ingest(log: JetStreamEventLog, tmp_path: Path, levels: list[float], start: int) -> None:
    events = []
    for i, level in enumerate(levels, start=start):
        parsed = parse_bench_file(bench_file(tmp_path, i, level))
        events += measured_events(
            parsed, machine=MACHINE, repo="file:///nowhere", command=["python3", "b.py"]
        )
    await append_measurements(log, events)


@pytest.mark.timeout(90)
async def test_confirmed_change_reaches_each_sink_once_then_resolves(
    nats_url: str, tmp_path: Path
) -> None:
    log = await JetStreamEventLog.connect(Settings(nats_url=nats_url))
    try:
        await create_missing_streams(log.connection, log.specs)
        await ingest(log, tmp_path, [1e-3] * 20 + [1.4e-3] * 10, start=0)
        printed = io.StringIO()
        with receiving() as hook, receiving() as am:
            sinks = [StdoutSink(printed), WebhookSink(hook.url), AlertmanagerSink(am.base)]
            first = await watch_once(log, sinks)
            assert len(first.detected) == 1
            change_id = first.detected[0]
            assert first.confirmations == [confirm_instance_id(change_id)]
            assert first.alerts == 0  # suspected only
            assert hook.bodies == []

            # What the confirm workflow's driver records when the re-runs agree.
            await log.append(
                WorkflowDecided(
                    instance_id=confirm_instance_id(change_id),
                    key="verdict",
                    decision="confirmed",
                    reasons=("re-runs differ: x1.390, p=0.0002",),
                    data={
                        "change_id": change_id,
                        "magnitude": "1.39",
                        "p_value": "0.0002",
                        "samples_before": "15",
                        "samples_after": "15",
                    },
                )
            )
            second = await watch_once(log, sinks)
            assert (second.verdicts, second.alerts) == (1, 1)
            assert [(d.sink, d.state, d.ok) for d in second.deliveries] == [
                ("stdout", "firing", True),
                ("webhook", "firing", True),
                ("alertmanager", "firing", True),
            ]
            third = await watch_once(log, sinks)
            assert third.deliveries == []
            assert len(hook.bodies) == 1
            assert hook.bodies[0]["text"].startswith("[FIRING] regression: tests/test_b.py")
            assert hook.bodies[0]["aqe"]["dedup_key"] == change_id
            assert am.paths == ["/api/v2/alerts"]
            (alert,) = am.bodies[0]
            assert alert["labels"]["alertname"] == "PerfRegression"
            assert alert["labels"]["change_id"] == change_id
            assert "endsAt" not in alert

            # The series returns to its old level: the alert resolves, once per sink.
            await ingest(log, tmp_path, [1e-3] * 12, start=30)
            fourth = await watch_once(log, sinks)
            assert fourth.alerts == 1
            assert {(d.sink, d.state) for d in fourth.deliveries} == {
                ("stdout", "resolved"),
                ("webhook", "resolved"),
                ("alertmanager", "resolved"),
            }
            assert (await watch_once(log, sinks)).deliveries == []
            assert len(hook.bodies) == 2
            assert hook.bodies[1]["text"].startswith("[RESOLVED]")
            assert "endsAt" in am.bodies[1][0]
        assert printed.getvalue().count("ALERT ") == 1
        assert printed.getvalue().count("RESOLVED ") == 1

        state = await read_state(log)
        entry = state.changes[change_id]
        assert (entry.verdict, entry.alert) == ("confirmed", "resolved")
        assert sorted(entry.delivered) == sorted(
            f"{s}:{st}"
            for s in ("stdout", "webhook", "alertmanager")
            for st in ("firing", "resolved")
        )

        # The projection runtime's rebuild folds to the same state.
        projection = PerfProjection()
        await rebuild(projection, log, tmp_path / "proj", MemoryDeadLetters())
        snap = SnapshotStore(projection, tmp_path / "proj" / "perf").load()
        assert projection.encode(snap.state) == projection.encode(state)
    finally:
        await log.close()


async def test_a_failing_sink_is_tried_again_next_round(nats_url: str, tmp_path: Path) -> None:
    log = await JetStreamEventLog.connect(Settings(nats_url=nats_url))
    try:
        await create_missing_streams(log.connection, log.specs)
        await ingest(log, tmp_path, [1e-3] * 20 + [2e-3] * 8, start=0)
        first = await watch_once(log)
        (change_id,) = first.detected
        await log.append(
            WorkflowDecided(
                instance_id=confirm_instance_id(change_id),
                key="verdict",
                decision="confirmed",
                data={"change_id": change_id, "magnitude": "2.0", "p_value": "0.001"},
            )
        )
        with receiving(status=503) as down:
            failed = await watch_once(log, [WebhookSink(down.url)])
            assert [(d.ok, d.status) for d in failed.deliveries] == [
                (False, f"{down.url}: HTTP 503")
            ]
        with receiving() as up:
            ok = await watch_once(log, [WebhookSink(up.url)])
            assert [d.ok for d in ok.deliveries] == [True]
            assert len(up.bodies) == 1
    finally:
        await log.close()
