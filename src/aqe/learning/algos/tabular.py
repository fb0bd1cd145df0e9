"""Tabular Q-learning and SARSA over a few discretised history features.

State: a few columns of the feature vector, each cut into bins by :data:`EDGES`
(``v < 0.05``, ``< 0.15``, ``< 0.3``, ``< 0.5``, ``< 0.75``, ``< 0.999``, and ``>= 0.999``:
seven bins, the last one meaning "saturated", e.g. ``since_fail == 1``: never failed).
The default columns are :data:`DEFAULT_COLUMNS` (``fail_rate``, ``verdict_1``,
``since_fail`` of :mod:`aqe.learning.features`), found by name in
``obs.feature_names``; without names the first three columns are used, and an explicit
``columns=[...]`` (indices) overrides both.

Action: a priority bucket ``0 .. n_buckets - 1`` (10 by default); the priority is the
bucket plus half the state's mean observed reward, clipped to ``[0, 1]``, as a
tie-break (see :mod:`aqe.learning.algos._common`). Exploration is epsilon-greedy, only
while training. Unvisited actions keep ``Q = 0``, which is optimistic under the default
``calibration`` target (all its values are <= 0), so every bucket of a state gets tried.

Update: ``Q(s, a) += alpha * (target - Q(s, a))`` with ``target = r'`` for one-step
episodes (``r'`` is :func:`~aqe.learning.algos._common.learning_targets` of the reward)
and ``r' + gamma * bootstrap`` otherwise. Q-learning bootstraps on ``max_a' Q(s', a')``,
SARSA on ``Q(s', a')`` with ``a'`` drawn from its own epsilon-greedy policy (on-policy).
Every decision of this form is a one-step episode, so the two updates are *the same*
here. The registry's ``q-learning`` and ``sarsa`` are the multi-step form
(:mod:`aqe.learning.algos.sequential`); these one-step classes stay for comparison
(APFD 0.5465 for both on IOF/ROL, seed 0, against 0.574 / 0.570 sequential).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from aqe.errors import ConfigError
from aqe.learning.algos._common import (
    as_int_tuple,
    buckets_of,
    check_target,
    learning_targets,
    priorities_of,
    read_hyperparameters,
    transitions_of,
    write_hyperparameters,
)
from aqe.learning.base import CycleObservation, CycleOutcome, Kind, TrainStats, Transition

__all__ = ["DEFAULT_COLUMNS", "EDGES", "QLearningPolicy", "SarsaPolicy"]

DEFAULT_COLUMNS: tuple[str, ...] = ("fail_rate", "verdict_1", "since_fail")
"""Feature names the state is built from, when the observation names its columns."""
EDGES: tuple[float, ...] = (0.05, 0.15, 0.3, 0.5, 0.75, 0.999)
"""Inner bin edges shared by every state column (values are in ``[0, 1]``)."""
_TABLE_FILE = "q_table.json"


class _TabularPolicy:
    name: str = ""
    kind: Kind = "tabular"

    def __init__(
        self,
        seed: int = 0,
        *,
        n_buckets: int = 10,
        alpha: float = 0.1,
        epsilon: float = 0.1,
        gamma: float = 0.9,
        columns: list[int] | None = None,
        target: str = "calibration",
    ) -> None:
        if n_buckets < 2:
            raise ConfigError(f"n_buckets must be at least 2, got {n_buckets}")
        if not 0.0 < alpha <= 1.0 or not 0.0 <= epsilon <= 1.0:
            raise ConfigError(f"need 0 < alpha <= 1 and 0 <= epsilon <= 1 ({alpha}, {epsilon})")
        self.seed = seed
        self.n_buckets = n_buckets
        self.alpha = alpha
        self.epsilon = epsilon
        self.gamma = gamma
        self.columns = as_int_tuple(columns)
        self.target = check_target(target)
        self._rng = np.random.default_rng(seed)
        self._training = True
        self._resolved: tuple[int, ...] | None = self.columns
        self._edges = np.asarray(EDGES, dtype=np.float32)
        self._q: dict[int, NDArray[np.float64]] = {}
        self._reward_sum: dict[int, float] = {}
        self._visits: dict[int, int] = {}
        self._pending: list[tuple[int, int, float, int, bool]] = []

    # -- state ------------------------------------------------------------------------

    def _columns_for(self, obs: CycleObservation) -> tuple[int, ...]:
        if self._resolved is None:
            names = obs.feature_names
            if names and all(c in names for c in DEFAULT_COLUMNS):
                self._resolved = tuple(names.index(c) for c in DEFAULT_COLUMNS)
            else:
                self._resolved = tuple(range(min(len(DEFAULT_COLUMNS), obs.features.shape[1])))
        return self._resolved

    def _keys(self, obs: CycleObservation) -> NDArray[np.int64]:
        cols = self._columns_for(obs)
        values = obs.features[:, list(cols)]
        bins = np.searchsorted(self._edges, values, side="right").astype(np.int64)
        radix = len(EDGES) + 1
        weights = radix ** np.arange(len(cols), dtype=np.int64)
        keys: NDArray[np.int64] = bins @ weights
        return keys

    def _row(self, key: int) -> NDArray[np.float64]:
        row = self._q.get(key)
        if row is None:
            row = np.zeros(self.n_buckets, dtype=np.float64)
            self._q[key] = row
        return row

    def _epsilon_greedy(self, key: int) -> int:
        if self._training and self._rng.random() < self.epsilon:
            return int(self._rng.integers(self.n_buckets))
        row = self._q.get(key)
        return 0 if row is None else int(np.argmax(row))

    # -- Policy -------------------------------------------------------------------------

    def act(self, obs: CycleObservation) -> NDArray[np.float64]:
        """Priorities for ``obs.test_ids``: epsilon-greedy bucket plus a tie-break."""
        keys = self._keys(obs)
        buckets = np.array([self._epsilon_greedy(int(k)) for k in keys], dtype=np.int64)
        tie = np.array(
            [self._reward_sum.get(int(k), 0.0) / max(self._visits.get(int(k), 0), 1) for k in keys],
            dtype=np.float64,
        )
        return priorities_of(buckets, tie)

    def observe(
        self, obs: CycleObservation, priorities: NDArray[np.float64], outcome: CycleOutcome
    ) -> list[Transition]:
        """Record each test's bucket and reward (queued for :meth:`train` while training)."""
        actions = buckets_of(priorities, self.n_buckets)
        if self._training:
            keys = self._keys(obs)
            for key, a, r in zip(keys, actions, outcome.rewards, strict=True):
                self._pending.append((int(key), int(a), float(r), int(key), True))
        return transitions_of(self.name, obs, actions, outcome)

    def _bootstrap(self, next_key: int) -> float:
        raise NotImplementedError

    def train(self) -> TrainStats:
        """One update per decision observed since the last call, oldest first."""
        if not self._training or not self._pending:
            return TrainStats()
        start = time.perf_counter()
        pending, self._pending = self._pending, []
        actions = np.array([p[1] for p in pending], dtype=np.int64)
        rewards = np.array([p[2] for p in pending], dtype=np.float32)
        targets = learning_targets(actions, rewards, self.n_buckets, self.target)
        loss = 0.0
        for (key, a, r, next_key, done), t in zip(pending, targets, strict=True):
            goal = float(t) if done else float(t) + self.gamma * self._bootstrap(next_key)
            row = self._row(key)
            error = goal - row[a]
            row[a] += self.alpha * error
            loss += error * error
            self._reward_sum[key] = self._reward_sum.get(key, 0.0) + r
            self._visits[key] = self._visits.get(key, 0) + 1
        return TrainStats(
            updates=len(pending),
            loss=loss / len(pending),
            seconds=time.perf_counter() - start,
        )

    def hyperparameters(self) -> dict[str, Any]:
        """The constructor's keyword arguments (without ``seed``)."""
        return {
            "n_buckets": self.n_buckets,
            "alpha": self.alpha,
            "epsilon": self.epsilon,
            "gamma": self.gamma,
            "columns": None if self.columns is None else list(self.columns),
            "target": self.target,
        }

    def save(self, directory: Path) -> None:
        """Write ``hyperparameters.json`` and the Q table (``q_table.json``)."""
        write_hyperparameters(directory, self.name, self.seed, self.hyperparameters())
        doc = {
            "columns": None if self._resolved is None else list(self._resolved),
            "q": {str(k): v.tolist() for k, v in sorted(self._q.items())},
            "reward_sum": {str(k): v for k, v in sorted(self._reward_sum.items())},
            "visits": {str(k): v for k, v in sorted(self._visits.items())},
        }
        (directory / _TABLE_FILE).write_text(json.dumps(doc) + "\n", encoding="utf-8")

    def load(self, directory: Path) -> None:
        """Read what :meth:`save` wrote.

        Raises:
            ConfigError: missing files, another algorithm, or other hyperparameters.
        """
        saved = read_hyperparameters(directory, self.name)
        if saved != self.hyperparameters():
            raise ConfigError(f"{directory}: saved with other hyperparameters: {saved}")
        try:
            doc = json.loads((directory / _TABLE_FILE).read_text(encoding="utf-8"))
            cols = doc["columns"]
            self._resolved = None if cols is None else tuple(int(c) for c in cols)
            self._q = {int(k): np.asarray(v, dtype=np.float64) for k, v in doc["q"].items()}
            self._reward_sum = {int(k): float(v) for k, v in doc["reward_sum"].items()}
            self._visits = {int(k): int(v) for k, v in doc["visits"].items()}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{directory}: unreadable Q table ({exc})") from exc
        self._pending = []

    def set_training(self, training: bool) -> None:
        """Exploration and learning on (``True``) or off."""
        self._training = training


class QLearningPolicy(_TabularPolicy):
    """Tabular Q-learning (off-policy: bootstraps on the greedy next action).

    Args:
        seed: seeds the exploration generator.
        n_buckets: priority buckets (actions).
        alpha: step size.
        epsilon: exploration rate while training.
        gamma: discount (only used for transitions that are not ``done``).
        columns: feature indices of the state (default: by name, see the module).
        target: ``"calibration"`` or ``"raw"`` (see ``learning_targets``).
    """

    name = "q-learning"

    def _bootstrap(self, next_key: int) -> float:
        row = self._q.get(next_key)
        return 0.0 if row is None else float(row.max())


class SarsaPolicy(_TabularPolicy):
    """Tabular SARSA (on-policy: bootstraps on the action its own policy would take).

    Same arguments as :class:`QLearningPolicy`; identical updates for one-step episodes.
    """

    name = "sarsa"

    def _bootstrap(self, next_key: int) -> float:
        row = self._q.get(next_key)
        return 0.0 if row is None else float(row[self._epsilon_greedy(next_key)])
