"""Helpers shared by the discrete-action policies: buckets, reward targets, memory, files.

Nobody's contract; :mod:`aqe.learning.algos.tabular` and
:mod:`aqe.learning.algos.policy_gradient` use it. No torch here.

A discrete action is a *priority bucket* ``0 .. n_buckets - 1`` (higher runs first). The
priority a policy returns is ``bucket + TIE_SCALE * tie`` with ``tie`` in ``[0, 1]`` the
policy's own expectation for the test, so ``floor(priority)`` gives the bucket back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from aqe.errors import ConfigError
from aqe.learning.base import CycleObservation, CycleOutcome, Transition, one_step_transitions

__all__ = [
    "HYPERPARAMETERS_FILE",
    "TIE_SCALE",
    "Memory",
    "Target",
    "buckets_of",
    "episode_transitions",
    "learning_targets",
    "position_rewards",
    "priorities_of",
    "read_hyperparameters",
    "transitions_of",
    "write_hyperparameters",
]

HYPERPARAMETERS_FILE = "hyperparameters.json"
TIE_SCALE = 0.5
"""Tie-breaks stay below the next bucket."""

Target = Literal["calibration", "penalised", "raw"]


def priorities_of(buckets: NDArray[np.int64], tie: NDArray[np.float64]) -> NDArray[np.float64]:
    """``bucket + TIE_SCALE * clip(tie, 0, 1)``, as float64."""
    return buckets.astype(np.float64) + TIE_SCALE * np.clip(tie, 0.0, 1.0)


def buckets_of(priorities: NDArray[np.float64], n_buckets: int) -> NDArray[np.int64]:
    """The bucket each priority fell in (clipped to the valid range)."""
    return np.clip(np.floor(np.asarray(priorities, dtype=np.float64)), 0, n_buckets - 1).astype(
        np.int64
    )


def learning_targets(
    actions: NDArray[np.int64], rewards: NDArray[np.float32], n_buckets: int, target: Target
) -> NDArray[np.float64]:
    """The reward the learner maximises for each ``(bucket, reward)`` pair.

    ``"raw"``: the evaluator's reward as it is; buckets matter only through what the
    reward makes of the rank (a budget, a rank-aware reward such as ``timerank``).

    ``"calibration"``: ``-(a / (n_buckets - 1) - clip(r, 0, 1)) ** 2``. A bucket is read as
    a claim about the reward, so the best bucket in a state is the one nearest the
    expected (clipped) reward. This makes the bucket carry information even when the
    reward ignores the ranking (``tcfail`` without a budget is just the verdict).
    *With* a budget it is self-fulfilling: a failing test put in a low bucket runs
    after the budget, earns 0 and so proves the low claim right, while in a high
    bucket it would be judged against 1 and pay for every cycle it passes. Bucket 0
    is then the safe claim, and safest for the tests most likely to fail; a learner
    that settles there ranks them last (A2C did: APFD 0.43 on IOF/ROL, random 0.51).

    ``"penalised"``: ``r - (a / (n_buckets - 1) - clip(r, 0, 1)) ** 2``, the raw reward
    less the calibration error. For a test failing with probability ``p`` and run
    within the budget, the expected target under ``tcfail`` is ``2 p c - c ** 2`` at
    claim ``c``: best at ``c = p``, worth ``p ** 2``, more than the 0 of hiding, so
    the buckets still grade the tests but hiding no longer pays; a rank-aware reward
    (``timerank``: -1 for a missed failure) widens the gap.
    """
    r = np.asarray(rewards, dtype=np.float64)
    if target == "raw":
        return r
    claim = actions.astype(np.float64) / float(n_buckets - 1)
    penalty = (claim - np.clip(r, 0.0, 1.0)) ** 2
    if target == "penalised":
        return r - penalty
    return -penalty


def check_target(target: str) -> Target:
    """``target`` if it is a known learning target.

    Raises:
        ConfigError: it is not.
    """
    if target == "calibration":
        return "calibration"
    if target == "raw":
        return "raw"
    if target == "penalised":
        return "penalised"
    raise ConfigError(f"unknown learning target {target!r}; known: calibration, penalised, raw")


def transitions_of(
    policy: str, obs: CycleObservation, actions: NDArray[np.int64], outcome: CycleOutcome
) -> list[Transition]:
    """One-step transitions (``done``, ``next_state == state``) for a ranked cycle."""
    return one_step_transitions(policy, obs, actions, outcome.rewards)


def position_rewards(order_verdicts: NDArray[np.integer[Any]]) -> NDArray[np.float64]:
    """Per placement of a sequentially ordered cycle (verdicts in run order), the reward
    ``(n - k + 0.5) / n`` of a failing test at 1-based position ``k``, else 0: that
    failure's share of APFD, so the rewards sum to ``m * APFD`` (``m`` failures)."""
    failed = np.asarray(order_verdicts) != 0
    n = failed.size
    share = (n - np.arange(1, n + 1, dtype=np.float64) + 0.5) / max(n, 1)
    out: NDArray[np.float64] = np.where(failed, share, 0.0)
    return out


