"""Spool files: JSON lines of events, read whole or not at all."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aqe.config import Settings
from aqe.errors import ReportError
from aqe.events import TestCaseExecuted, TestRunFinished, TestRunStarted
from aqe.ingest.spool import SpoolWriter, default_spool_dir, finish_interrupted, read_spool
from aqe.pytest_plugin import ci_defaults

EVENTS = [
    TestRunStarted(
        run_id="r1", suite="s", started_at=datetime(2025, 1, 2, tzinfo=UTC), source="pytest-plugin"
    ),
    TestCaseExecuted(test_id="t.a", run_id="r1", outcome="passed", duration_s=0.5),
    TestCaseExecuted(test_id="t.b[1]", run_id="r1", outcome="failed", message="assert 1 == 2"),
    TestRunFinished(run_id="r1", total=2, passed=1, failed=1),
]


def _write(path: Path) -> None:
    with SpoolWriter(path) as writer:
        for event in EVENTS:
            writer.write(event)
    assert writer.closed
    assert writer.count == len(EVENTS)


def test_round_trip_creates_parent_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "run.jsonl"
    _write(path)
    assert read_spool(path) == EVENTS
    assert path.read_bytes().count(b"\n") == len(EVENTS)


def test_each_line_is_the_wire_form(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    _write(path)
    lines = path.read_bytes().splitlines()
    assert lines == [e.to_json() for e in EVENTS]
    assert lines[0].startswith(b'{"event":"tests.run.started.v1"')


def test_writer_appends_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    _write(path)
    _write(path)
    assert read_spool(path) == EVENTS + EVENTS


def test_write_after_close_is_refused(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path / "run.jsonl")
    writer.close()
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.write(EVENTS[0])


def test_blank_lines_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    path.write_bytes(b"\n" + EVENTS[0].to_json() + b"\n  \n\r\n" + EVENTS[1].to_json())
    assert read_spool(path) == EVENTS[:2]


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (b'{"event": "tests.run.started.v1", "run_id": "r1", "sui', "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"event": "nope.nope.nope.v1", "x": 1}', "unknown event type"),
        (b'{"event": "tests.run.finished.v1", "run_id": "r1"}', "total"),
        (
            b'{"event": "tests.case.executed.v1", "test_id": "t", "run_id": "r", "outcome": "meh"}',
            "outcome",
        ),
    ],
)
def test_a_bad_line_is_reported_with_its_number(tmp_path: Path, bad: bytes, reason: str) -> None:
    path = tmp_path / "run.jsonl"
    path.write_bytes(EVENTS[0].to_json() + b"\n\n" + bad)
    with pytest.raises(ReportError, match=reason) as info:
        read_spool(path)
    assert info.value.line == 3
    assert info.value.path == str(path)
    assert str(info.value).startswith(f"{path}:3: ")


def test_a_crash_mid_write_is_reported_not_half_read(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    _write(path)
    data = path.read_bytes()
    path.write_bytes(data + EVENTS[1].to_json()[:20])
    with pytest.raises(ReportError) as info:
        read_spool(path)
    assert info.value.line == len(EVENTS) + 1


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="cannot read spool file"):
        read_spool(tmp_path / "nope.jsonl")


def test_default_spool_dir_is_under_the_data_dir(tmp_path: Path) -> None:
    assert default_spool_dir(Settings(data_dir=tmp_path)) == tmp_path / "spool"


def test_ci_defaults() -> None:
    assert ci_defaults({}) == (None, None, None)
    github = {
        "GITHUB_SHA": "abc",
        "GITHUB_REF_NAME": "main",
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_REPOSITORY": "o/r",
        "GITHUB_RUN_ID": "7",
    }
    assert ci_defaults(github) == ("abc", "main", "https://github.com/o/r/actions/runs/7")
    gitlab = {"CI_COMMIT_SHA": " def ", "CI_COMMIT_REF_NAME": "dev", "CI_JOB_URL": "https://g/j/1"}
    assert ci_defaults(gitlab) == ("def", "dev", "https://g/j/1")


def test_finish_interrupted_closes_only_runs_without_a_marker() -> None:
    start = datetime(2025, 1, 2, 10, 0, tzinfo=UTC)
    killed = [
        TestRunStarted(run_id="k", started_at=start, source="pytest-plugin"),
        TestCaseExecuted(
            test_id="t.a", run_id="k", outcome="failed", duration_s=1.0, started_at=start
        ),
        TestCaseExecuted(
            test_id="t.a",
            run_id="k",
            outcome="passed",
            duration_s=2.0,
            attempt=2,
            started_at=start + timedelta(seconds=3),
        ),
        TestCaseExecuted(
            test_id="t.b", run_id="k", outcome="error", duration_s=0.5, quarantined=True
        ),
    ]
    [marker] = finish_interrupted([*EVENTS, *killed])  # r1 has its marker: left alone
    assert marker == TestRunFinished(
        run_id="k",
        total=2,
        passed=1,
        failed=0,
        errors=1,
        flaky=1,
        quarantined=1,
        duration_s=5.0,  # from the start to the end of the last timed execution
        finished_at=start + timedelta(seconds=5),
        interrupted=True,
    )
    # Computed from the file's contents only: the same spool gives the same id.
    assert finish_interrupted(killed)[0].default_id() == marker.default_id()


def test_finish_interrupted_without_times_sums_the_durations() -> None:
    events = [
        TestRunStarted(run_id="k"),
        TestCaseExecuted(test_id="t.a", run_id="k", outcome="passed", duration_s=0.25),
        TestCaseExecuted(test_id="t.b", run_id="k", outcome="skipped", duration_s=0.5),
    ]
    [marker] = finish_interrupted(events)
    assert (marker.total, marker.passed, marker.skipped, marker.duration_s) == (2, 1, 1, 0.75)
    assert marker.finished_at is None
    assert marker.interrupted
    assert finish_interrupted([TestRunStarted(run_id="empty")])[0].total == 0
