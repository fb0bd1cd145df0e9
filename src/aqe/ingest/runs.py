"""Parsed reports become the events of one run, appended as atomic batches.

A run is ``TestRunStarted``, one ``TestCaseExecuted`` per attempt, ``TestRunFinished``.
Every event id is derived from the event's content (``Event.default_id``) and the
run id defaults to a digest of the report files, so ingesting the same files again
appends nothing: the server reports every event as a duplicate.

``TestRunFinished`` is the run's commit marker: projections show a run only once it
is stored (:mod:`aqe.projections.history`). :func:`append_run` therefore appends it
alone, after every other event of the input is acknowledged, and appends nothing
when the marker is already stored under the same id (the run is complete). A run
too long for one atomic batch that fails halfway stays invisible; ingesting the same
input again stores the missing events under the same ids, then the marker.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import msgspec

from aqe.events import Event, TestCaseExecuted, TestRunFinished, TestRunStarted
from aqe.ingest.model import CaseResult, ParsedReport
from aqe.log.port import MAX_BATCH, EventLog, NewEvent
from aqe.log.retry import DEFAULT_UNAVAILABLE_S, while_unavailable
from aqe.log.subjects import subject_for

__all__ = [
    "IngestResult",
    "RunSummary",
    "append_run",
    "default_run_id",
    "finished",
    "run_events",
    "summarise",
]


class RunSummary(msgspec.Struct, frozen=True, kw_only=True):
    """Totals of a run by each test's final attempt; ``flaky`` passed after a failure."""

    tests: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    flaky: int = 0
    attempts: int = 0


class IngestResult(msgspec.Struct, frozen=True, kw_only=True):
    """What appending a run did."""

    run_ids: tuple[str, ...]
    events: int
    appended: int
    duplicates: int
    chunks: int
    first_seq: int = 0
    last_seq: int = 0
    summary: RunSummary = RunSummary()


def default_run_id(reports: Sequence[ParsedReport]) -> str:
    """``ingest-`` and a digest of the reports' contents (order does not matter)."""
    digest = hashlib.sha256("\n".join(sorted(r.digest for r in reports)).encode()).hexdigest()
    return f"ingest-{digest[:16]}"


def summarise(events: Sequence[Event]) -> RunSummary:
    """Totals over the ``TestCaseExecuted`` events, by each test's last attempt."""
    final: dict[tuple[str, str], str] = {}
    failed_before: set[tuple[str, str]] = set()
    attempts = 0
    for event in events:
        if not isinstance(event, TestCaseExecuted):
            continue
        attempts += 1
        key = (event.run_id, event.test_id)
        previous = final.get(key)
        if previous in ("failed", "error"):
            failed_before.add(key)
        final[key] = event.outcome
    outcomes = list(final.values())
    return RunSummary(
        tests=len(final),
        passed=outcomes.count("passed"),
        failed=outcomes.count("failed"),
        errors=outcomes.count("error"),
        skipped=outcomes.count("skipped"),
        flaky=sum(1 for key in failed_before if final[key] == "passed"),
        attempts=attempts,
    )


def run_events(
    reports: Sequence[ParsedReport],
    *,
    run_id: str | None = None,
    commit: str | None = None,
    branch: str | None = None,
    ci_url: str | None = None,
) -> list[Event]:
    """The events of one run made of ``reports``.

    Reports are taken in the order they started (their own timestamps), then of their
    digests, so the same files give the same events whatever order they are named in,
    and a test seen in several reports (or several times in one) keeps its attempts in
    the order they ran, numbered from 1.

    Raises:
        ValueError: no reports.
    """
    if not reports:
        raise ValueError("a run needs at least one report")
    ordered = sorted(reports, key=_run_order)
    run = run_id or default_run_id(ordered)
    starts = [r.started_at for r in ordered if r.started_at is not None]
    started_at = min(starts) if starts else None
    formats = sorted({r.format if not r.flavour else f"{r.format}:{r.flavour}" for r in ordered})
    suites = sorted({r.suite for r in ordered if r.suite})
    cases: list[Event] = []
    attempt_of: dict[str, int] = {}
    for report in ordered:
        for case in report.cases:
            attempt = attempt_of.get(case.test_id, 0) + 1
            attempt_of[case.test_id] = attempt
            cases.append(_executed(case, run, attempt, commit))
    summary = summarise(cases)
    duration = _duration(ordered)
    start = TestRunStarted(
        run_id=run,
        suite=",".join(suites),
        commit=commit,
        branch=branch,
        ci_url=ci_url,
        started_at=started_at,
        source=",".join(formats),
    )
    finish = finished(
        run,
        summary,
        duration,
        started_at + timedelta(seconds=duration) if started_at else None,
    )
    return [start, *cases, finish]


