"""Heuristic prioritisation policies (the baselines every learner must beat), and an oracle.

Each heuristic keeps its own per-test tallies, updated in :meth:`observe` from the
outcome of a cycle *after* it was ranked, so ``act`` sees only the past. They record
transitions like the learners do (state = the test's feature row, action = the
priority given, reward from the outcome), so their experience can train offline
learners.

:class:`OptimalPolicy` is an **oracle**: the evaluator reveals the cycle's verdicts to
it before it ranks. It exists only to give the "optimal" row of an evaluation and is
not registered for training or serving.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from aqe.errors import ConfigError
from aqe.learning.base import (
    CycleObservation,
    CycleOutcome,
    Kind,
    TrainStats,
    Transition,
    one_step_transitions,
)

__all__ = [
    "DurationAwarePolicy",
    "FailureCountPolicy",
    "OptimalPolicy",
    "RandomPolicy",
    "RecentFailurePolicy",
    "RetecsSortPolicy",
    "RetecsWeightPolicy",
]

_STATE_FILE = "heuristic.json"


def _no_hyperparameters(name: str, hp: dict[str, Any]) -> None:
    if hp:
        raise ConfigError(f"{name} takes no hyperparameters; got {', '.join(sorted(hp))}")


def _transitions(
    name: str, obs: CycleObservation, priorities: NDArray[np.float64], outcome: CycleOutcome
) -> list[Transition]:
    rewards = outcome.rewards if outcome.rewards.size else np.zeros(len(obs.test_ids))
    return one_step_transitions(name, obs, priorities, rewards)


class _Tally:
    """Per-test counts: runs, failures, the cycle number of the last failure, total time."""

    __slots__ = ("duration", "fails", "last_fail", "runs")

    def __init__(self, runs: int = 0, fails: int = 0, last_fail: int = 0, duration: float = 0.0):
        self.runs = runs
        self.fails = fails
        self.last_fail = last_fail
        self.duration = duration


class _Heuristic:
    """Tallies, transitions, save/load and the no-op parts of :class:`Policy`."""

    name: str = "heuristic"
    kind: Kind = "heuristic"

    def __init__(self, seed: int = 0, **hyperparameters: Any) -> None:
        _no_hyperparameters(self.name, hyperparameters)
        self.seed = seed
        self.training = True
        self._tally: dict[str, _Tally] = {}
        self._cycles = 0

    def _priority(self, t: _Tally | None) -> float:
        raise NotImplementedError

    def act(self, obs: CycleObservation) -> NDArray[np.float64]:
        """Priorities from the tallies of earlier cycles."""
        return np.asarray([self._priority(self._tally.get(t)) for t in obs.test_ids], np.float64)

    def observe(
        self, obs: CycleObservation, priorities: NDArray[np.float64], outcome: CycleOutcome
    ) -> list[Transition]:
        """Update the tallies with the cycle's verdicts; record one transition per test."""
        self._cycles += 1
        for i, test_id in enumerate(obs.test_ids):
            t = self._tally.setdefault(test_id, _Tally())
            t.runs += 1
            t.duration += float(outcome.durations[i])
            if outcome.verdicts[i]:
                t.fails += 1
                t.last_fail = self._cycles
        return _transitions(self.name, obs, priorities, outcome)

    def train(self) -> TrainStats:
        """Nothing to learn beyond the tallies."""
        return TrainStats()

    def hyperparameters(self) -> dict[str, Any]:
        """None (the seed is passed separately)."""
        return {}

    def set_training(self, training: bool) -> None:
        """Recorded; heuristics rank the same either way."""
        self.training = training

    def _state(self) -> dict[str, Any]:
        return {
            "cycles": self._cycles,
            "tally": {
                k: [t.runs, t.fails, t.last_fail, t.duration]
                for k, t in sorted(self._tally.items())
            },
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self._cycles = int(state["cycles"])
        self._tally = {
            k: _Tally(int(r), int(f), int(lf), float(d))
            for k, (r, f, lf, d) in state["tally"].items()
        }

    def save(self, directory: Path) -> None:
        """Write the tallies as JSON."""
        directory.mkdir(parents=True, exist_ok=True)
        state = {"name": self.name, "seed": self.seed, **self._state()}
        (directory / _STATE_FILE).write_text(json.dumps(state, sort_keys=True), encoding="utf-8")

    def load(self, directory: Path) -> None:
        """Read what :meth:`save` wrote.

        Raises:
            ConfigError: nothing saved there, or another policy's state.
        """
        path = directory / _STATE_FILE
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
        if state.get("name") != self.name:
            raise ConfigError(f"{path} holds {state.get('name')!r}, not {self.name!r}")
        self._restore(state)


class RandomPolicy(_Heuristic):
    """Uniformly random priorities from a seeded generator."""

    name = "random"

    def __init__(self, seed: int = 0, **hyperparameters: Any) -> None:
        super().__init__(seed, **hyperparameters)
        self._rng = np.random.default_rng(seed)

    def act(self, obs: CycleObservation) -> NDArray[np.float64]:
        """A fresh random priority per test."""
        return self._rng.random(len(obs.test_ids))

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "rng": self._rng.bit_generator.state}

    def _restore(self, state: dict[str, Any]) -> None:
        super()._restore(state)
        self._rng.bit_generator.state = state["rng"]


