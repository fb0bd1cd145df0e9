"""Ranking, APFD / NAPFD, and the per-test reward functions of a ranked cycle.

Conventions:

* An *order* is a permutation of a cycle's test indices, first-run first (:func:`rank`).
  Metrics take the verdicts (1 failed, 0 passed) and durations *in run order*.
* Each failing test counts as one fault (the IOF/ROL data has no fault ids), so a
  fault's detection position is its failing test's position.
* A cycle without failures has no APFD: :func:`apfd` and :func:`napfd` return None and
  the evaluator leaves such cycles out of its means (as the published IOF/ROL numbers do).
* Time budget (RETECS, Spieker et al. 2017; Qu et al.): ``budget * total duration`` is
  available; tests are taken in order and a test that does not fit in what is left is
  skipped (later, shorter ones may still fit). Positions count scheduled tests only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from aqe.errors import ConfigError

__all__ = [
    "REWARDS",
    "RewardFn",
    "apfd",
    "failcount",
    "mean",
    "napfd",
    "normalised",
    "optimal_apfd",
    "rank",
    "reward",
    "scheduled",
    "tcfail",
    "timerank",
]


def rank(priorities: ArrayLike, test_ids: Sequence[str]) -> NDArray[np.intp]:
    """Indices of the tests in run order: highest priority first.

    Ties (and NaN, which ranks last) are broken by test id, ascending, so the order
    depends on nothing but its inputs.
    """
    p = np.asarray(priorities, dtype=np.float64)
    if p.shape != (len(test_ids),):
        raise ValueError(f"{p.shape[0] if p.ndim else 0} priorities for {len(test_ids)} tests")
    keys = np.where(np.isnan(p), -np.inf, p)
    return np.asarray(
        sorted(range(len(test_ids)), key=lambda i: (-keys[i], test_ids[i])), dtype=np.intp
    )


def apfd(order_verdicts: Sequence[int] | NDArray[np.integer]) -> float | None:
    """Average Percentage of Faults Detected of one ranked cycle.

    ``APFD = 1 - sum(TF_i) / (n * m) + 1 / (2n)``, ``TF_i`` the 1-based position of the
    ``i``-th failing test, ``n`` tests, ``m`` failing tests.

    Returns:
        APFD in ``(0, 1)``, or None when no test failed (undefined).
    """
    v = np.asarray(order_verdicts)
    n = int(v.size)
    positions = np.flatnonzero(v) + 1
    m = int(positions.size)
    if m == 0:
        return None
    return float(1.0 - positions.sum() / (n * m) + 1.0 / (2 * n))


def optimal_apfd(tests: int, failures: int) -> float | None:
    """The best APFD a cycle of ``tests`` items with ``failures`` failing ones allows
    (failures first): ``1 - m / (2n)``; None without failures.

    Random orders score 0.5 in expectation on every cycle: the failures' positions sum
    to ``m (n + 1) / 2`` on average, and ``1 - (n + 1) / (2n) + 1 / (2n) = 1/2``.
    """
    if failures <= 0 or tests <= 0:
        return None
    return 1.0 - failures / (2 * tests)


def normalised(score: float | None, optimal: float | None, random: float = 0.5) -> float | None:
    """``(score - random) / (optimal - random)``: 0 is random, 1 the optimum (None when
    undefined)."""
    if score is None or optimal is None or optimal <= random:
        return None
    return (score - random) / (optimal - random)


def scheduled(
    order_durations: Sequence[float] | NDArray[np.floating], budget: float = 1.0
) -> NDArray[np.bool_]:
    """Which tests (in run order) fit in ``budget * total duration``.

    Greedy in run order; a test that does not fit is skipped and the next one is
    tried. ``budget >= 1`` schedules everything.
    """
    d = np.asarray(order_durations, dtype=np.float64)
    if budget >= 1.0:
        return np.ones(d.size, dtype=np.bool_)
    available = budget * float(d.sum())
    out = np.zeros(d.size, dtype=np.bool_)
    used = 0.0
    for i, duration in enumerate(d):
        if used + duration <= available:
            used += duration
            out[i] = True
    return out


def napfd(
    order_verdicts: Sequence[int] | NDArray[np.integer],
    order_durations: Sequence[float] | NDArray[np.floating],
    budget: float = 0.5,
) -> float | None:
    """Normalised APFD under a time budget (RETECS / Qu et al.).

    ``NAPFD = p - sum(TF_i) / (n * m) + p / (2n)`` over the failures detected, with
    ``p`` = detected / all failures, ``TF_i`` the position among scheduled tests,
    ``n`` all tests of the cycle. With ``budget >= 1`` it equals :func:`apfd`.

    Returns:
        NAPFD in ``[0, 1)``, or None when no test failed.
    """
    v = np.asarray(order_verdicts)
    n = int(v.size)
    m = int(np.count_nonzero(v))
    if m == 0:
        return None
    mask = scheduled(order_durations, budget)
    positions = np.cumsum(mask)[mask & (v != 0)]
    p = positions.size / m
    return float(p - positions.sum() / (n * m) + p / (2 * n))


RewardFn = Callable[
    [NDArray[np.intp], NDArray[np.int8], NDArray[np.float64], float], NDArray[np.float32]
]
"""``(order, verdicts, durations, budget) -> rewards``; verdicts, durations and the
rewards are indexed like the cycle's tests (not in run order)."""