def episode_transitions(
    policy: str,
    obs: CycleObservation,
    order: Sequence[int] | NDArray[np.integer[Any]],
    rewards: Sequence[float] | NDArray[np.floating[Any]],
    actions: Sequence[float] | None = None,
) -> list[Transition]:
    """One transition per placement of a cycle ordered as an episode: in run order,
    ``next_state`` the next placed test's features, only the last ``done``. ``action``
    is ``actions[k]`` when given, else the priority ``n - k`` of the ``k``-th pick."""
    n = len(order)
    out: list[Transition] = []
    states = [tuple(float(v) for v in obs.features[int(i)]) for i in order]
    for k, i in enumerate(order):
        last = k == n - 1
        out.append(
            Transition(
                cycle=obs.cycle,
                test_id=obs.test_ids[int(i)],
                policy=policy,
                state=states[k],
                action=float(n - k) if actions is None else float(actions[k]),
                reward=float(rewards[k]),
                next_state=states[k] if last else states[k + 1],
                done=last,
            )
        )
    return out


class Memory:
    """A bounded replay memory of one-step decisions (the newest ``capacity`` kept).

    Each row: state, bucket, reward, the behaviour policy's log-probability of the
    bucket (0 where unknown) and the index of the cycle it came from.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ConfigError(f"memory capacity must be positive, got {capacity}")
        self.capacity = capacity
        self.states = np.zeros((0, 0), dtype=np.float32)
        self.actions = np.zeros(0, dtype=np.int64)
        self.rewards = np.zeros(0, dtype=np.float32)
        self.logps = np.zeros(0, dtype=np.float32)
        self.cycles = np.zeros(0, dtype=np.int64)
        self.cycles_added = 0

    def __len__(self) -> int:
        return int(self.actions.size)

    def add(
        self,
        states: NDArray[np.float32],
        actions: NDArray[np.int64],
        rewards: NDArray[np.float32],
        logps: NDArray[np.float32] | None = None,
    ) -> None:
        """Append one cycle's decisions, dropping the oldest beyond capacity."""
        n = actions.size
        if logps is None:
            logps = np.zeros(n, dtype=np.float32)
        if len(self) == 0:
            self.states = np.zeros((0, states.shape[1]), dtype=np.float32)
        keep = slice(max(0, len(self) + n - self.capacity), None)
        self.states = np.concatenate([self.states, states.astype(np.float32)])[keep]
        self.actions = np.concatenate([self.actions, actions.astype(np.int64)])[keep]
        self.rewards = np.concatenate([self.rewards, rewards.astype(np.float32)])[keep]
        self.logps = np.concatenate([self.logps, logps.astype(np.float32)])[keep]
        cycle = np.full(n, self.cycles_added, dtype=np.int64)
        self.cycles = np.concatenate([self.cycles, cycle])[keep]
        self.cycles_added += 1

    def last_cycles(self, count: int) -> NDArray[np.int64]:
        """Row indices of the decisions of the newest ``count`` cycles."""
        return np.flatnonzero(self.cycles >= self.cycles_added - count).astype(np.int64)

    def last_rows(self, count: int) -> NDArray[np.int64]:
        """Row indices of the newest ``count`` decisions."""
        return np.arange(max(0, len(self) - count), len(self), dtype=np.int64)


def write_hyperparameters(directory: Path, name: str, seed: int, hp: dict[str, Any]) -> None:
    """Write ``hyperparameters.json`` (algorithm, seed, hyperparameters)."""
    directory.mkdir(parents=True, exist_ok=True)
    doc = {"algorithm": name, "seed": seed, "hyperparameters": hp}
    (directory / HYPERPARAMETERS_FILE).write_text(
        json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )


def read_hyperparameters(directory: Path, name: str) -> dict[str, Any]:
    """The hyperparameters :func:`write_hyperparameters` wrote for ``name``.

    Raises:
        ConfigError: the file is missing, unreadable or written by another algorithm.
    """
    path = directory / HYPERPARAMETERS_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read saved hyperparameters ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("algorithm") != name:
        raise ConfigError(f"{path}: not a saved {name} policy")
    hp = doc.get("hyperparameters")
    if not isinstance(hp, dict):
        raise ConfigError(f"{path}: no hyperparameters")
    return hp


def as_int_tuple(values: Sequence[int] | None) -> tuple[int, ...] | None:
    """``values`` as a tuple of ints (None stays None)."""
    return None if values is None else tuple(int(v) for v in values)
