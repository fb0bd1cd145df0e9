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

Whole runs or none. A run that opened with ``TestRunStarted`` has its executions held
back until its ``TestRunFinished`` is in the log, the run's commit marker: every ingest
path and the pytest plugin append the start first and the marker last, so a run cut
short (an ingest that failed halfway, a killed session) shows
nothing, neither in the tests nor in the runs table, until it is completed; ingesting
the same files again appends the missing events under the same ids and the marker
then releases the whole run at once.

Held-back executions wait per test (``HistoryState.waiting``), in the order of the
test's own subject, and a test's verdicts are folded in that order as soon as the runs
at the head of its queue are finished. So the answer depends only on each subject's
order, never on how subjects interleave in the stream: a copy of the log (the QUIC
bridge keeps each subject's order, not the stream's, so a marker may arrive before its
executions) folds to the same state as the original. The price: a test's newer runs
wait behind an unfinished older run of that test until that run is completed. An
execution repeated while waiting (same run, test and attempt, e.g. appended again after
the server's duplicate window) is folded once. Executions of a run that never declared
itself (no ``TestRunStarted``: hand-written events, older producers) fold at once.

Attempts of one test in one run are expected to arrive one after the other (they do
from every ingest path): an execution whose ``run_id`` equals the test's newest run
replaces that run's verdict instead of adding a run.

Classification (:func:`classify`, thresholds in :class:`HistoryPolicy`), over the
newest ``window`` verdicts (skips ignored), first match:

1. **broken**: the newest ``broken_streak`` or more verdicts failed or errored (the
   *streak*; ``failing_since`` names the run it began in) and the verdicts before the
   streak do not make it a run of bad luck. They do when they show nondeterminism (a
   pass on retry, a failure and a pass on one commit, or a flip rate of
   ``flip_threshold`` or more over ``flip_min_runs`` or more verdicts), number
   ``min_runs`` or more, and the streak is at least ``streak_chance`` likely at the
   highest failure rate they allow: ``high ** streak``, ``high`` the upper end of the 95%
   Wilson interval of the failure rate before the streak. A test that never failed
   before, or has too little history, is broken after ``broken_streak`` failures.
2. **flaky**: within the window a test passed on retry, or it failed and passed on the
   same commit (among the last ``COMMITS_TRACKED`` commits), or it has at least
   ``flip_min_runs`` non-skipped verdicts there and a flip rate of ``flip_threshold`` or
   more. A streak that rule 1 put down to bad luck lands here, with its likelihood in
   the reason.
3. **new**: fewer than ``min_runs`` non-skipped verdicts;
4. **healthy**: anything else.

The flip rate is the share of consecutive non-skipped verdicts in the window whose
pass/fail differs (``r`` counts as a pass). It tells scattered failures (flaky) from a
block of them (broken, then fixed: one flip), which a failure rate alone cannot.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from aqe.events import (
    Envelope,
    Event,
    Outcome,
    TestCaseExecuted,
    TestCaseQuarantined,
    TestCaseUnquarantined,
    TestRunFinished,
    TestRunStarted,
)
from aqe.stats import wilson_interval

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
    "PendingExecution",
    "RunHistory",
    "Status",
    "TestHistory",
    "classify",
    "failing_streak",
    "flip_rate",
    "iter_test_rows",
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
_ROWS_PER_BATCH = 10_000


class HistoryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Thresholds of :func:`classify`; the defaults are what the tables are built with."""

    window: int = 50
    min_runs: int = 3
    flip_min_runs: int = 8
    flip_threshold: float = 0.2
    broken_streak: int = 3
    streak_chance: float = 0.05
    """A failing streak less likely than this at the test's earlier failure rate is broken."""


DEFAULT_POLICY = HistoryPolicy()
"""The thresholds the materialised tables are classified with."""


class TestHistory(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Everything the projection knows about one test.

    Fields at their defaults are left out of the snapshot (half its size at 200k tests).
    """

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
    failing_before: str | None = None
    """``failing_since`` before the newest run: a later attempt in that run starts from it."""
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
    random_seed: int | None = None
    """The seed pytest-randomly / pytest-random-order shuffled the run with."""
    random_plugin: str | None = None
    started: bool = False
    """A ``TestRunStarted`` was seen: the run is held until it is finished."""
    finished: bool = False
    total: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    flaky: int = 0
    duration_s: float = 0.0
    executions: int = 0
    interrupted: bool = False
    """The run's session was killed; its marker came later from the spool it left."""


class PendingExecution(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True):
    """What the fold needs of one ``TestCaseExecuted`` that waits for its run to finish.

    Only the fields :func:`_executed` reads (not the captured output), as a JSON
    array in the snapshot: a pending run of 200k cases must stay small.
    """

    run_id: str
    attempt: int
    outcome: Outcome
    duration_s: float
    recorded_at_ns: int
    commit: str | None = None
    name: str | None = None
    suite: str | None = None
    file: str | None = None
    message: str | None = None


class HistoryState(msgspec.Struct, kw_only=True):
    """Tests by identity, runs by id, and the executions still waiting for their runs."""

    tests: dict[str, TestHistory] = msgspec.field(default_factory=dict)
    runs: dict[str, RunHistory] = msgspec.field(default_factory=dict)
    waiting: dict[str, list[PendingExecution]] = msgspec.field(default_factory=dict)
    """Per test id, its executions not folded yet, in the test's order; the first one's
    run is started and not finished."""
    waiting_by_run: dict[str, list[str]] = msgspec.field(default_factory=dict)
    """Per unfinished run id, the tests whose ``waiting`` queue it heads."""


class HistoryProjection:
    """Folds ``AQE_TESTS`` into a :class:`HistoryState`."""

    name: str = "history"
    version: int = 4
    streams: tuple[str, ...] = ("AQE_TESTS",)

    def __init__(self) -> None:
        self._decoder = msgspec.json.Decoder(HistoryState)

    def initial(self) -> HistoryState:
        """No tests, no runs."""
        return HistoryState()

    def apply(self, state: HistoryState, envelope: Envelope, event: Event) -> HistoryState:
        """Fold one event of the tests domain (others are ignored)."""
        if isinstance(event, TestCaseExecuted):
            run = _run(state, event.run_id, envelope)
            execution = PendingExecution(
                run_id=run.run_id,
                attempt=event.attempt,
                outcome=event.outcome,
                duration_s=event.duration_s,
                recorded_at_ns=envelope.recorded_at_ns,
                commit=_shared(event.commit),
                name=event.name,
                suite=_shared(event.suite),
                file=_shared(event.file),
                message=event.message,
            )
            queue = state.waiting.get(event.test_id)
            if queue is not None:
                queue.append(execution)
            elif _held(run):
                state.waiting[event.test_id] = [execution]
                state.waiting_by_run.setdefault(run.run_id, []).append(event.test_id)
            else:
                _executed(state, event.test_id, run, execution)
        elif isinstance(event, TestRunStarted):
            run = _run(state, event.run_id, envelope)
            run.started = True
            run.suite = event.suite
            run.source = event.source
            run.commit = event.commit
            run.branch = event.branch
            run.ci_url = event.ci_url
            run.random_seed = event.random_seed
            run.random_plugin = event.random_plugin
            run.started_ns = (
                int(event.started_at.timestamp() * 1e9)
                if event.started_at
                else envelope.recorded_at_ns
            )
        elif isinstance(event, TestRunFinished):
            run = _run(state, event.run_id, envelope)
            run.finished = True
            for test_id in state.waiting_by_run.pop(run.run_id, ()):
                _release(state, test_id)
            run.total = event.total
            run.passed = event.passed
            run.failed = event.failed
            run.errors = event.errors
            run.skipped = event.skipped
            run.flaky = event.flaky
            run.duration_s = event.duration_s
            run.interrupted = event.interrupted
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

    def encode_chunks(self, state: HistoryState) -> Iterator[bytes]:
        """:meth:`encode`'s bytes in pieces of 1,000 tests (or runs), for the snapshot
        store to write as they come: 200k tests are never one 64 MB buffer."""
        from aqe.projections.store import sorted_struct_pieces

        return sorted_struct_pieces(_ENCODER.encode, state)

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
                "tests": (_tests_table(state), _tests_schema()),
                "runs": (rows_of_runs(state), _runs_schema()),
            },
            checkpoints,
        )