class FailureCountPolicy(_Heuristic):
    """Tests that failed most often so far run first."""

    name = "failure-count"

    def _priority(self, t: _Tally | None) -> float:
        return float(t.fails) if t else 0.0


class RecentFailurePolicy(_Heuristic):
    """Tests whose last failure is most recent run first; never-failed tests last."""

    name = "recent-failure"

    def _priority(self, t: _Tally | None) -> float:
        return float(t.last_fail) if t else 0.0


class DurationAwarePolicy(_Heuristic):
    """Failures per second of test time first: ``fail rate / mean duration``."""

    name = "duration-aware"

    def _priority(self, t: _Tally | None) -> float:
        if t is None or t.runs == 0 or t.fails == 0:
            return 0.0
        mean_duration = max(t.duration / t.runs, 1e-3)
        return (t.fails / t.runs) / mean_duration


RETECS_HISTORY = 4
"""RETECS's ``histlen``: how many recent verdicts its heuristics look at."""


def _retecs_state(obs: CycleObservation) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per test, RETECS's view of the state from the observation's features: the last
    :data:`RETECS_HISTORY` verdicts newest first (1 failed), **missing entries counted
    as failures** (RETECS pads a short ``LastResults`` with 1, so new tests come first),
    and the time since the test last ran (``since_run``)."""
    col = {name: i for i, name in enumerate(obs.feature_names)}
    feats = np.asarray(obs.features, dtype=np.float64)
    n = feats.shape[0]
    history = np.ones((n, RETECS_HISTORY), dtype=np.float64)
    if n:
        known = np.rint(feats[:, col["known"]] * 10).astype(np.int64)
        for k in range(RETECS_HISTORY):
            real = known > k
            history[real, k] = feats[real, col[f"verdict_{k + 1}"]]
    since = feats[:, col["since_run"]] if n else np.zeros(0)
    return history, since


class RetecsSortPolicy(_Heuristic):
    """RETECS's sort heuristic (Spieker et al. 2017, ``HeuristicSortAgent``): tests
    sorted by their last 4 verdicts (newest first, failed above passed, missing
    counted as failed, so new tests first), then by the time since they last ran."""

    name = "retecs-sort"

    def act(self, obs: CycleObservation) -> NDArray[np.float64]:
        """Position in the ascending lexicographic order of (h1, h2, h3, h4, since)."""
        history, since = _retecs_state(obs)
        # np.lexsort sorts by the last key first: (since, h4, h3, h2, h1) → h1 primary
        keys = (since, *(history[:, k] for k in reversed(range(RETECS_HISTORY))))
        ascending = np.lexsort(keys)
        priorities = np.empty(len(obs.test_ids), dtype=np.float64)
        priorities[ascending] = np.arange(len(obs.test_ids), dtype=np.float64)
        return priorities


class RetecsWeightPolicy(_Heuristic):
    """RETECS's weighted heuristic (``HeuristicWeightAgent``): the mean of its state
    (relative duration, time since the last run, the last 4 verdicts as above)."""

    name = "retecs-weight"

    def act(self, obs: CycleObservation) -> NDArray[np.float64]:
        """Equal weights over the 6 state values; higher runs first."""
        history, since = _retecs_state(obs)
        total = float(np.sum(obs.durations))
        duration = obs.durations / total if total > 0 else np.zeros(len(obs.test_ids))
        priorities: NDArray[np.float64] = (duration + since + history.sum(axis=1)) / (
            RETECS_HISTORY + 2
        )
        return priorities


class OptimalPolicy(_Heuristic):
    """ORACLE: ranks with the cycle's true verdicts (given by :meth:`reveal`).

    Failed tests first, shortest first (which also maximises NAPFD under a budget
    among orders that put failures first), then passed tests, shortest first. Used
    only by the evaluator for the "optimal" anchor; never a real policy.
    """

    name = "optimal"
    oracle: ClassVar[bool] = True

    def __init__(self, seed: int = 0, **hyperparameters: Any) -> None:
        super().__init__(seed, **hyperparameters)
        self._revealed: tuple[str, NDArray[np.int8], NDArray[np.float64]] | None = None

    def reveal(
        self, cycle: str, verdicts: NDArray[np.int8], durations: NDArray[np.float64]
    ) -> None:
        """Tell the oracle the outcome of the cycle it is about to rank."""
        self._revealed = (cycle, verdicts, durations)

    def act(self, obs: CycleObservation) -> NDArray[np.float64]:
        """Failed first, then by ascending duration.

        Raises:
            ConfigError: the cycle's outcome was not revealed first.
        """
        if self._revealed is None or self._revealed[0] != obs.cycle:
            raise ConfigError("the optimal oracle needs reveal() of this cycle before act()")
        _, verdicts, durations = self._revealed
        longest = float(durations.max()) if durations.size else 0.0
        priorities: NDArray[np.float64] = 2.0 * (verdicts != 0) - durations / (longest + 1.0)
        return priorities
