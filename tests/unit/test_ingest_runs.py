"""Parsed reports into the events of one run, and appending them to a log."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from aqe.events import TestCaseExecuted, TestRunFinished, TestRunStarted
from aqe.ingest import CaseResult, ParsedReport, truncate
from aqe.ingest.runs import append_run, default_run_id, run_events, summarise
from aqe.log.memory import InMemoryEventLog

WHEN = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def report(path: str, digest: str, *cases: CaseResult, **kw: object) -> ParsedReport:
    return ParsedReport(path=path, format="junit", digest=digest, cases=cases, **kw)  # type: ignore[arg-type]


def case(test_id: str, outcome: str, **kw: object) -> CaseResult:
    return CaseResult(test_id=test_id, name=test_id, outcome=outcome, **kw)  # type: ignore[arg-type]


A = report(
    "a.xml",
    "aa",
    case("t.a", "passed", duration_s=1.0),
    case("t.b", "failed", message="boom"),
    case("t.b", "passed", attempt=2),
    started_at=WHEN,
    duration_s=4.0,
    flavour="surefire",
    suite="unit",
)
B = report("b.xml", "bb", case("t.c", "skipped"), case("t.d", "error"), duration_s=1.5)


def test_a_run_is_start_cases_finish_with_totals() -> None:
    events = run_events([A, B], commit="abc", branch="main", ci_url="https://ci/1")
    start, *cases, finish = events
    assert isinstance(start, TestRunStarted)
    assert isinstance(finish, TestRunFinished)
    assert start.run_id == default_run_id([A, B])
    assert (start.commit, start.branch, start.started_at) == ("abc", "main", WHEN)
    assert start.source == "junit,junit:surefire"
    assert all(isinstance(c, TestCaseExecuted) and c.commit == "abc" for c in cases)
    assert (finish.total, finish.passed, finish.failed, finish.errors, finish.skipped) == (
        4,
        2,
        0,
        1,
        1,
    )
    assert finish.flaky == 1
    assert finish.duration_s == 5.5


def test_the_same_files_give_the_same_events_in_any_order() -> None:
    first = run_events([A, B])
    second = run_events([B, A])
    assert [e.default_id() for e in first] == [e.default_id() for e in second]
    assert run_events([A], run_id="mine")[0].run_id == "mine"  # type: ignore[attr-defined]


def test_attempts_are_numbered_across_reports() -> None:
    again = report("c.xml", "cc", case("t.b", "failed"))
    events = run_events([A, again])
    attempts = [(e.test_id, e.attempt) for e in events if isinstance(e, TestCaseExecuted)]
    assert attempts == [("t.a", 1), ("t.b", 1), ("t.b", 2), ("t.b", 3)]
    assert summarise(events).failed == 1


def test_truncate_marks_what_it_drops() -> None:
    assert truncate("abc", 5) == "abc"
    cut = truncate("x" * 10 + "\x00\x1b", 4)
    assert cut is not None
    assert cut.startswith("xxxx\n[aqe: truncated 8 characters]")


def test_no_reports_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one report"):
        run_events([])


async def test_appending_twice_stores_once() -> None:
    log = InMemoryEventLog()
    events = run_events([A, B])
    first = await append_run(log, events)
    assert (first.appended, first.duplicates, first.events) == (len(events), 0, len(events))
    assert first.run_ids == (default_run_id([A, B]),)
    again = await append_run(log, events)
    assert (again.appended, again.duplicates) == (0, len(events))
    assert await log.last_seq("AQE_TESTS") == len(events)
