"""Protocols side by side, RETECS's heuristics, the random expectation, and no peeking
for every registered policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aqe.learning.base import CycleObservation
from aqe.learning.baselines import RetecsSortPolicy, RetecsWeightPolicy
from aqe.learning.evaluate import (
    CycleScore,
    across_seeds,
    evaluate_online,
    expected_random,
    summarise,
)
from aqe.learning.features import Cycle, HistoryTracker, cycles_from_iofrol_rows
from aqe.learning.metrics import apfd, normalised, optimal_apfd
from aqe.learning.registry import ALGORITHMS, ORACLES, make_policy


def _cycles(count: int = 7, tests: int = 10, seed: int = 3) -> list[Cycle]:
    """A history where a few tests fail in bursts, so policies have something to learn."""
    rng = np.random.default_rng(seed)
    ids = tuple(f"t{i}" for i in range(tests))
    out = []
    for c in range(count):
        verdicts = tuple(int(rng.random() < (0.6 if i in (2, 7) else 0.08)) for i in range(tests))
        out.append(
            Cycle(
                cycle_id=f"c{c}",
                test_ids=ids,
                durations=tuple(float(1 + i % 4) for i in range(tests)),
                verdicts=verdicts,
            )
        )
    return out


def test_optimal_apfd_and_the_random_expectation_are_exact() -> None:
    assert optimal_apfd(10, 1) == pytest.approx(apfd([1] + [0] * 9))
    assert optimal_apfd(4, 4) == pytest.approx(0.5)
    assert optimal_apfd(3, 0) is None
    # the mean APFD over every order of 5 tests with 2 failures is exactly 0.5
    from itertools import permutations

    scores = [apfd(p) for p in set(permutations([1, 1, 0, 0, 0]))]
    assert sum(s for s in scores if s is not None) / len(scores) == pytest.approx(0.5)
    assert normalised(0.75, 1.0) == pytest.approx(0.5)
    assert normalised(0.6, 0.5) is None


def test_expected_random_is_half_and_its_napfd_is_a_mean_over_shuffles() -> None:
    cycles = _cycles()
    report = expected_random(cycles, shuffles=400, budget=1.0)
    assert report.mean_apfd == pytest.approx(0.5)
    # with the whole budget NAPFD is APFD, so the shuffle mean is close to 0.5 too
    assert report.mean_napfd == pytest.approx(0.5, abs=0.03)
    assert report.normalised == pytest.approx(0.0)


def test_protocol_counts_which_cycles() -> None:
    scores = [
        CycleScore(cycle="one-test", tests=1, failures=1, apfd=0.5, napfd=0.5),
        CycleScore(cycle="all-fail", tests=8, failures=8, apfd=0.5, napfd=0.5),
        CycleScore(cycle="small", tests=3, failures=1, apfd=0.5, napfd=0.5),
        CycleScore(cycle="matters", tests=8, failures=1, apfd=0.9375, napfd=0.9),
        CycleScore(cycle="green", tests=8, failures=0, apfd=None, napfd=None),
    ]
    aqe = summarise(scores, "aqe")
    assert (aqe["failing_cycles"], aqe["order_cycles"]) == (4, 2)
    assert aqe["mean_apfd_order"] == pytest.approx((0.5 + 0.9375) / 2)
    rows = summarise(scores, "rows")  # 6+ items and a failure
    assert (rows["failing_cycles"], rows["order_cycles"]) == (2, 1)
    assert rows["normalised_order"] == pytest.approx(1.0)  # 1 - 1/16 is that cycle's optimum
    from aqe.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown protocol"):
        summarise(scores, "columns")


def _observation(histories: dict[str, list[int]]) -> CycleObservation:
    """An observation built by the real tracker from per-test verdicts (oldest first)."""
    tracker = HistoryTracker()
    length = max(len(h) for h in histories.values())
    for c in range(length):
        ran = [t for t, h in histories.items() if c < len(h)]
        tracker.observe_cycle(f"c{c}", ran, [1.0] * len(ran), [histories[t][c] for t in ran], now=c)
    return tracker.observation("next", [*histories, "new"], now=length)


def test_retecs_sort_puts_new_tests_first_then_recent_failures() -> None:
    obs = _observation(
        {
            "old-fail": [1, 0, 0, 0, 0],  # its failure is 5 verdicts back: out of the window
            "third-fail": [0, 0, 1, 0, 0],
            "fresh-fail": [0, 0, 0, 0, 1],
            "green": [0, 0, 0, 0, 0],
        }
    )
    order = np.argsort(-RetecsSortPolicy().act(obs), kind="stable")
    ranked = [obs.test_ids[i] for i in order]
    assert ranked[:3] == ["new", "fresh-fail", "third-fail"]
    assert set(ranked[3:]) == {"old-fail", "green"}
    weights = RetecsWeightPolicy().act(obs)
    assert weights[obs.test_ids.index("new")] > weights[obs.test_ids.index("green")]


@pytest.mark.parametrize("name", sorted(set(ALGORITHMS) - set(ORACLES)))
def test_no_peeking_shuffled_verdicts_of_the_current_cycle_leave_the_ranking(
    name: str,
) -> None:
    """Every policy ranks a cycle the same whatever that cycle's verdicts turn out to be."""
    history = _cycles()
    last = history[-1]
    shuffled = tuple(np.random.default_rng(1).permutation(last.verdicts).tolist())
    flipped = tuple(1 - v for v in last.verdicts)
    seen: dict[tuple[int, ...], list[np.ndarray]] = {}
    for verdicts in (last.verdicts, shuffled, flipped):
        cycles = [*history[:-1], Cycle(**{**_fields(last), "verdicts": verdicts})]
        policy = make_policy(name, seed=5)
        acted: list[np.ndarray] = []
        act = policy.act

        def recording(obs: CycleObservation, act: Any = act, acted: list[Any] = acted) -> Any:
            out = np.asarray(act(obs), dtype=np.float64)
            acted.append(out.copy())
            return out

        policy.act = recording  # type: ignore[method-assign]
        evaluate_online(policy, cycles)
        seen[verdicts] = acted
    assert shuffled != last.verdicts
    runs = list(seen.values())
    for other in runs[1:]:
        assert len(other) == len(runs[0]) == len(history)
        for a, b in zip(runs[0], other, strict=True):
            np.testing.assert_array_equal(a, b)