def _tests_table(state: HistoryState) -> pa.RecordBatchReader:
    """The ``tests`` table as a stream of Arrow batches of ``_ROWS_PER_BATCH`` rows.

    200k rows as dicts cost about 300 MB; streamed, only one slice of dicts and one
    batch are alive while LanceDB writes.
    """
    import pyarrow as pa

    schema = _tests_schema()

    def batches() -> Iterator[pa.RecordBatch]:
        rows = iter_test_rows(state)
        while chunk := list(itertools.islice(rows, _ROWS_PER_BATCH)):
            yield pa.RecordBatch.from_pylist(chunk, schema=schema)

    return pa.RecordBatchReader.from_batches(schema, batches())


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
            ("random_seed", count),
            ("random_plugin", text),
            ("started", pa.bool_()),
            ("finished", pa.bool_()),
            ("total", count),
            ("passed", count),
            ("failed", count),
            ("errors", count),
            ("skipped", count),
            ("flaky", count),
            ("duration_s", pa.float64()),
            ("executions", count),
            ("interrupted", pa.bool_()),
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


def _release(state: HistoryState, test_id: str) -> None:
    """Fold a test's waiting executions up to the first whose run is not finished."""
    queue = state.waiting.get(test_id)
    if queue is None:
        return
    ready = 0
    while ready < len(queue) and not _held(state.runs[queue[ready].run_id]):
        ready += 1
    seen: set[tuple[str, int]] = set()
    for execution in queue[:ready]:
        key = (execution.run_id, execution.attempt)
        if key not in seen:
            seen.add(key)
            _executed(state, test_id, state.runs[execution.run_id], execution)
    if ready == len(queue):
        del state.waiting[test_id]
    elif ready:
        del queue[:ready]
        # The new head's run releases the test when it finishes.
        state.waiting_by_run.setdefault(queue[0].run_id, []).append(test_id)


