"""Coverage through a real nats-server: a run cut short is not half-applied, a completed
one appears at once, and the projection rebuilt from the log equals the live one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nats
import pytest

from aqe.coverage.measured import MeasuredFile, coverage_events
from aqe.coverage.projection import CoverageProjection, CoverageState
from aqe.coverage.queries import file_detail, file_summaries
from aqe.events import TestRunFinished, TestRunStarted
from aqe.log import NewEvent, load_stream_specs
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.projections import MemoryDeadLetters, ProjectionRunner, SnapshotStore, verify

pytestmark = pytest.mark.nats


def measured(run: int) -> list[MeasuredFile]:
    return [
        MeasuredFile(
            path=f"src/pkg/mod_{f}.py",
            statements=set(range(1, 120)),
            executed=set(range(1, 100 + run)),
            branches={10: (2, 1), 50: (2, 2)},
            tests={f"tests.test_{f}.test_{t}": set(range(t + 1, t + 30)) for t in range(80)},
        )
        for f in range(12)
    ]


async def fold(log: JetStreamEventLog, directory: Path) -> CoverageState:
    projection = CoverageProjection()
    store = SnapshotStore(projection, directory)
    await ProjectionRunner(projection, log, store, MemoryDeadLetters()).run()
    return store.load().state


async def test_killed_runs_are_not_half_applied_and_rebuild_equals_live(
    nats_url: str, tmp_path: Path
) -> None:
    nc = await nats.connect(nats_url)
    try:
        specs = load_stream_specs()
        await apply_streams(nc, specs)
        log = JetStreamEventLog(nc, specs)
        live = tmp_path / "projections" / "coverage"

        # Run A: a collector killed while appending its chunks (the last one never lands).
        chunks_a = coverage_events(measured(0), run_id="run-a", chunk_bytes=20_000)
        assert len(chunks_a) >= 4
        await log.append(TestRunStarted(run_id="run-a"))
        await log.append_many([NewEvent(event=e) for e in chunks_a[:-1]])
        await log.append(TestRunFinished(run_id="run-a", total=80, passed=80, failed=0))
        state = await fold(log, live)
        assert state.files == {}
        assert state.tests == {}
        assert state.pending["run-a"].chunks == len(chunks_a)

        # Run B: its session was killed; the marker came later from its spool.
        chunks_b = coverage_events(measured(1), run_id="run-b", chunk_bytes=20_000)
        await log.append(TestRunStarted(run_id="run-b"))
        await log.append_many([NewEvent(event=e) for e in chunks_b])
        await log.append(
            TestRunFinished(run_id="run-b", total=3, passed=3, failed=0, interrupted=True)
        )
        state = await fold(log, live)
        assert state.files == {}
        assert state.runs["run-b"].status == "discarded"

        # Run A completed by appending its chunks again (the same ids: only the missing
        # one is stored): the whole run appears at once.
        results = await log.append_many([NewEvent(event=e) for e in chunks_a])
        assert sum(not r.duplicate for r in results) == 1
        state = await fold(log, live)
        assert state.pending == {}
        assert len(state.files) == 12
        assert len(state.tests) == 12 * 80
        assert {s.covered for s in file_summaries(state)} == {99}
        assert state.runs["run-a"].covered == 12 * 99

        report = await verify(CoverageProjection(), log, tmp_path / "projections")
        assert report.equal
    finally:
        await nc.close()


SAMPLE = """\
def half(x):
    if x % 2:
        return None
    return x // 2


def test_even():
    assert half(4) == 2


def test_odd():
    assert half(3) is None
"""


@pytest.fixture
def runner_artefacts(tmp_path: Path) -> dict[str, bytes]:
    """What a runner task's command leaves in its sandbox: pytest under coverage.py with
    contexts and JUnit XML, then `coverage json --show-contexts`."""
    from aqe.coverage.collect import pytest_command

    project = tmp_path / "p"
    project.mkdir()
    (project / "test_half.py").write_text(SAMPLE)
    argv = pytest_command(
        ["-q", "-p", "aqe.pytest_plugin", "-p", "no:cacheprovider", "--junitxml=report.xml"],
        source=["."],
        data_file=project / ".coverage",
    )
    # Only aqe's plugin: the environment's other plugins cost seconds of start-up.
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    subprocess.run(argv, cwd=project, env=env, check=True, capture_output=True, timeout=120)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "coverage",
            "json",
            "--show-contexts",
            "-o",
            "coverage.json",
            f"--data-file={project / '.coverage'}",
        ],
        cwd=project,
        check=True,
        capture_output=True,
        timeout=60,
    )
    return {
        "report.xml": (project / "report.xml").read_bytes(),
        "coverage.json": (project / "coverage.json").read_bytes(),
    }


async def test_a_runners_coverage_json_artefact_becomes_the_runs_coverage(
    nats_url: str, tmp_path: Path, runner_artefacts: dict[str, bytes]
) -> None:
    from aqe.runners._results import ingest_artefacts

    nc = await nats.connect(nats_url)
    try:
        specs = load_stream_specs()
        await apply_streams(nc, specs)
        log = JetStreamEventLog(nc, specs)
        tested = await ingest_artefacts(log, runner_artefacts, run_id="task-a1")
        assert tested is not None
        assert tested.summary.passed == 2
        state = await fold(log, tmp_path / "projections" / "coverage")
    finally:
        await nc.close()
    assert state.runs["task-a1"].per_test
    detail = file_detail(state, "test_half.py")
    assert detail is not None
    assert detail.lines[3] == ["test_half.test_odd"]
    assert detail.lines[4] == ["test_half.test_even"]
    assert detail.partial == []
