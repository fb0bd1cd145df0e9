"""Files given together are one run whose attempts keep the order the files ran in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aqe.events import TestCaseExecuted
from aqe.ingest import CaseResult, ParsedReport
from aqe.ingest.runs import run_events

EARLY = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def report(path: str, digest: str, outcome: str, started: datetime | None) -> ParsedReport:
    case = CaseResult(test_id="t.x", name="x", outcome=outcome)  # type: ignore[arg-type]
    return ParsedReport(path=path, format="junit", digest=digest, cases=(case,), started_at=started)


def attempts(*reports: ParsedReport) -> list[tuple[int, str]]:
    return [(e.attempt, e.outcome) for e in run_events(reports) if isinstance(e, TestCaseExecuted)]


def test_attempts_follow_the_files_start_times_not_their_digests() -> None:
    # The later file has the smaller digest: ordering by digest put its pass first.
    first = report("tz-1.xml", "ff", "failed", EARLY)
    second = report("tz-2.xml", "00", "passed", EARLY + timedelta(hours=1))
    assert attempts(first, second) == [(1, "failed"), (2, "passed")]
    assert attempts(second, first) == [(1, "failed"), (2, "passed")]


def test_files_without_a_start_time_follow_those_with_one_by_digest() -> None:
    timed = report("t.xml", "ff", "failed", EARLY)
    untimed_b = report("b.xml", "bb", "passed", None)
    untimed_a = report("a.xml", "aa", "error", None)
    assert attempts(untimed_b, timed, untimed_a) == [(1, "failed"), (2, "error"), (3, "passed")]