def _shared(value: str | None) -> str | None:
    """One object per distinct commit, suite or file, however many tests refer to it.

    Every decoded event carries its own copies; 200k tests would keep 200k copies of
    the same few strings (memory only: the value, and so the fold, is unchanged).
    """
    return None if value is None else sys.intern(value)


def _held(run: RunHistory) -> bool:
    return run.started and not run.finished


def _executed(state: HistoryState, test_id: str, run: RunHistory, event: PendingExecution) -> None:
    verdict = _VERDICT[event.outcome]
    test = _test(state, test_id)
    retry = bool(test.recent) and test.last_run == run.run_id
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
            test.first_run = run.run_id
            test.first_seen_ns = event.recorded_at_ns
        test.last_run = run.run_id
        run.executions += 1
    _count(test, verdict, +1)
    test.attempts += 1
    test.last_seen_ns = event.recorded_at_ns
    test.last_commit = event.commit
    test.name = event.name or test.name
    test.suite = event.suite or test.suite
    test.file = event.file or test.file
    if verdict in _FAIL:
        test.last_failure_run = run.run_id
        test.last_failure_commit = event.commit
        test.last_failure_message = event.message
    _track_commit(test, event.commit, verdict)
    _update_streak(test, run.run_id, new_run=not retry)


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


def _update_streak(test: TestHistory, run_id: str, *, new_run: bool) -> None:
    """Keep ``failing_since`` the run the failing streak began in (None: no streak).

    A later attempt replaces its run's verdict, so the streak is recomputed from what it
    was before that run: a pass in between (a retry) must not lose where it began.
    """
    if new_run:
        test.failing_before = test.failing_since
    verdict = test.recent[0]
    if verdict in _FAIL:
        test.failing_since = test.failing_before or run_id
    elif verdict == "s":
        test.failing_since = test.failing_before
    else:
        test.failing_since = None


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
    """A test's status and the reason for it (the rule is in the module docstring).

    ``recent`` is its verdicts, newest first; ``flaky_commits`` the number of recent
    commits (:func:`same_commit_flips`) on which it both failed and passed; ``flips``
    is :func:`flip_rate` of the window when the caller has it already.
    """
    policy = policy or DEFAULT_POLICY
    window = recent[: policy.window]
    streak = failing_streak(window)
    if streak >= policy.broken_streak:
        broken, reason = _judge_streak(window, streak, flaky_commits, policy)
        return ("broken" if broken else "flaky"), reason
    flips = flips if flips is not None else flip_rate(window)
    why = _nondeterminism(window, flaky_commits, policy, flips)
    if why:
        return "flaky", why
    if flips[1] < policy.min_runs:
        return "new", f"{flips[1]} runs so far"
    return "healthy", ""


