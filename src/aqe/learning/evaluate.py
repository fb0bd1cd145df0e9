"""Online evaluation: replay a history cycle by cycle, rank, score, learn, move on.

For each cycle, in order (:func:`evaluate_online`):

1. ``obs`` = the tracker's observation: features from earlier cycles only;
2. ``priorities = policy.act(obs)``; the order is :func:`aqe.learning.metrics.rank`
   (ties by test id);
3. APFD and NAPFD of that order from the cycle's true verdicts and durations;
4. ``outcome`` with per-test rewards, ``policy.observe(obs, priorities, outcome)``;
5. ``policy.train()`` every ``train_every`` cycles;
6. the tracker records the cycle, so the next observation can use it.

Nothing of cycle ``t`` reaches the policy before step 4 of cycle ``t`` — except for
an oracle (a policy with ``oracle = True``, i.e. :class:`OptimalPolicy`), which is
told the verdicts on purpose.

Protocols (:data:`PROTOCOLS`) decide which cycles the means count:

* ``aqe``: items are tests (reruns folded); means over the cycles with a failure,
  and separately over the cycles where order can matter (at least two tests, not
  all failing: elsewhere every order scores APFD 0.5);
* ``rows``: items are CSV rows (Bagherzadeh, Kahani and Briand, TSE 2021; load with
  :func:`aqe.learning.features.cycles_from_iofrol_rows`); means over the cycles with
  at least 6 rows and a failure. Every cycle is still replayed and learnt from.

The normalised score is ``(APFD - 0.5) / (optimal APFD - 0.5)`` over the counted
cycles (0.5 is a random order's expectation, exactly; see
:func:`aqe.learning.metrics.optimal_apfd`).

Rewards use the function named by the policy's ``reward`` attribute when it has one
(``"tcfail"``, ``"failcount"``, ``"timerank"``; see :mod:`aqe.learning.metrics`),
else the ``reward`` argument, with the evaluation's time budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import numpy as np

from aqe.learning.base import CycleOutcome, Policy, Transition
from aqe.learning.features import Cycle, HistoryTracker
from aqe.learning.metrics import apfd, mean, napfd, normalised, optimal_apfd, rank
from aqe.learning.metrics import reward as reward_fn

__all__ = [
    "PROTOCOLS",
    "SEED_FIELDS",
    "CycleScore",
    "EvalReport",
    "SeedSummary",
    "across_seeds",
    "counted",
    "evaluate_many",
    "evaluate_online",
    "expected_random",
    "format_table",
    "order_matters",
    "summarise",
]

PROTOCOLS: tuple[str, ...] = ("aqe", "rows")
"""Evaluation protocols (see the module docstring)."""
ROWS_MIN_ITEMS = 6
"""The rows protocol counts cycles with at least this many rows."""

ProgressFn = Callable[[int, int], None]
"""``on_progress(done, total)`` after each cycle."""


class CycleScore(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """One cycle's result: tests, failures, APFD and NAPFD (None without failures)."""

    cycle: str
    tests: int
    failures: int
    apfd: float | None
    napfd: float | None


def counted(score: CycleScore, protocol: str = "aqe") -> bool:
    """Whether the protocol's means count this cycle (a failure; ``rows``: 6+ rows)."""
    if not score.failures:
        return False
    return protocol != "rows" or score.tests >= ROWS_MIN_ITEMS


def order_matters(score: CycleScore, protocol: str = "aqe") -> bool:
    """Counted, at least two items and not all failing (else every order ties)."""
    return counted(score, protocol) and score.tests >= 2 and score.failures < score.tests


class EvalReport(msgspec.Struct, frozen=True, kw_only=True):
    """What one policy achieved on one replayed history.

    ``mean_*`` are over the protocol's counted cycles (``failing_cycles`` of them; APFD
    is undefined without a failure), ``*_order`` over those where order can matter;
    ``normalised*`` = (APFD - 0.5) / (optimal - 0.5) over the same cycles.
    """

    policy: str
    seed: int
    budget: float
    reward: str
    cycles: int
    failing_cycles: int
    mean_apfd: float | None
    mean_napfd: float | None
    train_seconds: float
    inference_seconds: float
    transitions: int
    updates: int
    hyperparameters: dict[str, Any] = {}
    per_cycle: list[CycleScore] = []
    protocol: str = "aqe"
    order_cycles: int = 0
    mean_apfd_order: float | None = None
    mean_napfd_order: float | None = None
    optimal_apfd: float | None = None
    optimal_apfd_order: float | None = None
    normalised: float | None = None
    normalised_order: float | None = None


