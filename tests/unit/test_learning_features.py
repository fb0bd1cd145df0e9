"""HistoryTracker features, and cycles from events and from IOF/ROL files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from aqe.events import TestCaseExecuted, TestRunFinished, TestRunStarted
from aqe.learning.features import (
    FEATURE_NAMES,
    HISTORY_K,
    Cycle,
    HistoryTracker,
    cycles_from_iofrol,
    from_events,
)

COL = {name: i for i, name in enumerate(FEATURE_NAMES)}


def test_feature_names_cover_the_columns() -> None:
    tracker = HistoryTracker()
    obs = tracker.observation("c0", ["a"], now=0)
    assert obs.features.shape == (1, len(FEATURE_NAMES))
    assert obs.features.dtype == np.float32
    assert obs.feature_names == FEATURE_NAMES
    assert FEATURE_NAMES[:HISTORY_K] == tuple(f"verdict_{i}" for i in range(1, 11))


def test_a_new_test() -> None:
    row = HistoryTracker().observation("c0", ["a"], now=0).features[0]
    expected = np.zeros(len(FEATURE_NAMES), dtype=np.float32)
    expected[[COL["since_run"], COL["since_fail"], COL["is_new"]]] = 1.0
    assert row.tolist() == expected.tolist()


def test_features_after_three_runs_by_hand() -> None:
    tracker = HistoryTracker()
    for now, verdict in enumerate([1, 0, 1]):
        tracker.observe_cycle(f"c{now}", ["a", "b"], [2.0, 8.0], [verdict, 0], now=now)
    obs = tracker.observation("c3", ["a", "b", "new"], now=3)
    a = obs.features[0]
    assert a[:HISTORY_K].tolist() == [1, 0, 1, 0, 0, 0, 0, 0, 0, 0]  # newest first
    assert a[COL["known"]] == pytest.approx(0.3)
    assert a[COL["fail_rate"]] == pytest.approx(2 / 3)
    assert a[COL["flip_rate"]] == pytest.approx(1.0)  # 1→0→1: two flips in two steps
    assert a[COL["runs"]] == pytest.approx(math.log1p(3) / math.log1p(1000))
    assert a[COL["since_run"]] == pytest.approx(math.log1p(1) / math.log1p(100))
    assert a[COL["since_fail"]] == pytest.approx(math.log1p(1) / math.log1p(100))
    assert a[COL["duration"]] == pytest.approx(2 / 8)
    assert a[COL["is_new"]] == 0
    b = obs.features[1]
    assert b[COL["since_fail"]] == 1.0  # never failed
    assert b[COL["duration"]] == 1.0
    assert obs.durations.tolist() == [2.0, 8.0, 0.0]
    assert obs.features[2][COL["is_new"]] == 1.0
    assert ((obs.features >= 0) & (obs.features <= 1)).all()


def test_failure_streak_and_recent_failure_windows() -> None:
    tracker = HistoryTracker()
    # a: fails in cycles 0, 3, 4, 5; b: fails in 0 only, then passes; c misses cycle 5
    verdicts = {"a": [1, 0, 0, 1, 1, 1], "b": [1, 0, 0, 0, 0, 0], "c": [1, 1, 1, 1, 1]}
    for now in range(6):
        ran = [t for t, v in verdicts.items() if now < len(v)]
        tracker.observe_cycle(f"c{now}", ran, [1.0] * len(ran), [verdicts[t][now] for t in ran])
    obs = tracker.observation("c6", ["a", "b", "c", "new"], now=6)
    a, b, c, new = obs.features
    assert a[COL["fail_streak"]] == pytest.approx(math.log1p(3) / math.log1p(50))
    assert a[COL["fails_last_3"]] == pytest.approx(1.0)  # cycles 3, 4, 5
    assert a[COL["fails_last_5"]] == pytest.approx(3 / 5)  # cycles 1..5
    assert b[COL["fail_streak"]] == 0.0
    assert b[COL["fails_last_5"]] == 0.0  # its failure was 6 cycles ago
    assert c[COL["fail_streak"]] == pytest.approx(math.log1p(5) / math.log1p(50))
    assert c[COL["fails_last_3"]] == pytest.approx(2 / 3)  # it did not run in cycle 5
    assert new[COL["fail_streak"]] == new[COL["fails_last_3"]] == 0.0


def test_gaps_saturate_at_the_horizon() -> None:
    tracker = HistoryTracker(horizon=10)
    tracker.observe_cycle("c0", ["a"], [1.0], [1], now=0)
    row = tracker.observation("c1", ["a"], now=500).features[0]
    assert row[COL["since_run"]] == 1.0
    assert row[COL["since_fail"]] == 1.0


def test_only_the_last_k_verdicts_are_kept() -> None:
    tracker = HistoryTracker()
    for now in range(15):
        tracker.observe_cycle(f"c{now}", ["a"], [1.0], [1 if now < 5 else 0])
    row = tracker.observation("c15", ["a"], now=15).features[0]
    assert row[:HISTORY_K].tolist() == [0] * 10
    assert row[COL["known"]] == 1.0
    assert row[COL["fail_rate"]] == pytest.approx(5 / 15)


def test_observe_defaults_to_the_observation_clock() -> None:
    tracker = HistoryTracker()
    tracker.observation("c7", ["a"], now=7)
    tracker.observe_cycle("c7", ["a"], [1.0], [1])
    row = tracker.observation("c9", ["a"], now=9).features[0]
    assert row[COL["since_run"]] == pytest.approx(math.log1p(2) / math.log1p(100))
    assert tracker.cycles_observed == 1
    assert tracker.known_tests() == 1


def test_a_repeat_in_a_cycle_is_folded() -> None:
    tracker = HistoryTracker()
    tracker.observe_cycle("c0", ["a", "a"], [1.0, 2.0], [1, 0])
    obs = tracker.observation("c1", ["a"], now=1)
    assert obs.features[0][COL["fail_rate"]] == 1.0
    assert obs.durations.tolist() == [3.0]


def test_the_cycles_own_verdicts_never_reach_its_features() -> None:
    def features(last: int) -> np.ndarray:
        tracker = HistoryTracker()
        tracker.observe_cycle("c0", ["a", "b"], [1.0, 2.0], [1, 0], now=0)
        obs = tracker.observation("c1", ["a", "b"], now=1)
        tracker.observe_cycle("c1", ["a", "b"], [1.0, 2.0], [last, last], now=1)
        return obs.features

    assert np.array_equal(features(0), features(1))


def test_lengths_must_agree() -> None:
    with pytest.raises(ValueError, match="length"):
        HistoryTracker().observe_cycle("c0", ["a"], [1.0, 2.0], [0])


def test_from_events_one_cycle_per_run_final_attempt_wins() -> None:
    events = [
        TestRunStarted(run_id="r1"),
        TestCaseExecuted(test_id="x", run_id="r1", outcome="failed", duration_s=1.0),
        TestCaseExecuted(test_id="x", run_id="r1", outcome="passed", duration_s=2.0, attempt=2),
        TestCaseExecuted(test_id="y", run_id="r1", outcome="error", duration_s=0.5),
        TestCaseExecuted(test_id="z", run_id="r1", outcome="skipped"),
        TestRunFinished(run_id="r1", total=2, passed=1, failed=1),
        TestRunStarted(run_id="empty"),
        TestCaseExecuted(test_id="x", run_id="r2", outcome="passed", duration_s=1.5),
    ]
    assert from_events(events) == [
        Cycle(cycle_id="r1", test_ids=("x", "y"), durations=(3.0, 0.5), verdicts=(0, 1)),
        Cycle(cycle_id="r2", test_ids=("x",), durations=(1.5,), verdicts=(0,)),
    ]


def test_from_events_leaves_out_runs_without_their_commit_marker() -> None:
    # The history shows a started run only once its TestRunFinished is stored; learning
    # must not train on the partial run a killed session or a failed ingest left behind.
    events = [
        TestRunStarted(run_id="cut-short"),
        TestCaseExecuted(test_id="x", run_id="cut-short", outcome="failed", duration_s=1.0),
        TestRunStarted(run_id="whole"),
        TestCaseExecuted(test_id="x", run_id="whole", outcome="passed", duration_s=2.0),
        TestRunFinished(run_id="whole", total=1, passed=1, failed=0),
        TestCaseExecuted(test_id="x", run_id="undeclared", outcome="failed", duration_s=3.0),
    ]
    cycles = from_events(events)
    assert [c.cycle_id for c in cycles] == ["whole", "undeclared"]
    # Completing the run later (its marker appended) brings it in, in first-seen order.
    completed = from_events(
        [*events, TestRunFinished(run_id="cut-short", total=1, passed=0, failed=1)]
    )
    assert [c.cycle_id for c in completed] == ["cut-short", "whole", "undeclared"]
    assert completed[0].verdicts == (1,)


def test_from_iofrol_events_matches_the_file_reader(tmp_path: Path) -> None:
    from aqe.ingest.iofrol import cycle_events, read_iofrol

    path = _write_iofrol(tmp_path)
    per_run = from_events(e for _, evs in cycle_events(read_iofrol(path)) for e in evs)
    assert [c.cycle_id for c in per_run] == ["iofrol-0001", "iofrol-0001-rerun1", "iofrol-0002"]


HEADER = "Id;Name;Duration;CalcPrio;LastRun;LastResults;Verdict;Cycle\n"


def _write_iofrol(tmp_path: Path) -> Path:
    path = tmp_path / "iofrol.csv"
    path.write_text(
        HEADER
        + "1;A;1000;0;2015-02-13 16:13:00;[];1;1\n"
        + "2;B;2500;0;2015-02-13 16:14:00;[];0;1\n"
        + "3;A;3000;0;2015-02-13 16:15:00;[1];0;1\n"
        + "4;B;2000;0;2015-02-14 16:13:00;[0];0;2\n",
        encoding="utf-8",
    )
    return path


def test_cycles_from_iofrol_one_cycle_per_cycle_value(tmp_path: Path) -> None:
    cycles = cycles_from_iofrol(_write_iofrol(tmp_path))
    assert cycles == [
        Cycle(
            cycle_id="iofrol-0001",
            test_ids=("iofrol.A", "iofrol.B"),
            durations=(4.0, 2.5),  # A ran twice: 1 s + 3 s
            verdicts=(1, 0),  # A failed once: the cycle counts it failed
        ),
        Cycle(cycle_id="iofrol-0002", test_ids=("iofrol.B",), durations=(2.0,), verdicts=(0,)),
    ]
    assert cycles[0].failures == 1