def _in_budget(
    order: NDArray[np.intp], durations: NDArray[np.float64], budget: float
) -> NDArray[np.bool_]:
    mask = np.zeros(order.size, dtype=np.bool_)
    mask[order] = scheduled(durations[order], budget)
    return mask


def tcfail(
    order: NDArray[np.intp],
    verdicts: NDArray[np.int8],
    durations: NDArray[np.float64],
    budget: float = 1.0,
) -> NDArray[np.float32]:
    """RETECS "test case failure" reward: 1 for a failed test that was scheduled, else 0."""
    sched = _in_budget(order, durations, budget)
    out: NDArray[np.float32] = ((verdicts != 0) & sched).astype(np.float32)
    return out


def failcount(
    order: NDArray[np.intp],
    verdicts: NDArray[np.int8],
    durations: NDArray[np.float64],
    budget: float = 1.0,
) -> NDArray[np.float32]:
    """RETECS "failure count" reward: every test gets the number of failures detected
    by the scheduled tests (the same value for all; the cycle is judged as a whole)."""
    sched = _in_budget(order, durations, budget)
    detected = int(np.count_nonzero((verdicts != 0) & sched))
    return np.full(verdicts.size, float(detected), dtype=np.float32)


def timerank(
    order: NDArray[np.intp],
    verdicts: NDArray[np.int8],
    durations: NDArray[np.float64],
    budget: float = 1.0,
) -> NDArray[np.float32]:
    """Rank- and budget-aware reward (ours), in ``[-1, 1]``.

    * a failed test run within the budget: ``1 - (passed tests run before it) / n``,
      so the earlier a failure is found the closer to 1;
    * a failed test left out by the budget: -1 (a missed fault);
    * a passed test run before the last detected failure: minus its share of the
      cycle's total duration (it delayed a detection);
    * any other passed test: 0.
    """
    n = order.size
    out = np.zeros(n, dtype=np.float32)
    if n == 0:
        return out
    sched = _in_budget(order, durations, budget)
    failed = verdicts != 0
    total = float(durations.sum())
    passes_before = 0
    last_detect = -1
    for pos, i in enumerate(order):
        if failed[i] and sched[i]:
            last_detect = pos
    for pos, i in enumerate(order):
        if failed[i]:
            out[i] = 1.0 - passes_before / n if sched[i] else -1.0
        else:
            if sched[i]:
                passes_before += 1
                if pos < last_detect and total > 0:
                    out[i] = -float(durations[i]) / total
    return out


REWARDS: dict[str, RewardFn] = {"tcfail": tcfail, "failcount": failcount, "timerank": timerank}
"""Reward functions by name."""


def reward(name: str) -> RewardFn:
    """The reward function called ``name``.

    Raises:
        ConfigError: no such reward.
    """
    try:
        return REWARDS[name]
    except KeyError:
        raise ConfigError(f"unknown reward {name!r}; known: {', '.join(sorted(REWARDS))}") from None


def mean(values: Sequence[float | None]) -> float | None:
    """The mean of the values that are not None (None when there are none)."""
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return sum(kept) / len(kept) if kept else None