def summarise(scores: Sequence[CycleScore], protocol: str) -> dict[str, Any]:
    """The protocol's means of per-cycle scores, as :class:`EvalReport` fields.

    Raises:
        ConfigError: unknown protocol.
    """
    if protocol not in PROTOCOLS:
        from aqe.errors import ConfigError

        raise ConfigError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    kept = [s for s in scores if counted(s, protocol)]
    order = [s for s in kept if order_matters(s, protocol)]
    best = mean([optimal_apfd(s.tests, s.failures) for s in kept])
    best_order = mean([optimal_apfd(s.tests, s.failures) for s in order])
    score = mean([s.apfd for s in kept])
    score_order = mean([s.apfd for s in order])
    return {
        "protocol": protocol,
        "failing_cycles": len(kept),
        "mean_apfd": score,
        "mean_napfd": mean([s.napfd for s in kept]),
        "order_cycles": len(order),
        "mean_apfd_order": score_order,
        "mean_napfd_order": mean([s.napfd for s in order]),
        "optimal_apfd": best,
        "optimal_apfd_order": best_order,
        "normalised": normalised(score, best),
        "normalised_order": normalised(score_order, best_order),
    }


def evaluate_online(
    policy: Policy,
    cycles: Sequence[Cycle],
    *,
    budget: float = 0.5,
    train_every: int = 1,
    reward: str = "tcfail",
    on_progress: ProgressFn | None = None,
    on_transitions: Callable[[str, list[Transition]], None] | None = None,
    protocol: str = "aqe",
) -> EvalReport:
    """Replay ``cycles`` through ``policy`` (see the module docstring).

    Args:
        policy: the policy, as built (training is switched on).
        cycles: the history, oldest first.
        budget: the NAPFD time budget, a fraction of each cycle's total duration.
        train_every: call ``policy.train()`` after every ``train_every`` cycles.
        reward: reward function name, unless the policy names its own.
        on_progress: called with ``(done, total)`` after each cycle.
        on_transitions: called with ``(cycle id, transitions)`` after each cycle's
            feedback, e.g. to record the experience as events.
        protocol: which cycles the means count (:data:`PROTOCOLS`).

    Returns:
        Per-cycle scores and totals.

    Raises:
        ConfigError: unknown reward name or protocol.
    """
    summarise([], protocol)  # an unknown protocol fails before the replay
    if train_every < 1:
        raise ValueError("train_every must be at least 1")
    reward_name = str(getattr(policy, "reward", reward))
    score_rewards = reward_fn(reward_name)
    oracle = bool(getattr(policy, "oracle", False))
    policy.set_training(True)
    tracker = HistoryTracker()
    scores: list[CycleScore] = []
    infer_s = train_s = 0.0
    transitions = updates = 0
    total = len(cycles)
    for index, cycle in enumerate(cycles):
        verdicts = np.asarray(cycle.verdicts, dtype=np.int8)
        durations = np.asarray(cycle.durations, dtype=np.float64)
        if cycle.test_ids:
            obs = tracker.observation(cycle.cycle_id, cycle.keys, now=index)
            if oracle:
                policy.reveal(cycle.cycle_id, verdicts, durations)  # type: ignore[attr-defined]
            started = time.perf_counter()
            priorities = np.asarray(policy.act(obs), dtype=np.float64)
            order = rank(priorities, cycle.test_ids)
            infer_s += time.perf_counter() - started
            scores.append(
                CycleScore(
                    cycle=cycle.cycle_id,
                    tests=len(cycle.test_ids),
                    failures=int(np.count_nonzero(verdicts)),
                    apfd=apfd(verdicts[order]),
                    napfd=napfd(verdicts[order], durations[order], budget),
                )
            )
            outcome = CycleOutcome(
                verdicts=verdicts,
                durations=durations,
                rewards=score_rewards(order, verdicts, durations, budget),
            )
            recorded = policy.observe(obs, priorities, outcome)
            transitions += len(recorded)
            if on_transitions is not None:
                on_transitions(cycle.cycle_id, recorded)
            if (index + 1) % train_every == 0:
                started = time.perf_counter()
                stats = policy.train()
                train_s += time.perf_counter() - started
                updates += stats.updates
            tracker.observe_cycle(
                cycle.cycle_id, cycle.keys, cycle.durations, cycle.verdicts, now=index
            )
        if on_progress is not None:
            on_progress(index + 1, total)
    return EvalReport(
        policy=policy.name,
        seed=int(getattr(policy, "seed", 0)),
        budget=budget,
        reward=reward_name,
        cycles=len(scores),
        **summarise(scores, protocol),
        train_seconds=train_s,
        inference_seconds=infer_s,
        transitions=transitions,
        updates=updates,
        hyperparameters=policy.hyperparameters(),
        per_cycle=scores,
    )


