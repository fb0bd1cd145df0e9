"""The testgen workflow on a real nats-server with a runner of the ``testgen`` capability.

A tiny project whose suite covers one branch of one function: the workflow finds the
gap itself (no coverage in the log, so from a baseline measurement in a sandbox), fans
generation out as a runner task (Hypothesis ghostwriter), keeps what passes N times and
adds coverage, records the decision, and writes the Markdown and HTML report.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from aqe.coordination.nats_bus import NatsBus
from aqe.events import WorkflowDecided
from aqe.log import load_stream_specs
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.runners import RunnerAgent, RunnerConfig
from aqe.testgen.store import read_generation
from aqe.testgen.task import TESTGEN, TestgenHandler
from aqe.workflows._store import read_instance, start_instance
from aqe.workflows.driver import WorkflowDriver
from aqe.workflows.testgen import TestgenWorkflow
from support.waiting import until

pytestmark = [pytest.mark.nats, pytest.mark.timeout(240)]

FAST = RunnerConfig(ack_wait_s=10.0, fetch_timeout_s=0.5, heartbeat_s=0.5)

SHAPES = """
def kind(n: int) -> str:
    if n < 0:
        return "negative"
    if n == 0:
        return "zero"
    return "positive"


def scale(values: list[int], factor: int) -> list[int]:
    if not values:
        return []
    return [v * factor for v in values]
"""

EXISTING = """
import shapes


def test_negative():
    assert shapes.kind(-5) == "negative"
"""


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
    root = tmp_path / "proj"
    (root / "tests").mkdir(parents=True)
    (root / "shapes.py").write_text(SHAPES)
    (root / "tests" / "test_shapes.py").write_text(EXISTING)
    return root


async def test_gap_generate_measure_report(
    log: JetStreamEventLog, project: Path, tmp_path: Path
) -> None:
    report_dir = tmp_path / "report"
    runner = RunnerAgent(
        log,
        NatsBus(log.connection),
        [TESTGEN],
        config=FAST,
        handlers={TESTGEN: TestgenHandler(log, tmp_path / "data")},
    )
    params = {
        "source": str(project),
        "package": "shapes",
        "tests": "tests",
        "omit": "tests/*",
        "generators": "ghostwriter",
        "runs": "2",
        "max_candidates": "4",
        "backend": "process",
        "report_dir": str(report_dir),
        "python": sys.executable,
    }
    async with runner, WorkflowDriver(log, {"testgen": TestgenWorkflow()}, tick_s=0.1):
        instance_id, _ = await start_instance(log, "testgen", params)

        async def finished() -> bool:
            instance, _ = await read_instance(log, instance_id)
            return instance is not None and instance.finished

        await until(finished, "the testgen workflow to finish", timeout_s=200)
    instance, facts = await read_instance(log, instance_id)
    assert instance is not None
    assert instance.status == "succeeded", (instance.reasons, instance.result)
    assert sorted(instance.steps) == ["gaps", "generate-shapes", "report"]
    decided = next(f.event for f in facts if isinstance(f.event, WorkflowDecided))
    assert decided.key == "coverage"
    assert decided.reasons == ("targets from baseline: shapes",)
    kept = int(instance.result["kept"])
    assert kept >= 1, instance.result
    assert instance.result["shapes"].startswith("lines ")

    state = await read_generation(log, instance_id=instance_id)
    assert len(state.batches) == 1
    batch = next(iter(state.batches.values()))
    before, after = batch.before["shapes.py"], batch.after["shapes.py"]
    assert after.lines > before.lines
    assert after.taken > before.taken
    assert len(state.finished_kept()) == kept
    assert all(k.generator == "ghostwriter" and k.runs == 2 for k in state.finished_kept())
    assert sum(batch.generated.values()) == kept + len(state.rejected)

    md = (report_dir / f"testgen-{instance_id}.md").read_text()
    page = (report_dir / f"testgen-{instance_id}.html").read_text()
    assert (
        f"| shapes | {before.statements} | {before.line_pct:.1f}% | {after.line_pct:.1f}% |" in md
    )
    for k in state.finished_kept():
        assert k.name in md
        assert k.name in page
