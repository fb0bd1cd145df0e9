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
    """Feeds events to the projection with increasing sequence numbers."""

    def __init__(self) -> None:
        self.projection = HistoryProjection()
        self.state = self.projection.initial()
        self.seq = 0

    def __call__(self, *events: Event) -> HistoryState:
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