def expected_random(
    cycles: Sequence[Cycle],
    *,
    budget: float = 0.5,
    protocol: str = "aqe",
    shuffles: int = 200,
    seed: int = 0,
) -> EvalReport:
    """The random baseline as its expectation, not one seed's draw.

    APFD: exactly 0.5 on every cycle with a failure (see
    :func:`aqe.learning.metrics.optimal_apfd`). NAPFD under a budget has no simple
    closed form (the greedy budget skips long tests), so per cycle it is the mean over
    ``shuffles`` uniform orders (seeded): the standard error per cycle is at most
    ``0.5 / sqrt(shuffles)``, far less on the mean over cycles.
    """
    rng = np.random.default_rng(seed)
    scores: list[CycleScore] = []
    for cycle in cycles:
        if not cycle.test_ids:
            continue
        verdicts = np.asarray(cycle.verdicts, dtype=np.int8)
        durations = np.asarray(cycle.durations, dtype=np.float64)
        failures = int(np.count_nonzero(verdicts))
        expected_napfd: float | None = None
        if failures:
            draws = []
            for _ in range(shuffles):
                order = rng.permutation(verdicts.size)
                draws.append(napfd(verdicts[order], durations[order], budget))
            expected_napfd = mean(draws)
        scores.append(
            CycleScore(
                cycle=cycle.cycle_id,
                tests=verdicts.size,
                failures=failures,
                apfd=0.5 if failures else None,
                napfd=expected_napfd,
            )
        )
    return EvalReport(
        policy="random (expected)",
        seed=seed,
        budget=budget,
        reward="",
        cycles=len(scores),
        **summarise(scores, protocol),
        train_seconds=0.0,
        inference_seconds=0.0,
        transitions=0,
        updates=0,
        hyperparameters={"shuffles": shuffles},
        per_cycle=scores,
    )


SEED_FIELDS: tuple[str, ...] = (
    "mean_apfd",
    "mean_apfd_order",
    "mean_napfd",
    "normalised",
    "normalised_order",
    "train_seconds",
    "inference_seconds",
)
"""The report fields :func:`across_seeds` summarises."""


class SeedSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One policy over several seeds: per field of :data:`SEED_FIELDS`, the mean and
    the sample standard deviation (0 with one seed); None where a seed had None."""

    policy: str
    reward: str
    protocol: str
    seeds: list[int]
    failing_cycles: int
    order_cycles: int
    mean: dict[str, float | None]
    std: dict[str, float | None]


def across_seeds(reports: Sequence[EvalReport]) -> SeedSummary:
    """Summarise one policy's reports (one per seed).

    Raises:
        ValueError: no reports, or reports of different policies or protocols.
    """
    if not reports:
        raise ValueError("no reports to summarise")
    first = reports[0]
    if any(r.policy != first.policy or r.protocol != first.protocol for r in reports):
        raise ValueError("reports of different policies or protocols")
    means: dict[str, float | None] = {}
    stds: dict[str, float | None] = {}
    for field in SEED_FIELDS:
        values = [getattr(r, field) for r in reports]
        if any(v is None for v in values):
            means[field] = stds[field] = None
            continue
        arr = np.asarray(values, dtype=np.float64)
        means[field] = float(arr.mean())
        stds[field] = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return SeedSummary(
        policy=first.policy,
        reward=first.reward,
        protocol=first.protocol,
        seeds=[r.seed for r in reports],
        failing_cycles=first.failing_cycles,
        order_cycles=first.order_cycles,
        mean=means,
        std=stds,
    )


def evaluate_many(
    names: Sequence[str],
    cycles: Sequence[Cycle],
    seed: int = 0,
    *,
    budget: float = 0.5,
    train_every: int = 1,
    hyperparameters: dict[str, dict[str, Any]] | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
    protocol: str = "aqe",
) -> list[EvalReport]:
    """:func:`evaluate_online` for each registered policy name, one fresh policy each.

    Args:
        names: registry names (``"optimal"`` gives the oracle row).
        cycles: the history, oldest first.
        seed: passed to every policy's constructor.
        budget: the NAPFD budget.
        train_every: see :func:`evaluate_online`.
        hyperparameters: per name, extra constructor arguments.
        on_progress: called with ``(name, done, total)``.
        protocol: see :func:`evaluate_online`.

    Raises:
        ConfigError: an unknown name (before anything runs).
    """
    from aqe.learning.registry import ALGORITHMS, make_policy

    unknown = [n for n in names if n not in ALGORITHMS]
    if unknown:
        make_policy(unknown[0])  # raises the ConfigError that lists the names
    reports: list[EvalReport] = []
    for name in names:
        policy = make_policy(name, seed=seed, **(hyperparameters or {}).get(name, {}))
        progress = None if on_progress is None else _named_progress(on_progress, name)

        reports.append(
            evaluate_online(
                policy,
                cycles,
                budget=budget,
                train_every=train_every,
                on_progress=progress,
                protocol=protocol,
            )
        )
    return reports


def _named_progress(callback: Callable[[str, int, int], None], name: str) -> ProgressFn:
    def progress(done: int, total: int) -> None:
        callback(name, done, total)

    return progress


def format_table(reports: Sequence[EvalReport]) -> str:
    """A plain-text table: policy, cycles counted, mean APFD, mean NAPFD, seconds."""

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    header = (
        f"{'policy':<22} {'cycles':>6} {'failing':>7} {'APFD':>6} {'NAPFD':>6} "
        f"{'train s':>8} {'infer s':>8}"
    )
    lines = [header]
    for r in reports:
        lines.append(
            f"{r.policy:<22} {r.cycles:>6} {r.failing_cycles:>7} {cell(r.mean_apfd):>6} "
            f"{cell(r.mean_napfd):>6} {r.train_seconds:>8.2f} {r.inference_seconds:>8.2f}"
        )
    return "\n".join(lines)