def _fields(cycle: Cycle) -> dict[str, Any]:
    return {f: getattr(cycle, f) for f in cycle.__struct_fields__}


def test_across_seeds_means_and_spread() -> None:
    cycles = _cycles()
    reports = [evaluate_online(make_policy("random", seed=s), cycles) for s in range(3)]
    summary = across_seeds(reports)
    values = [r.mean_apfd for r in reports]
    assert summary.mean["mean_apfd"] == pytest.approx(float(np.mean(values)))
    assert summary.std["mean_apfd"] == pytest.approx(float(np.std(values, ddof=1)))
    assert summary.seeds == [0, 1, 2]
    with pytest.raises(ValueError, match="different"):
        across_seeds([reports[0], evaluate_online(make_policy("failure-count"), cycles)])


def test_rows_protocol_items_share_their_tests_history(tmp_path: Path) -> None:
    csv = tmp_path / "mini.csv"
    header = "Id;Name;Duration;CalcPrio;LastRun;LastResults;Verdict;Cycle\n"
    rows = [
        "1;A;1000;0;2016-01-01 00:00:00;[];1;1",
        "2;B;2000;0;2016-01-01 00:00:00;[];0;1",
        "3;A;1000;0;2016-01-01 00:00:00;[1];0;1",
        "4;A;1000;0;2016-01-02 00:00:00;[0, 1];0;2",
        "5;B;2000;0;2016-01-02 00:00:00;[0];1;2",
    ]
    csv.write_text(header + "\n".join(rows) + "\n", encoding="utf-8")
    cycles = cycles_from_iofrol_rows(csv)
    assert [len(c.test_ids) for c in cycles] == [3, 2]
    first = cycles[0]
    assert first.test_ids[2] == f"{first.test_ids[0]}#2"
    assert first.keys[2] == first.keys[0]
    assert first.verdicts == (1, 0, 0)
    report = evaluate_online(make_policy("failure-count"), cycles, protocol="rows")
    assert report.failing_cycles == 0  # fewer than 6 rows each
    assert report.cycles == 2
