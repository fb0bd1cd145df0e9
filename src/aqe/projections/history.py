"""The test-history projection: what every test and every run has done.

Folds ``AQE_TESTS`` into one :class:`TestHistory` per test identity and one
:class:`RunHistory` per run. The state (``state.json``) is the truth; on every
snapshot it is also materialised as two LanceDB tables, ``tests`` and ``runs``
(:mod:`aqe.projections.tables`), for the CLI and for other readers (learning).

Verdicts. A test's *verdict* in a run is the outcome of its last attempt in that run;
``recent`` keeps one character per run, newest first:

====  ===========================================================
``p`` passed on the first attempt
``r`` passed after a failed or erroring attempt in the same run
``f`` failed
``e`` error
``s`` skipped
====  ===========================================================

Attempts of one test in one run are expected to arrive one after the other (they do
from every ingest path): an execution whose ``run_id`` equals the test's newest run
replaces that run's verdict instead of adding a run.

Classification (:func:`classify`, thresholds in :class:`HistoryPolicy`), first match:

1. **broken**: the newest ``broken_streak`` or more non-skipped verdicts all failed
   or errored (``failing_since`` names the run the streak began in);
2. **flaky**: within the newest ``window`` verdicts a test passed on retry, or it
   failed and passed on the same commit (among the last ``COMMITS_TRACKED``
   commits), or it has at least ``flip_min_runs`` non-skipped verdicts there and a
   flip rate of ``flip_threshold`` or more;
3. **new**: fewer than ``min_runs`` non-skipped verdicts;
4. **healthy**: anything else.

The flip rate is the share of consecutive non-skipped verdicts in the window whose
pass/fail differs (``r`` counts as a pass).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from aqe.events import (
    Envelope,
    Event,
    TestCaseExecuted,
    TestCaseQuarantined,
    TestCaseUnquarantined,
    TestRunFinished,
    TestRunStarted,
)

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "COMMITS_TRACKED",
    "DEFAULT_POLICY",
    "DEPTH",
    "DURATIONS",
    "HistoryPolicy",
    "HistoryProjection",
    "HistoryState",
    "RunHistory",
    "Status",
    "TestHistory",
    "classify",
    "failing_streak",
    "flip_rate",
    "load_rows",
    "rows_of_runs",
    "rows_of_tests",
    "same_commit_flips",
]

DEPTH = 100
"""Verdicts kept per test in ``recent`` (newest first)."""
DURATIONS = 100
"""Durations kept per test for the percentiles."""
COMMITS_TRACKED = 32
"""Commits per test remembered for the "failed and passed on one commit" rule."""

Status = Literal["broken", "flaky", "new", "healthy"]

_PASS = frozenset("pr")
_FAIL = frozenset("fe")
_VERDICT = {"passed": "p", "failed": "f", "error": "e", "skipped": "s"}
_PASSED_BIT = 1
_FAILED_BIT = 2

_ENCODER = msgspec.json.Encoder(order="sorted")


class HistoryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Thresholds of :func:`classify`; the defaults are what the tables are built with."""

    window: int = 50
    min_runs: int = 3
    flip_min_runs: int = 8
    flip_threshold: float = 0.2
    broken_streak: int = 3


DEFAULT_POLICY = HistoryPolicy()
"""The thresholds the materialised tables are classified with."""


class TestHistory(msgspec.Struct, kw_only=True):
    """Everything the projection knows about one test."""

    __test__ = False

    recent: str = ""
    runs: int = 0
    passes: int = 0
    failures: int = 0
    errors: int = 0
    skips: int = 0
    retried_passes: int = 0
    attempts: int = 0
    durations: list[float] = msgspec.field(default_factory=list)
    first_run: str = ""
    first_seen_ns: int = 0
    last_run: str = ""
    last_seen_ns: int = 0
    last_commit: str | None = None
    last_failure_run: str | None = None
    last_failure_commit: str | None = None
    last_failure_message: str | None = None
    failing_since: str | None = None
    commits: list[tuple[str, int]] = msgspec.field(default_factory=list)
    """``(commit, bits)`` oldest first; bit 1 passed, bit 2 failed on that commit."""
    flaky_commits: int = 0
    name: str | None = None
    suite: str | None = None
    file: str | None = None
    quarantined: bool = False
    quarantine_reason: str | None = None
    quarantined_by: str | None = None


