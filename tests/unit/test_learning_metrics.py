"""APFD, NAPFD, ranking and rewards against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aqe.errors import ConfigError
from aqe.learning.metrics import (
    REWARDS,
    apfd,
    failcount,
    mean,
    napfd,
    rank,
    reward,
    scheduled,
    tcfail,
    timerank,
)


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [
        # n=3, m=1, TF=1: 1 - 1/3 + 1/6 = 5/6
        ([1, 0, 0], 5 / 6),
        # n=3, m=1, TF=3: 1 - 3/3 + 1/6 = 1/6
        ([0, 0, 1], 1 / 6),
        # n=4, m=2, TF=2+4=6: 1 - 6/8 + 1/8 = 0.375
        ([0, 1, 0, 1], 0.375),
        # n=2, m=2, TF=1+2=3: 1 - 3/4 + 1/4 = 0.5
        ([1, 1], 0.5),
        # n=1, m=1: 1 - 1 + 1/2 = 0.5
        ([1], 0.5),
    ],
)
def test_apfd_by_hand(verdicts: list[int], expected: float) -> None:
    assert apfd(verdicts) == pytest.approx(expected)


@pytest.mark.parametrize("verdicts", [[], [0], [0, 0, 0]])
def test_apfd_is_undefined_without_failures(verdicts: list[int]) -> None:
    assert apfd(verdicts) is None
    assert napfd(verdicts, [1.0] * len(verdicts)) is None


def test_napfd_half_budget_by_hand() -> None:
    # durations 1 each, total 4, budget 2: tests 1-2 run. Failures at 1 (found) and 4
    # (missed): m=2, p=1/2, n=4: 1/2 - 1/(2*4) + (1/2)/(2*4) = 0.5 - 0.125 + 0.0625
    assert napfd([1, 0, 0, 1], [1, 1, 1, 1], 0.5) == pytest.approx(0.4375)


def test_napfd_skips_a_test_that_does_not_fit_and_goes_on() -> None:
    # total 10, budget 5: test 1 (4 s) runs, test 2 (5 s) does not fit, test 3 (1 s)
    # fits at scheduled position 2. Failures: test 2 missed, test 3 found at 2.
    # m=2, p=1/2, n=3: 1/2 - 2/(2*3) + (1/2)/(2*3) = 0.5 - 0.3333 + 0.0833 = 0.25
    assert scheduled([4, 5, 1], 0.5).tolist() == [True, False, True]
    assert napfd([0, 1, 1], [4, 5, 1], 0.5) == pytest.approx(0.25)


def test_napfd_with_full_budget_is_apfd() -> None:
    assert napfd([0, 1, 0, 1], [3, 1, 2, 9], 1.0) == pytest.approx(0.375)
    assert scheduled([1, 2], 1.0).all()


def test_napfd_of_nothing_found_is_zero() -> None:
    # the failing test alone exceeds the budget: p = 0
    assert napfd([0, 1], [1, 10], 0.5) == pytest.approx(0.0)


def test_rank_breaks_ties_by_test_id() -> None:
    # priority 2 first (index 1); indices 0 ("c") and 2 ("b") tie: "b" before "c"
    assert rank([1.0, 2.0, 1.0], ["c", "a", "b"]).tolist() == [1, 2, 0]


def test_rank_puts_nan_last_and_is_stable_under_permutation() -> None:
    assert rank([math.nan, 0.0], ["a", "b"]).tolist() == [1, 0]
    ids = ["t3", "t1", "t2"]
    order = rank(np.zeros(3), ids)
    assert [ids[i] for i in order] == ["t1", "t2", "t3"]


def test_rank_rejects_a_length_mismatch() -> None:
    with pytest.raises(ValueError, match="priorities"):
        rank([1.0], ["a", "b"])


# Shared case: run order [1, 0, 2]; verdicts (by test) [1, 0, 1]; durations [1, 1, 2].
ORDER = np.array([1, 0, 2], dtype=np.intp)
VERDICTS = np.array([1, 0, 1], dtype=np.int8)
DURATIONS = np.array([1.0, 1.0, 2.0])


def test_rewards_full_budget_by_hand() -> None:
    assert tcfail(ORDER, VERDICTS, DURATIONS, 1.0).tolist() == [1, 0, 1]
    assert failcount(ORDER, VERDICTS, DURATIONS, 1.0).tolist() == [2, 2, 2]
    # test 1 passes first (passes before = 1 for both failures): 1 - 1/3 each;
    # test 1 ran before the last detection: -(1 / 4 s total)
    assert timerank(ORDER, VERDICTS, DURATIONS, 1.0).tolist() == pytest.approx(
        [2 / 3, -0.25, 2 / 3]
    )


def test_rewards_half_budget_by_hand() -> None:
    # total 4 s, budget 2 s: tests 1 and 0 run, test 2 (2 s) does not fit
    assert tcfail(ORDER, VERDICTS, DURATIONS, 0.5).tolist() == [1, 0, 0]
    assert failcount(ORDER, VERDICTS, DURATIONS, 0.5).tolist() == [1, 1, 1]
    assert timerank(ORDER, VERDICTS, DURATIONS, 0.5).tolist() == pytest.approx([2 / 3, -0.25, -1.0])


def test_rewards_are_float32_and_named() -> None:
    for name, fn in REWARDS.items():
        assert reward(name) is fn
        assert fn(ORDER, VERDICTS, DURATIONS, 1.0).dtype == np.float32
    with pytest.raises(ConfigError, match="tcfail"):
        reward("nope")


def test_mean_skips_none() -> None:
    assert mean([None, 0.5, 1.0]) == pytest.approx(0.75)
    assert mean([None]) is None
