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
from aqe.learning.metrics import apfd, mean, napfd, rank
from aqe.learning.metrics import reward as reward_fn

__all__ = ["CycleScore", "EvalReport", "evaluate_many", "evaluate_online", "format_table"]

ProgressFn = Callable[[int, int], None]
"""``on_progress(done, total)`` after each cycle."""


class CycleScore(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """One cycle's result: tests, failures, APFD and NAPFD (None without failures)."""

    cycle: str
    tests: int
    failures: int
    apfd: float | None
    napfd: float | None


class EvalReport(msgspec.Struct, frozen=True, kw_only=True):
    """What one policy achieved on one replayed history.

    Means are over the cycles with at least one failure (APFD is undefined elsewhere).
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


def evaluate_online(
    policy: Policy,
    cycles: Sequence[Cycle],
    *,
    budget: float = 0.5,
    train_every: int = 1,
    reward: str = "tcfail",
    on_progress: ProgressFn | None = None,
    on_transitions: Callable[[str, list[Transition]], None] | None = None,
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

    Returns:
        Per-cycle scores and totals.

    Raises:
        ConfigError: unknown reward name.
    """
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
            obs = tracker.observation(cycle.cycle_id, cycle.test_ids, now=index)
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
                cycle.cycle_id, cycle.test_ids, cycle.durations, cycle.verdicts, now=index
            )
        if on_progress is not None:
            on_progress(index + 1, total)
    failing = [s for s in scores if s.failures]
    return EvalReport(
        policy=policy.name,
        seed=int(getattr(policy, "seed", 0)),
        budget=budget,
        reward=reward_name,
        cycles=len(scores),
        failing_cycles=len(failing),
        mean_apfd=mean([s.apfd for s in failing]),
        mean_napfd=mean([s.napfd for s in failing]),
        train_seconds=train_s,
        inference_seconds=infer_s,
        transitions=transitions,
        updates=updates,
        hyperparameters=policy.hyperparameters(),
        per_cycle=scores,
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
                policy, cycles, budget=budget, train_every=train_every, on_progress=progress
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