class RunHistory(msgspec.Struct, kw_only=True):
    """One run: what its start and finish events said, and what was executed."""

    run_id: str
    first_seq: int = 0
    suite: str = ""
    source: str | None = None
    commit: str | None = None
    branch: str | None = None
    ci_url: str | None = None
    started_ns: int = 0
    finished: bool = False
    total: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    flaky: int = 0
    duration_s: float = 0.0
    executions: int = 0


class HistoryState(msgspec.Struct, kw_only=True):
    """Tests by identity and runs by id."""

    tests: dict[str, TestHistory] = msgspec.field(default_factory=dict)
    runs: dict[str, RunHistory] = msgspec.field(default_factory=dict)


class HistoryProjection:
    """Folds ``AQE_TESTS`` into a :class:`HistoryState`."""

    name: str = "history"
    version: int = 1
    streams: tuple[str, ...] = ("AQE_TESTS",)

    def __init__(self) -> None:
        self._decoder = msgspec.json.Decoder(HistoryState)

    def initial(self) -> HistoryState:
        """No tests, no runs."""
        return HistoryState()

    def apply(self, state: HistoryState, envelope: Envelope, event: Event) -> HistoryState:
        """Fold one event of the tests domain (others are ignored)."""
        if isinstance(event, TestCaseExecuted):
            _executed(state, envelope, event)
        elif isinstance(event, TestRunStarted):
            run = _run(state, event.run_id, envelope)
            run.suite = event.suite
            run.source = event.source
            run.commit = event.commit
            run.branch = event.branch
            run.ci_url = event.ci_url
            run.started_ns = (
                int(event.started_at.timestamp() * 1e9)
                if event.started_at
                else envelope.recorded_at_ns
            )
        elif isinstance(event, TestRunFinished):
            run = _run(state, event.run_id, envelope)
            run.finished = True
            run.total = event.total
            run.passed = event.passed
            run.failed = event.failed
            run.errors = event.errors
            run.skipped = event.skipped
            run.flaky = event.flaky
            run.duration_s = event.duration_s
        elif isinstance(event, TestCaseQuarantined):
            test = _test(state, event.test_id)
            test.quarantined = True
            test.quarantine_reason = event.reason
            test.quarantined_by = event.by
        elif isinstance(event, TestCaseUnquarantined):
            test = _test(state, event.test_id)
            test.quarantined = False
            test.quarantine_reason = None
            test.quarantined_by = None
        return state

    def encode(self, state: HistoryState) -> bytes:
        """Canonical JSON (sorted keys)."""
        return _ENCODER.encode(state)

    def decode(self, data: bytes) -> HistoryState:
        """Parse what :meth:`encode` wrote."""
        return self._decoder.decode(data)

    def materialize(
        self, state: HistoryState, directory: Path, checkpoints: dict[str, int]
    ) -> None:
        """Write the ``tests`` and ``runs`` LanceDB tables beside the snapshot."""
        from aqe.projections.tables import write_tables

        write_tables(
            directory,
            {
                "tests": (rows_of_tests(state), _tests_schema()),
                "runs": (rows_of_runs(state), _runs_schema()),
            },
            checkpoints,
        )


def _tests_schema() -> pa.Schema:
    import pyarrow as pa

    text, count, real = pa.string(), pa.int64(), pa.float64()
    return pa.schema(
        [
            ("test_id", text),
            ("status", text),
            ("reason", text),
            ("quarantined", pa.bool_()),
            ("quarantine_reason", text),
            ("runs", count),
            ("passes", count),
            ("failures", count),
            ("errors", count),
            ("skips", count),
            ("retried_passes", count),
            ("attempts", count),
            ("pass_rate", real),
            ("flip_rate", real),
            ("recent", text),
            ("duration_p50_s", real),
            ("duration_p95_s", real),
            ("first_run", text),
            ("first_seen_ns", count),
            ("last_run", text),
            ("last_seen_ns", count),
            ("last_commit", text),
            ("failing_since", text),
            ("last_failure_run", text),
            ("last_failure_commit", text),
            ("last_failure_message", text),
            ("flaky_commits", count),
            ("name", text),
            ("suite", text),
            ("file", text),
        ]
    )