def finished(
    run_id: str,
    summary: RunSummary,
    duration_s: float,
    finished_at: datetime | None,
    *,
    quarantined: int = 0,
    interrupted: bool = False,
) -> TestRunFinished:
    """The ``TestRunFinished`` (commit marker) of a run with these totals."""
    return TestRunFinished(
        run_id=run_id,
        total=summary.tests,
        passed=summary.passed,
        failed=summary.failed,
        errors=summary.errors,
        skipped=summary.skipped,
        flaky=summary.flaky,
        quarantined=quarantined,
        duration_s=round(duration_s, 6),
        finished_at=finished_at,
        interrupted=interrupted,
    )


def _run_order(report: ParsedReport) -> tuple[bool, float, str, str]:
    """Reports with a start time first, earliest first; then by digest (stable)."""
    started = report.started_at
    return (started is None, started.timestamp() if started else 0.0, report.digest, report.path)


def _executed(case: CaseResult, run_id: str, attempt: int, commit: str | None) -> TestCaseExecuted:
    return TestCaseExecuted(
        test_id=case.test_id,
        run_id=run_id,
        outcome=case.outcome,
        duration_s=case.duration_s,
        attempt=attempt,
        message=case.message,
        file=case.file,
        commit=commit,
        suite=case.suite,
        name=case.name,
        classname=case.classname,
        output=case.output,
        started_at=case.started_at,
        nodeid=case.nodeid,
    )


def _duration(reports: Sequence[ParsedReport]) -> float:
    total = 0.0
    for report in reports:
        if report.duration_s is not None:
            total += report.duration_s
        else:
            total += sum(c.duration_s for c in report.cases)
    return total


async def append_run(
    log: EventLog,
    events: Sequence[Event],
    *,
    on_progress: Callable[[int], None] | None = None,
    unavailable_s: float = DEFAULT_UNAVAILABLE_S,
) -> IngestResult:
    """Append ``events`` in order as atomic batches, each ``TestRunFinished`` last.

    The events other than ``TestRunFinished`` go first, in atomic chunks of at most
    ``MAX_BATCH`` (a failure leaves earlier chunks stored, but no marker, so the run
    stays invisible; ingesting the same input again completes it without duplicating
    anything). The markers follow in their own append once all of that is stored.
    Each step is retried while the log is unavailable (a stream leader election after a
    node died: 503 no responders, no commit reply) for ``unavailable_s`` seconds with
    backoff; the event ids are deterministic, so a resent chunk that was stored counts
    as duplicates, never twice.
    When every marker is already stored under its id, nothing is appended and every
    event is reported as a duplicate. ``on_progress`` receives the number of events
    done after each step.
    """
    markers = [e for e in events if isinstance(e, TestRunFinished)]
    body = [e for e in events if not isinstance(e, TestRunFinished)]
    appended = duplicates = chunks = first = last = done = 0
    stored = False
    if markers:
        stored = await while_unavailable(
            functools.partial(_all_stored, log, markers), within_s=unavailable_s
        )
    if stored:
        duplicates = done = len(events)
        if on_progress is not None:
            on_progress(done)
        steps: list[Sequence[Event]] = []
    else:
        # Ten atomic chunks per call keeps append_batch's pipelining while reporting
        # progress; the markers are a step of their own, after the rest is acknowledged.
        step = MAX_BATCH * 10
        steps = [body[i : i + step] for i in range(0, len(body), step)]
        if markers:
            steps.append(markers)
    for chunk in steps:
        items = [NewEvent(event=e) for e in chunk]
        result = await while_unavailable(
            functools.partial(log.append_batch, items), within_s=unavailable_s
        )
        chunks += result.chunks
        duplicates += result.duplicates
        appended += result.count - result.duplicates
        if result.first_seq:
            first = min(first or result.first_seq, result.first_seq)
            last = max(last, result.last_seq)
        done += len(chunk)
        if on_progress is not None:
            on_progress(done)
    run_ids = tuple(
        dict.fromkeys(
            e.run_id
            for e in events
            if isinstance(e, TestRunStarted | TestCaseExecuted | TestRunFinished)
        )
    )
    return IngestResult(
        run_ids=run_ids,
        events=len(events),
        appended=appended,
        duplicates=duplicates,
        chunks=chunks,
        first_seq=first,
        last_seq=last,
        summary=summarise(events),
    )


async def _all_stored(log: EventLog, markers: Sequence[TestRunFinished]) -> bool:
    """Whether each marker is the last message on its subject, with the same id."""
    for marker in markers:
        stored = await log.last(subject_for(marker))
        if stored is None or stored.event_id != marker.default_id():
            return False
    return True
