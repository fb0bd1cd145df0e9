"""Online evaluation: ordering of calls, no peeking, known orders, IOF/ROL smoke."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aqe.learning.base import CycleObservation, CycleOutcome, TrainStats, Transition
from aqe.learning.baselines import FailureCountPolicy, RandomPolicy
from aqe.learning.evaluate import EvalReport, evaluate_many, evaluate_online, format_table
from aqe.learning.features import Cycle


class Spy:
    """A policy that records what it is shown and when; it would cheat if it could."""

    name = "spy"
    kind = "heuristic"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.seen: list[CycleObservation] = []

    def act(self, obs: CycleObservation) -> np.ndarray:
        self.calls.append(f"act {obs.cycle}")
        self.seen.append(obs)
        return np.zeros(len(obs.test_ids))

    def observe(
        self, obs: CycleObservation, priorities: np.ndarray, outcome: CycleOutcome
    ) -> list[Transition]:
        self.calls.append(f"observe {obs.cycle}")
        return []

    def train(self) -> TrainStats:
        self.calls.append("train")
        return TrainStats(updates=1)

    def hyperparameters(self) -> dict[str, Any]:
        return {}

    def save(self, directory: Path) -> None:
        pass

    def load(self, directory: Path) -> None:
        pass

    def set_training(self, training: bool) -> None:
        pass


def _history(last_verdict: int, cycles: int = 4) -> list[Cycle]:
    out = [
        Cycle(
            cycle_id=f"c{t}",
            test_ids=("a", "b", "c"),
            durations=(1.0, 2.0, 3.0),
            verdicts=(t % 2, 0, 1),
        )
        for t in range(cycles - 1)
    ]
    out.append(
        Cycle(
            cycle_id=f"c{cycles - 1}",
            test_ids=("a", "b", "c"),
            durations=(1.0, 2.0, 3.0),
            verdicts=(last_verdict,) * 3,
        )
    )
    return out


def test_calls_come_in_order_and_train_every_is_honoured() -> None:
    spy = Spy()
    report = evaluate_online(spy, _history(0), train_every=2)  # type: ignore[arg-type]
    assert spy.calls == [
        "act c0", "observe c0",
        "act c1", "observe c1", "train",
        "act c2", "observe c2",
        "act c3", "observe c3", "train",
    ]  # fmt: skip
    assert report.updates == 2
    assert report.cycles == 4


def test_no_peeking_the_last_cycles_verdicts_do_not_change_what_the_policy_sees() -> None:
    seen = []
    for last in (0, 1):
        spy = Spy()
        evaluate_online(spy, _history(last))  # type: ignore[arg-type]
        seen.append(spy.seen)
    for zeros, ones in zip(*seen, strict=True):
        assert np.array_equal(zeros.features, ones.features)
        assert np.array_equal(zeros.durations, ones.durations)


def test_failure_count_finds_the_always_failing_test() -> None:
    # "t5" fails in every cycle among 10 tests; from cycle 2 on failure-count runs it
    # first: APFD = 1 - 1/10 + 1/20 = 0.95 (also the optimum)
    ids = tuple(f"t{i}" for i in range(10))
    cycles = [
        Cycle(
            cycle_id=f"c{t}",
            test_ids=ids,
            durations=(1.0,) * 10,
            verdicts=tuple(1 if i == 5 else 0 for i in range(10)),
        )
        for t in range(6)
    ]
    report = evaluate_online(FailureCountPolicy(), cycles)
    # cycle 1: no history, ties by id → t5 at position 6: 1 - 6/10 + 1/20 = 0.45
    assert report.per_cycle[0].apfd == pytest.approx(0.45)
    assert [s.apfd for s in report.per_cycle[1:]] == pytest.approx([0.95] * 5)
    assert report.mean_apfd == pytest.approx((0.45 + 5 * 0.95) / 6)
    optimal = evaluate_many(["optimal"], cycles)[0]
    assert optimal.mean_apfd == pytest.approx(0.95)
    assert report.transitions == 60


def test_cycles_without_failures_are_left_out_of_the_means() -> None:
    cycles = [
        Cycle(cycle_id="c0", test_ids=("a", "b"), durations=(1.0, 1.0), verdicts=(0, 0)),
        Cycle(cycle_id="c1", test_ids=("a", "b"), durations=(1.0, 1.0), verdicts=(1, 0)),
        Cycle(cycle_id="empty", test_ids=(), durations=(), verdicts=()),
    ]
    report = evaluate_online(FailureCountPolicy(), cycles)
    assert report.cycles == 2
    assert report.failing_cycles == 1
    assert report.per_cycle[0].apfd is None
    # ties by id: a first: 1 - 1/2 + 1/4
    assert report.mean_apfd == pytest.approx(0.75)


def test_same_seed_same_report() -> None:
    cycles = _history(1, cycles=8)
    one = evaluate_online(RandomPolicy(seed=7), cycles)
    two = evaluate_online(RandomPolicy(seed=7), cycles)
    assert one.per_cycle == two.per_cycle
    assert one.seed == 7


def test_evaluate_many_and_the_table() -> None:
    progress: list[tuple[str, int, int]] = []
    reports = evaluate_many(
        ["random", "failure-count"], _history(1), seed=1, on_progress=lambda *a: progress.append(a)
    )
    assert [r.policy for r in reports] == ["random", "failure-count"]
    assert progress[-1] == ("failure-count", 4, 4)
    table = format_table(reports)
    assert "failure-count" in table
    assert "APFD" in table


def test_evaluate_many_rejects_unknown_names_first() -> None:
    from aqe.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown algorithm"):
        evaluate_many(["random", "nope"], _history(1))


def _iofrol_reports() -> dict[str, EvalReport]:
    from aqe.ingest.iofrol import find_iofrol
    from aqe.learning.features import cycles_from_iofrol

    path = find_iofrol()
    if path is None:
        pytest.skip("$AQE_IOFROL names no file (unset it to use data/iofrol.csv.gz)")
    cycles = cycles_from_iofrol(path)
    names = ["random", "failure-count", "recent-failure", "duration-aware", "optimal"]
    return {r.policy: r for r in evaluate_many(names, cycles, seed=0)}


def test_iofrol_baselines_smoke() -> None:
    reports = _iofrol_reports()
    apfd = {k: r.mean_apfd or 0.0 for k, r in reports.items()}
    napfd = {k: r.mean_napfd or 0.0 for k, r in reports.items()}
    assert reports["random"].failing_cycles == 271
    assert apfd["random"] == pytest.approx(0.50, abs=0.03)
    assert apfd["failure-count"] > apfd["random"] + 0.05
    assert napfd["failure-count"] > napfd["random"] + 0.05
    assert apfd["optimal"] > apfd["failure-count"] + 0.1