def _runs_schema() -> pa.Schema:
    import pyarrow as pa

    text, count = pa.string(), pa.int64()
    return pa.schema(
        [
            ("run_id", text),
            ("first_seq", count),
            ("suite", text),
            ("source", text),
            ("commit", text),
            ("branch", text),
            ("ci_url", text),
            ("started_ns", count),
            ("finished", pa.bool_()),
            ("total", count),
            ("passed", count),
            ("failed", count),
            ("errors", count),
            ("skipped", count),
            ("flaky", count),
            ("duration_s", pa.float64()),
            ("executions", count),
        ]
    )


def _run(state: HistoryState, run_id: str, envelope: Envelope) -> RunHistory:
    run = state.runs.get(run_id)
    if run is None:
        run = state.runs[run_id] = RunHistory(run_id=run_id, first_seq=envelope.seq)
    return run


def _test(state: HistoryState, test_id: str) -> TestHistory:
    test = state.tests.get(test_id)
    if test is None:
        test = state.tests[test_id] = TestHistory()
    return test


def _count(test: TestHistory, verdict: str, sign: int) -> None:
    if verdict == "p":
        test.passes += sign
    elif verdict == "r":
        test.passes += sign
        test.retried_passes += sign
    elif verdict == "f":
        test.failures += sign
    elif verdict == "e":
        test.errors += sign
    else:
        test.skips += sign


def _executed(state: HistoryState, envelope: Envelope, event: TestCaseExecuted) -> None:
    verdict = _VERDICT[event.outcome]
    test = _test(state, event.test_id)
    retry = bool(test.recent) and test.last_run == event.run_id
    if retry:
        previous = test.recent[0]
        if verdict == "p" and previous in "fer":
            verdict = "r"
        _count(test, previous, -1)
        test.recent = verdict + test.recent[1:]
        if test.durations:
            test.durations[0] = event.duration_s
    else:
        test.runs += 1
        test.recent = (verdict + test.recent)[:DEPTH]
        test.durations.insert(0, event.duration_s)
        del test.durations[DURATIONS:]
        if not test.first_run:
            test.first_run = event.run_id
            test.first_seen_ns = envelope.recorded_at_ns
        test.last_run = event.run_id
        run = _run(state, event.run_id, envelope)
        run.executions += 1
    _count(test, verdict, +1)
    test.attempts += 1
    test.last_seen_ns = envelope.recorded_at_ns
    test.last_commit = event.commit
    test.name = event.name or test.name
    test.suite = event.suite or test.suite
    test.file = event.file or test.file
    if verdict in _FAIL:
        test.last_failure_run = event.run_id
        test.last_failure_commit = event.commit
        test.last_failure_message = event.message
    _track_commit(test, event.commit, verdict)
    _update_streak(test)


def _track_commit(test: TestHistory, commit: str | None, verdict: str) -> None:
    if not commit or verdict == "s":
        return
    bit = _PASSED_BIT if verdict in _PASS else _FAILED_BIT
    for i, (known, bits) in enumerate(test.commits):
        if known == commit:
            merged = bits | bit
            if merged != bits and merged == _PASSED_BIT | _FAILED_BIT:
                test.flaky_commits += 1
            test.commits[i] = (commit, merged)
            return
    test.commits.append((commit, bit))
    if bit == _PASSED_BIT | _FAILED_BIT:
        test.flaky_commits += 1
    del test.commits[:-COMMITS_TRACKED]


def _update_streak(test: TestHistory) -> None:
    streak = failing_streak(test.recent)
    if streak == 0:
        test.failing_since = None
    elif streak == 1 and test.recent[0] in _FAIL:
        test.failing_since = test.last_run


def failing_streak(recent: str) -> int:
    """Newest consecutive failed/errored verdicts, skips ignored."""
    streak = 0
    for verdict in recent:
        if verdict in _FAIL:
            streak += 1
        elif verdict != "s":
            break
    return streak


def flip_rate(recent: str) -> tuple[float, int]:
    """(flip rate, non-skipped verdicts) over ``recent``."""
    verdicts = [v in _PASS for v in recent if v != "s"]
    if len(verdicts) < 2:
        return 0.0, len(verdicts)
    flips = sum(1 for a, b in itertools.pairwise(verdicts) if a != b)
    return flips / (len(verdicts) - 1), len(verdicts)


def same_commit_flips(commits: list[tuple[str, int]]) -> int:
    """Tracked commits on which the test both passed and failed."""
    both = _PASSED_BIT | _FAILED_BIT
    return sum(1 for _, bits in commits if bits == both)


