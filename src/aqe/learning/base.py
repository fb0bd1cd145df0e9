"""The shapes every prioritisation policy shares: a cycle to rank, feedback, the interface.

The problem (RETECS, Spieker et al. 2017): a CI cycle offers a set of tests; a policy
gives each a priority; tests run in descending priority. After the cycle the verdicts
are known and each test's decision earns a reward. For most policies each test's
scheduling decision is one step of its own (a contextual bandit, as in RETECS):
``done`` is true and ``next_state`` equals ``state`` (:func:`one_step_transitions`).
Q-learning and SARSA (:mod:`aqe.learning.algos.sequential`) order a cycle as an
episode of pick-next-test decisions instead: ``next_state`` is the next pick's state
and only the last step is ``done``.

No feature of a cycle may use that cycle's verdicts: :class:`CycleObservation` holds
only what was known before the cycle ran; :class:`CycleOutcome` comes after.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Protocol

import msgspec
import numpy as np
from numpy.typing import NDArray

__all__ = [
    "FEATURE_VERSION",
    "CycleObservation",
    "CycleOutcome",
    "Kind",
    "Policy",
    "TrainStats",
    "Transition",
    "one_step_transitions",
]

FEATURE_VERSION = 2
"""Bumped when :mod:`aqe.learning.features` changes what a state vector means."""

Kind = Literal["heuristic", "tabular", "discrete", "continuous", "offline"]


class CycleObservation(msgspec.Struct, frozen=True, kw_only=True):
    """What is known about one CI cycle before it runs.

    ``features[i]`` describes ``test_ids[i]`` (see :mod:`aqe.learning.features` for the
    columns, ``feature_names`` for their names); ``durations[i]`` is the test's
    expected duration in seconds (its last known duration, 0 when new).
    """

    cycle: str
    test_ids: tuple[str, ...]
    features: NDArray[np.float32]
    durations: NDArray[np.float64]
    feature_names: tuple[str, ...] = ()


class CycleOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What the cycle turned out to be: a verdict per test (1 failed, 0 passed),
    its real duration, and the per-test rewards of the ranking that was used."""

    verdicts: NDArray[np.int8]
    durations: NDArray[np.float64]
    rewards: NDArray[np.float32]


class Transition(msgspec.Struct, frozen=True, kw_only=True):
    """One decision and its reward; the unit of the experience buffers."""

    cycle: str
    test_id: str
    policy: str
    state: tuple[float, ...]
    action: float
    """The priority (continuous) or bucket index (discrete) chosen."""
    reward: float
    next_state: tuple[float, ...]
    done: bool = True


def one_step_transitions(
    policy: str,
    obs: CycleObservation,
    actions: NDArray[np.floating[Any]] | NDArray[np.integer[Any]],
    rewards: NDArray[np.floating[Any]],
) -> list[Transition]:
    """The transitions of a ranked cycle, one per test: ``done`` and ``next_state == state``."""
    out: list[Transition] = []
    for i, test_id in enumerate(obs.test_ids):
        state = tuple(float(v) for v in obs.features[i])
        out.append(
            Transition(
                cycle=obs.cycle,
                test_id=test_id,
                policy=policy,
                state=state,
                action=float(actions[i]),
                reward=float(rewards[i]),
                next_state=state,
                done=True,
            )
        )
    return out


class TrainStats(msgspec.Struct, frozen=True, kw_only=True):
    """What one ``train`` call did."""

    updates: int = 0
    loss: float | None = None
    seconds: float = 0.0


class Policy(Protocol):
    """A test prioritisation policy. Every method is deterministic given ``seed``."""

    name: str
    """Registry name, e.g. ``"ppo"`` or ``"failure-count"``."""
    kind: Kind

    def act(self, obs: CycleObservation) -> NDArray[np.float64]:
        """Priorities for ``obs.test_ids`` (higher runs first), shape ``(n,)``.

        Exploration, if any, happens here while training is enabled."""
        ...

    def observe(
        self, obs: CycleObservation, priorities: NDArray[np.float64], outcome: CycleOutcome
    ) -> list[Transition]:
        """Take the feedback of a cycle ranked with ``priorities``; return the
        transitions it recorded (the caller may persist them as events)."""
        ...

    def train(self) -> TrainStats:
        """Learn from what was observed so far (a no-op for heuristics)."""
        ...

    def hyperparameters(self) -> dict[str, Any]:
        """Everything needed to construct the same policy again."""
        ...

    def save(self, directory: Path) -> None:
        """Write the learned parameters (and hyperparameters) to ``directory``."""
        ...

    def load(self, directory: Path) -> None:
        """Read what :meth:`save` wrote."""
        ...

    def set_training(self, training: bool) -> None:
        """Switch exploration and learning on or off (evaluation-only ranking)."""
        ...
