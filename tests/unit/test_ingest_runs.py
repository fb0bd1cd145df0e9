"""Parsed reports into the events of one run, and appending them to a log."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from aqe.errors import LogUnavailableError
from aqe.events import Event, TestCaseExecuted, TestRunFinished, TestRunStarted
from aqe.ingest import CaseResult, ParsedReport, truncate
from aqe.ingest.runs import append_run, default_run_id, run_events, summarise
from aqe.log import MAX_BATCH, BatchResult, NewEvent
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


class FailingLog(InMemoryEventLog):
    """Fails the ``fail_at``-th ``append_batch`` call (1-based) as the port allows.

    Of that call's atomic chunks the second-to-last fails; the chunks before it are
    stored and so is the last one, sent already (the port's contract lets a pipelining
    adapter store one chunk past the failing one).
    """

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.calls = 0

    async def append_batch(self, items: Sequence[NewEvent]) -> BatchResult:
        self.calls += 1
        if self.calls == self.fail_at:
            chunks = [items[i : i + MAX_BATCH] for i in range(0, len(items), MAX_BATCH)]
            for chunk in [*chunks[:-2], *chunks[-1:]] if len(chunks) > 1 else []:
                await super().append_batch(chunk)
            raise LogUnavailableError("no commit reply")
        return await super().append_batch(items)


def big_run(n: int) -> list[Event]:
    cases = [case(f"t.{i:05d}", "passed") for i in range(n)]
    return run_events([report("big.xml", "big", *cases)])


async def test_the_finish_marker_is_appended_only_after_everything_else() -> None:
    events = big_run(25_000)  # three append_batch calls of cases, then the marker
    log = FailingLog(fail_at=3)
    with pytest.raises(LogUnavailableError):
        await append_run(log, events, unavailable_s=0)  # an outage that outlasts retries
    stored = [env.decode() async for env in log.read("AQE_TESTS")]
    # Two calls of 10,000 events, then 4,000 of the third call's 5,001 (its fourth
    # chunk of 1,000 failed, its fifth of one event was stored): no marker among them.
    assert len(stored) == 24_001
    assert not any(isinstance(e, TestRunFinished) for e in stored)
    # Ingesting the same input again completes the run under the same ids.
    log.fail_at = 0
    again = await append_run(log, events)
    assert (again.appended, again.duplicates) == (len(events) - 24_001, 24_001)
    stored = [env.decode() async for env in log.read("AQE_TESTS")]
    assert sorted(e.default_id() for e in stored) == sorted(e.default_id() for e in events)
    assert isinstance(stored[-1], TestRunFinished)


async def test_an_append_cut_by_a_leader_election_is_retried_without_duplicates() -> None:
    events = big_run(25_000)
    log = FailingLog(fail_at=3)  # the third call fails once, its retry goes through
    done = await append_run(log, events)
    assert log.calls == 5  # three steps of cases, one retry, the marker
    # The retry resent the failed call's 5,001 events: the 4,001 stored are duplicates.
    assert (done.appended, done.duplicates) == (len(events) - 4_001, 4_001)
    stored = [env.decode() async for env in log.read("AQE_TESTS")]
    assert sorted(e.default_id() for e in stored) == sorted(e.default_id() for e in events)
    assert isinstance(stored[-1], TestRunFinished)


async def test_a_complete_run_is_not_appended_again() -> None:
    log = FailingLog(fail_at=0)
    events = big_run(3)
    await append_run(log, events)
    log.fail_at = log.calls + 1  # another append would raise
    again = await append_run(log, events)
    assert (again.appended, again.duplicates, again.chunks) == (0, len(events), 0)
