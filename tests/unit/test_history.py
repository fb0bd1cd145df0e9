"""The test-history projection: verdict folding, classification, tables."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

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
from aqe.log.subjects import subject_for
from aqe.projections import Snapshot, SnapshotStore
from aqe.projections.history import (
    DEPTH,
    HistoryPolicy,
    HistoryProjection,
    HistoryState,
    classify,
    flip_rate,
    load_rows,
    rows_of_runs,
    rows_of_tests,
)
from aqe.projections.tables import read_table, tables_current


class Folder:
    """Feeds events to the projection with increasing sequence numbers.

    Each call folds whole runs: every run whose executions it is given is closed
    with a ``TestRunFinished`` after them, unless the call holds one already
    (:meth:`partial` folds without closing anything).
    """

    def __init__(self) -> None:
        self.projection = HistoryProjection()
        self.state = self.projection.initial()
        self.seq = 0

    def __call__(self, *events: Event) -> HistoryState:
        finished = {e.run_id for e in events if isinstance(e, TestRunFinished)}
        opened = dict.fromkeys(e.run_id for e in events if isinstance(e, TestCaseExecuted))
        closing = [
            TestRunFinished(run_id=run, total=0, passed=0, failed=0)
            for run in opened
            if run not in finished
        ]
        return self.partial(*events, *closing)

    def partial(self, *events: Event) -> HistoryState:
        for event in events:
            self.seq += 1
            env = Envelope(
                stream="AQE_TESTS",
                seq=self.seq,
                subject=subject_for(event),
                event_id=event.default_id(),
                event_type=event.type_tag(),
                recorded_at_ns=1_700_000_000_000_000_000 + self.seq,
                data=event.to_json(),
                headers={},
            )
            self.state = self.projection.apply(self.state, env, event)
        return self.state


def ran(test: str, run: str, outcome: Outcome, **kw: object) -> TestCaseExecuted:
    return TestCaseExecuted(test_id=test, run_id=run, outcome=outcome, **kw)  # type: ignore[arg-type]


def runs_of(test: str, verdicts: str, commit: str | None = None) -> list[Event]:
    names: dict[str, Outcome] = {"p": "passed", "f": "failed", "e": "error", "s": "skipped"}
    return [
        ran(test, f"run-{i}", names[v], commit=commit or f"c{i}", duration_s=float(i))
        for i, v in enumerate(verdicts)
    ]


def test_verdicts_are_kept_newest_first_with_counters() -> None:
    fold = Folder()
    state = fold(*runs_of("t", "ppfsep"))
    t = state.tests["t"]
    assert t.recent == "pesfpp"
    assert (t.runs, t.passes, t.failures, t.errors, t.skips) == (6, 3, 1, 1, 1)
    assert t.first_run == "run-0"
    assert t.last_run == "run-5"
    assert t.last_failure_run == "run-4"
    assert t.failing_since is None


def test_a_retry_in_the_same_run_replaces_the_verdict() -> None:
    fold = Folder()
    state = fold(
        ran("t", "r1", "failed", attempt=1, message="boom", duration_s=2.0),
        ran("t", "r1", "passed", attempt=2, duration_s=1.0),
    )
    t = state.tests["t"]
    assert t.recent == "r"
    assert (t.runs, t.passes, t.failures, t.retried_passes, t.attempts) == (1, 1, 0, 1, 2)
    assert t.durations == [1.0]
    assert t.last_failure_message == "boom"
    assert classify(t.recent, 0)[0] == "flaky"
    assert state.runs["r1"].executions == 1


def test_rerun_failures_stay_failed() -> None:
    fold = Folder()
    state = fold(ran("t", "r1", "failed"), ran("t", "r1", "failed", attempt=2))
    assert state.tests["t"].recent == "f"
    assert state.tests["t"].failures == 1


def test_broken_after_a_streak_names_the_first_failing_run() -> None:
    fold = Folder()
    state = fold(*runs_of("t", "pppfff"))
    t = state.tests["t"]
    assert t.failing_since == "run-3"
    status, reason = classify(t.recent, 0)
    assert status == "broken"
    assert "3" in reason
    assert classify(t.recent, 0, HistoryPolicy(broken_streak=4))[0] != "broken"


def test_skips_do_not_break_a_failing_streak() -> None:
    fold = Folder()
    state = fold(*runs_of("t", "pfsff"))
    assert state.tests["t"].failing_since == "run-1"
    assert classify(state.tests["t"].recent, 0)[0] == "broken"


def test_failed_and_passed_on_one_commit_is_flaky() -> None:
    fold = Folder()
    state = fold(
        *runs_of("t", "pppp"),
        ran("t", "x1", "failed", commit="abc"),
        ran("t", "x2", "passed", commit="abc"),
    )
    rows = rows_of_tests(state)
    assert rows[0]["flaky_commits"] == 1
    assert rows[0]["status"] == "flaky"
    assert "same commit" in rows[0]["reason"]


def test_flip_rate_rule_needs_enough_runs() -> None:
    assert flip_rate("pfpf") == (1.0, 4)
    assert flip_rate("pspf") == (0.5, 3)
    few = "pfpfp"
    assert classify(few, 0)[0] == "healthy"  # 5 < flip_min_runs (8)
    many = "ppfpppfppppf"
    status, reason = classify(many, 0)
    assert status == "flaky"
    assert "flip rate" in reason
    assert classify(many, 0, HistoryPolicy(flip_threshold=0.6))[0] == "healthy"


def test_new_and_healthy() -> None:
    assert classify("pp", 0)[0] == "new"
    assert classify("ppppp", 0)[0] == "healthy"


def verdict_runs(test: str, oldest_first: str) -> list[Event]:
    """One run per verdict (``r``: a failed attempt, then a passing one), oldest first."""
    names: dict[str, Outcome] = {"p": "passed", "f": "failed", "e": "error", "s": "skipped"}
    events: list[Event] = []
    for i, v in enumerate(oldest_first):
        run, commit = f"run-{i}", f"c{i}"
        if v == "r":
            events += [
                ran(test, run, "failed", commit=commit),
                ran(test, run, "passed", attempt=2, commit=commit),
            ]
        else:
            events.append(ran(test, run, names[v], commit=commit))
    return events


# Issue 11, item 5, as the issue writes it: oldest verdict first. 9 of 16 passed (56%),
# two of them on retry; the newest three failed.
ISSUE_CASE = "pfpppprrpfffpfff"


def test_a_streak_with_flaky_evidence_before_it_is_flaky_not_broken() -> None:
    state = Folder()(*verdict_runs("t", ISSUE_CASE))
    t = state.tests["t"]
    assert t.recent == ISSUE_CASE[::-1]  # recent is newest first
    assert (t.passes, t.retried_passes, t.runs) == (9, 2, 16)
    (row,) = rows_of_tests(state)
    assert row["status"] == "flaky"
    # 4 failures in the 13 runs before the streak: at most 58% (95% Wilson), 0.58**3 = 19%.
    assert row["reason"].startswith("failed the last 3 runs, 19.1% likely")
    assert "(4 of 13 runs, at most 58%)" in row["reason"]
    assert "passed on retry in 2 of 13 runs" in row["reason"]
    # --broken-streak 4: no streak long enough, flaky by its retries.
    status, reason = classify(t.recent, 0, HistoryPolicy(broken_streak=4))
    assert (status, reason) == ("flaky", "passed on retry in 2 of the last 16 runs")


def test_a_streak_that_outlasts_the_earlier_failure_rate_is_broken() -> None:
    # Three more failures: 0.58**6 = 3.7% < 5%.
    status, reason = classify((ISSUE_CASE + "fff")[::-1], 0)
    assert status == "broken"
    assert reason.startswith("failed the last 6 runs, 3.7% likely")


def test_a_test_that_passed_40_times_and_failed_5_is_broken() -> None:
    state = Folder()(*verdict_runs("t", "p" * 40 + "f" * 5))
    (row,) = rows_of_tests(state)
    assert (row["status"], row["reason"]) == ("broken", "failed the last 5 runs")
    assert row["failing_since"] == "run-40"
    # One retry long ago is evidence of flakiness, but 5 failures after 41 runs without
    # one (at most 9% each) are far too unlikely for bad luck.
    status, reason = classify(("p" * 30 + "r" + "p" * 10 + "f" * 5)[::-1], 0)
    assert status == "broken"
    assert "under 0.1% likely" in reason


def test_broken_since_its_first_run_and_after_a_block_of_failures() -> None:
    assert classify("fff", 0) == ("broken", "failed the last 3 runs")
    assert classify("ff", 0)[0] == "new"
    # Failed, was fixed, failed again: one block of failures is no sign of chance.
    assert classify(("fffff" + "ppppp" + "fff")[::-1], 0)[0] == "broken"


def test_flip_threshold_decides_whether_flips_before_a_streak_count() -> None:
    scattered = ("pfppfpfpppfp" + "fff")[::-1]  # no retries, flip rate 0.73 before
    status, reason = classify(scattered, 0)
    assert status == "flaky"
    assert "before them: flip rate 0.73 over 12 runs" in reason
    assert classify(scattered, 0, HistoryPolicy(flip_threshold=0.9))[0] == "broken"
    # A same-commit flip is evidence too.
    one_block = ("ppppppffpppp" + "fff")[::-1]  # flip rate 0.18 before the streak
    assert classify(one_block, 0)[0] == "broken"
    assert classify(one_block, 1)[0] == "flaky"


def test_healthy_stays_healthy() -> None:
    assert classify("p" * 60, 0) == ("healthy", "")
    assert classify(("p" * 30 + "f" + "p" * 10)[::-1], 0) == ("healthy", "")


def test_failing_since_survives_a_pass_between_failed_attempts() -> None:
    # A run whose attempts go failed, passed, failed (a rerun plugin reporting a teardown
    # as a pass, or reports given out of order) ends failed: the streak began at run-0.
    fold = Folder()
    for run in ("run-0", "run-1"):
        fold(
            ran("t", run, "failed"),
            ran("t", run, "passed", attempt=2),
            ran("t", run, "failed", attempt=3),
        )
    state = fold(ran("t", "run-2", "failed"))
    t = state.tests["t"]
    assert t.recent == "fff"
    assert t.failing_since == "run-0"
    (row,) = rows_of_tests(state)
    assert (row["status"], row["failing_since"], row["first_run"]) == ("broken", "run-0", "run-0")
    # A retry that passes ends the streak; the next failure starts a new one.
    state = fold(ran("t", "run-3", "failed"), ran("t", "run-3", "passed", attempt=2))
    assert state.tests["t"].failing_since is None
    state = fold(ran("t", "run-4", "error"))
    assert state.tests["t"].failing_since == "run-4"
    state = fold(ran("t", "run-5", "skipped"), ran("t", "run-5", "failed", attempt=2))
    assert state.tests["t"].failing_since == "run-4"


def test_depth_bounds_recent() -> None:
    fold = Folder()
    state = fold(*runs_of("t", "p" * (DEPTH + 5)))
    assert len(state.tests["t"].recent) == DEPTH
    assert state.tests["t"].runs == DEPTH + 5


def test_quarantine_is_an_event() -> None:
    fold = Folder()
    state = fold(
        *runs_of("t", "pf"),
        TestCaseQuarantined(test_id="t", reason="flaky", by="bot"),
    )
    assert state.tests["t"].quarantined
    row = rows_of_tests(state)[0]
    assert (row["quarantined"], row["quarantine_reason"]) == (True, "flaky")
    state = fold(TestCaseUnquarantined(test_id="t", reason="fixed"))
    assert not state.tests["t"].quarantined


def test_runs_take_their_totals_from_start_and_finish() -> None:
    fold = Folder()
    state = fold(
        TestRunStarted(run_id="r1", suite="unit", commit="abc", source="junit"),
        ran("a", "r1", "passed"),
        ran("b", "r1", "failed"),
        TestRunFinished(run_id="r1", total=2, passed=1, failed=1, duration_s=3.5),
    )
    (row,) = rows_of_runs(state)
    assert row["run_id"] == "r1"
    assert (row["total"], row["passed"], row["failed"], row["executions"]) == (2, 1, 1, 2)
    assert (row["commit"], row["source"], row["finished"]) == ("abc", "junit", True)


def test_percentiles_and_rates() -> None:
    fold = Folder()
    state = fold(*runs_of("t", "pppppppppf"))  # durations 0..9
    row = rows_of_tests(state)[0]
    assert row["duration_p50_s"] == 4.0
    assert row["duration_p95_s"] == 9.0
    assert row["pass_rate"] == pytest.approx(0.9)
    assert row["flip_rate"] == pytest.approx(1 / 9)


def test_state_round_trips_through_its_encoding() -> None:
    fold = Folder()
    state = fold(*runs_of("t", "pfpr".replace("r", "p")), *runs_of("u", "ff", commit="z"))
    projection = HistoryProjection()
    data = projection.encode(state)
    again = projection.decode(data)
    assert projection.encode(again) == data
    assert msgspec.to_builtins(again) == msgspec.to_builtins(state)


def test_snapshots_materialise_lance_tables(tmp_path: Path) -> None:
    fold = Folder()
    state = fold(
        TestRunStarted(run_id="run-0"),
        *runs_of("t", "pff"),
        *runs_of("u", "ppp"),
    )
    store = SnapshotStore(HistoryProjection(), tmp_path / "history")
    store.save(Snapshot(state=state, checkpoints={"AQE_TESTS": fold.seq}))
    directory = tmp_path / "history"
    assert tables_current(directory, {"AQE_TESTS": fold.seq})
    tests = read_table(directory, "tests")
    assert [r["test_id"] for r in tests] == ["t", "u"]
    assert tests == rows_of_tests(state)
    assert read_table(directory, "runs") == rows_of_runs(state)
    rows, _, checkpoints = load_rows(directory)
    assert rows == tests
    assert checkpoints == {"AQE_TESTS": fold.seq}
    # A second save swaps a new set in; no old table versions pile up.
    state = fold(*runs_of("v", "p"))
    store.save(Snapshot(state=state, checkpoints={"AQE_TESTS": fold.seq}))
    assert [r["test_id"] for r in read_table(directory, "tests")] == ["t", "u", "v"]
    leftovers = [p.name for p in directory.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_stale_tables_are_not_trusted(tmp_path: Path) -> None:
    fold = Folder()
    state = fold(*runs_of("t", "pp"))
    directory = tmp_path / "history"
    store = SnapshotStore(HistoryProjection(), directory)
    store.save(Snapshot(state=state, checkpoints={"AQE_TESTS": 2}))
    # Simulate a crash between the snapshot and its tables: the marker no longer matches.
    (directory / "tables" / "built.json").write_bytes(b'{"checkpoints": {"AQE_TESTS": 1}}')
    assert not tables_current(directory, {"AQE_TESTS": 2})
    rows, _, _ = load_rows(directory)
    assert rows == rows_of_tests(state)


def test_other_thresholds_are_computed_from_the_state(tmp_path: Path) -> None:
    fold = Folder()
    state = fold(*runs_of("t", "ff"))
    directory = tmp_path / "history"
    SnapshotStore(HistoryProjection(), directory).save(
        Snapshot(state=state, checkpoints={"AQE_TESTS": fold.seq})
    )
    default_rows, _, _ = load_rows(directory)
    strict_rows, _, _ = load_rows(directory, HistoryPolicy(broken_streak=2))
    assert default_rows[0]["status"] == "new"
    assert strict_rows[0]["status"] == "broken"


# -- whole runs or none (issue 21 item 2) --------------------------------------------------


def test_a_run_shows_nothing_until_its_finish_marker() -> None:
    fold = Folder()
    state = fold.partial(
        TestRunStarted(run_id="r1", suite="unit"),
        ran("a", "r1", "passed"),
        ran("b", "r1", "failed", output="x" * 10_000),
    )
    assert state.tests == {}
    assert rows_of_tests(state) == []
    assert rows_of_runs(state) == []
    assert sorted(state.waiting) == ["a", "b"]
    state = fold.partial(TestRunFinished(run_id="r1", total=2, passed=1, failed=1))
    assert (state.waiting, state.waiting_by_run) == ({}, {})
    assert [r["test_id"] for r in rows_of_tests(state)] == ["a", "b"]
    (run,) = rows_of_runs(state)
    assert (run["finished"], run["executions"], run["total"]) == (True, 2, 2)


def test_completing_an_interrupted_run_folds_each_attempt_once() -> None:
    # The first ingest stopped after two cases; the second appended everything again
    # (past the duplicate window the server stores the repeats too).
    events = [
        TestRunStarted(run_id="r1"),
        ran("a", "r1", "failed", attempt=1),
        ran("a", "r1", "passed", attempt=2),
        ran("b", "r1", "passed"),
    ]
    fold = Folder()
    fold.partial(*events[:3])
    state = fold.partial(*events, TestRunFinished(run_id="r1", total=2, passed=2, failed=0))
    a, b = state.tests["a"], state.tests["b"]
    assert (a.recent, a.runs, a.attempts, a.retried_passes) == ("r", 1, 2, 1)
    assert (b.recent, b.runs, b.attempts) == ("p", 1, 1)
    assert state.runs["r1"].executions == 2


def test_a_test_folds_its_runs_in_its_own_order_whatever_finishes_first() -> None:
    fold = Folder()
    state = fold.partial(
        TestRunStarted(run_id="live"),
        TestRunStarted(run_id="batch"),
        ran("t", "live", "failed"),
        ran("t", "batch", "passed"),
        ran("u", "batch", "passed"),
        TestRunFinished(run_id="batch", total=2, passed=2, failed=0),
    )
    # u is complete; t's "batch" verdict waits behind its unfinished "live" run.
    assert state.tests["u"].recent == "p"
    assert "t" not in state.tests
    assert [r["run_id"] for r in rows_of_runs(state)] == ["batch"]
    state = fold.partial(TestRunFinished(run_id="live", total=1, passed=0, failed=1))
    assert state.tests["t"].recent == "pf"  # newest first, in t's own order
    assert [r["run_id"] for r in rows_of_runs(state)] == ["live", "batch"]  # log order


def test_the_answer_does_not_depend_on_how_subjects_interleave() -> None:
    # A bridge copy keeps each subject's order, not the stream's: starts, executions
    # and markers of different subjects may come in any interleaving.
    runs = [f"r{i}" for i in range(4)]
    executions = [
        ran(t, r, "failed" if (i + j) % 3 else "passed")
        for i, r in enumerate(runs)
        for j, t in enumerate("abc")
    ]
    starts = [TestRunStarted(run_id=r) for r in runs]
    finishes = [TestRunFinished(run_id=r, total=3, passed=1, failed=2) for r in runs]
    in_order = Folder()
    in_order.partial(*starts, *executions, *finishes)
    markers_first = Folder()
    markers_first.partial(*finishes[::2], *executions, *starts, *finishes[1::2])
    by_test = Folder()
    by_test.partial(*starts[::-1], *sorted(executions, key=lambda e: e.test_id), *finishes[::-1])
    late_starts = Folder()
    late_starts.partial(*executions[:6], *starts, *executions[6:], *finishes[::-1])

    def rows(fold: Folder) -> list[dict[str, object]]:
        # Times come from the copy's own envelopes; everything else must agree.
        return [
            {k: v for k, v in row.items() if not k.endswith("_seen_ns")}
            for row in rows_of_tests(fold.state)
        ]

    for other in (markers_first, by_test, late_starts):
        assert rows(other) == rows(in_order)
        assert (other.state.waiting, other.state.waiting_by_run) == ({}, {})


def test_a_pending_run_survives_a_snapshot_and_rebuilds_the_same() -> None:
    events: list[Event] = [
        TestRunStarted(run_id="r1"),
        *[ran(f"t{i}", "r1", "failed" if i % 3 else "passed", message="m") for i in range(6)],
    ]
    finish = TestRunFinished(run_id="r1", total=6, passed=2, failed=4)
    straight = Folder()
    straight.partial(*events, finish)
    # Incremental: stop mid-run, snapshot (encode/decode), resume.
    half = Folder()
    half.partial(*events)
    projection = HistoryProjection()
    half.state = projection.decode(projection.encode(half.state))
    half.partial(finish)
    assert projection.encode(half.state) == projection.encode(straight.state)


def test_executions_copied_after_their_marker_fold_at_once() -> None:
    fold = Folder()
    state = fold.partial(
        TestRunFinished(run_id="r1", total=1, passed=1, failed=0),
        ran("t", "r1", "passed"),
    )
    assert state.tests["t"].recent == "p"
    assert state.waiting == {}
    assert state.runs["r1"].executions == 1


def test_executions_of_a_run_that_never_started_fold_at_once() -> None:
    fold = Folder()
    state = fold.partial(ran("t", "bare", "passed"))
    assert state.tests["t"].recent == "p"
    assert [r["run_id"] for r in rows_of_runs(state)] == ["bare"]