def classify(
    recent: str,
    flaky_commits: int,
    policy: HistoryPolicy | None = None,
    *,
    flips: tuple[float, int] | None = None,
) -> tuple[Status, str]:
    """A test's status and the reason for it.

    ``recent`` is its verdicts, newest first; ``flaky_commits`` the number of recent
    commits (:func:`same_commit_flips`) on which it both failed and passed; ``flips``
    is :func:`flip_rate` of the window when the caller has it already.
    """
    policy = policy or DEFAULT_POLICY
    window = recent[: policy.window]
    streak = failing_streak(window)
    if streak >= policy.broken_streak:
        return "broken", f"failed the last {streak} runs"
    rate, judged = flips if flips is not None else flip_rate(window)
    if "r" in window:
        return "flaky", f"passed on retry in {window.count('r')} of the last {len(window)} runs"
    if flaky_commits:
        return "flaky", f"failed and passed on the same commit ({flaky_commits} commits)"
    if judged >= policy.flip_min_runs and rate >= policy.flip_threshold:
        return "flaky", f"flip rate {rate:.2f} over {judged} runs"
    if judged < policy.min_runs:
        return "new", f"{judged} runs so far"
    return "healthy", ""


def _percentile(ordered: list[float], q: float) -> float:
    """The nearest-rank ``q`` percentile of already sorted values (0.0 when empty)."""
    if not ordered:
        return 0.0
    rank = max(0, math.ceil(q * len(ordered)) - 1)
    return ordered[rank]


def rows_of_tests(state: HistoryState, policy: HistoryPolicy | None = None) -> list[dict[str, Any]]:
    """One row per test, sorted by test id (the ``tests`` table)."""
    policy = policy or DEFAULT_POLICY
    rows = []
    for test_id in sorted(state.tests):
        t = state.tests[test_id]
        flips = flip_rate(t.recent[: policy.window])
        rate, judged = flips
        flaky_commits = same_commit_flips(t.commits)
        status, reason = classify(t.recent, flaky_commits, policy, flips=flips)
        durations = sorted(t.durations)
        decided = t.passes + t.failures + t.errors
        rows.append(
            {
                "test_id": test_id,
                "status": status,
                "reason": reason,
                "quarantined": t.quarantined,
                "quarantine_reason": t.quarantine_reason,
                "runs": t.runs,
                "passes": t.passes,
                "failures": t.failures,
                "errors": t.errors,
                "skips": t.skips,
                "retried_passes": t.retried_passes,
                "attempts": t.attempts,
                "pass_rate": t.passes / decided if decided else None,
                "flip_rate": rate if judged >= 2 else None,
                "recent": t.recent,
                "duration_p50_s": _percentile(durations, 0.50),
                "duration_p95_s": _percentile(durations, 0.95),
                "first_run": t.first_run,
                "first_seen_ns": t.first_seen_ns,
                "last_run": t.last_run,
                "last_seen_ns": t.last_seen_ns,
                "last_commit": t.last_commit,
                "failing_since": t.failing_since,
                "last_failure_run": t.last_failure_run,
                "last_failure_commit": t.last_failure_commit,
                "last_failure_message": t.last_failure_message,
                "flaky_commits": flaky_commits,
                "name": t.name,
                "suite": t.suite,
                "file": t.file,
            }
        )
    return rows


def rows_of_runs(state: HistoryState) -> list[dict[str, Any]]:
    """One row per run in log order (the ``runs`` table)."""
    runs = sorted(state.runs.values(), key=lambda r: r.first_seq)
    return [msgspec.to_builtins(run) for run in runs]


def load_rows(
    directory: Path, policy: HistoryPolicy | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, int]]:
    """(tests rows, runs rows, checkpoints) of the history projection in ``directory``.

    Reads the LanceDB tables when they match the snapshot and the default policy is
    asked for; otherwise (stale tables, other thresholds) computes the rows from the
    snapshot, which is the truth.
    """
    from aqe.projections.store import SnapshotStore
    from aqe.projections.tables import read_table, tables_current

    snapshot = SnapshotStore[HistoryState](HistoryProjection(), directory).load()
    checkpoints = dict(sorted(snapshot.checkpoints.items()))
    if (policy is None or policy == DEFAULT_POLICY) and tables_current(directory, checkpoints):
        return read_table(directory, "tests"), read_table(directory, "runs"), checkpoints
    chosen = policy or DEFAULT_POLICY
    return rows_of_tests(snapshot.state, chosen), rows_of_runs(snapshot.state), checkpoints