def _nondeterminism(
    verdicts: str,
    flaky_commits: int,
    policy: HistoryPolicy,
    flips: tuple[float, int] | None = None,
    *,
    newest: bool = True,
) -> str:
    """Why ``verdicts`` (newest first) show a test passing and failing by chance, or "".

    ``newest``: they are the newest verdicts, not the ones before a streak.
    """
    if "r" in verdicts:
        span = f"{'the last ' if newest else ''}{len(verdicts)}"
        return f"passed on retry in {verdicts.count('r')} of {span} runs"
    if flaky_commits:
        return f"failed and passed on the same commit ({flaky_commits} commits)"
    rate, judged = flips if flips is not None else flip_rate(verdicts)
    if judged >= policy.flip_min_runs and rate >= policy.flip_threshold:
        return f"flip rate {rate:.2f} over {judged} runs"
    return ""


def _judge_streak(
    window: str, streak: int, flaky_commits: int, policy: HistoryPolicy
) -> tuple[bool, str]:
    """Whether a failing streak at the head of ``window`` is a break (or bad luck), and why.

    Bad luck needs the verdicts before the streak to show nondeterminism, number at
    least ``min_runs``, and make the streak at least ``streak_chance`` likely at the
    upper end of the 95% Wilson interval of their failure rate.
    """
    head = f"failed the last {streak} runs"
    before = window[next((i for i, v in enumerate(window) if v in _PASS), len(window)) :]
    evidence = _nondeterminism(before, flaky_commits, policy, newest=False)
    judged = sum(v != "s" for v in before)
    if not evidence or judged < policy.min_runs:
        return True, head
    failed = sum(v in _FAIL for v in before)
    high = wilson_interval(failed, judged).high
    chance = high**streak
    odds = (
        f"{f'{chance:.1%}' if chance >= 0.001 else 'under 0.1%'} likely at its failure rate "
        f"({failed} of {judged} runs, at most {high:.0%})"
    )
    if chance < policy.streak_chance:
        return True, f"{head}, {odds}"
    return False, f"{head}, {odds}; before them: {evidence}"


def _percentile(ordered: list[float], q: float) -> float:
    """The nearest-rank ``q`` percentile of already sorted values (0.0 when empty)."""
    if not ordered:
        return 0.0
    rank = max(0, math.ceil(q * len(ordered)) - 1)
    return ordered[rank]


def rows_of_tests(state: HistoryState, policy: HistoryPolicy | None = None) -> list[dict[str, Any]]:
    """One row per test, sorted by test id (the ``tests`` table)."""
    return list(iter_test_rows(state, policy))


def iter_test_rows(
    state: HistoryState, policy: HistoryPolicy | None = None
) -> Iterator[dict[str, Any]]:
    """The rows of :func:`rows_of_tests`, one at a time (a million dicts do not fit)."""
    policy = policy or DEFAULT_POLICY
    for test_id in sorted(state.tests):
        t = state.tests[test_id]
        flips = flip_rate(t.recent[: policy.window])
        rate, judged = flips
        flaky_commits = same_commit_flips(t.commits)
        status, reason = classify(t.recent, flaky_commits, policy, flips=flips)
        durations = sorted(t.durations)
        decided = t.passes + t.failures + t.errors
        yield (
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


def rows_of_runs(state: HistoryState) -> list[dict[str, Any]]:
    """One row per run in log order (the ``runs`` table); started, unfinished runs are not shown."""
    runs = sorted((r for r in state.runs.values() if not _held(r)), key=lambda r: r.first_seq)
    return [msgspec.to_builtins(run) for run in runs]


def load_rows(
    directory: Path, policy: HistoryPolicy | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, int]]:
    """(tests rows, runs rows, checkpoints) of the history projection in ``directory``.

    The rows are computed from the snapshot, which is the truth and is loaded anyway
    for its checkpoints; the LanceDB tables (the same rows, for other readers) are not
    read here, because importing LanceDB alone costs a query command over a second.
    """
    from aqe.projections.store import SnapshotStore

    snapshot = SnapshotStore[HistoryState](HistoryProjection(), directory).load()
    checkpoints = dict(sorted(snapshot.checkpoints.items()))
    chosen = policy or DEFAULT_POLICY
    return rows_of_tests(snapshot.state, chosen), rows_of_runs(snapshot.state), checkpoints
