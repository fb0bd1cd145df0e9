"""Decision Transformer (Chen et al. 2021) for test prioritisation, trained offline.

A test's trajectory is its decisions across the cycles in which it ran, ordered by cycle:
``(R_1, s_1, a_1), (R_2, s_2, a_2), …`` with ``R`` the return-to-go, ``s`` the feature
vector and ``a`` the priority chosen. Returns-to-go are computed backwards with the
transitions' ``done`` flags, ``R_t = r_t + gamma * (1 - done_t) * R_{t+1}``: with the one-step
episodes of :mod:`aqe.learning.base` (``done`` always true) ``R_t = r_t``, the reward of
that decision. A window of the last ``context`` steps becomes ``3·context`` tokens, a
small causal :class:`torch.nn.TransformerEncoder` reads them, and the output at each
state token predicts that step's action (sigmoid, ``[0, 1]``; mean-squared error).

Acting, a test's window is its own recent ``(R, s, a)`` (kept by :meth:`observe`)
followed by ``(target, s_now)``: the model is asked for the priority that earns a high
return, by default the highest return-to-go in the training data (for ``tcfail``: the
return of a test that fails). Past steps' returns are recomputed with the target as
the unknown future, the same rule as in training.

Offline: :meth:`fit` trains a fresh model (seeded) for ``fit_steps`` minibatches on the
transitions given and rebuilds the per-test contexts from them, so the same
transitions and seed give the same model whether they arrive through :meth:`observe`
or are read back from the experience buffers. :meth:`train` calls :meth:`fit` on
everything observed, but only once it holds ``min_transitions`` and has grown by
``refit_growth`` since the last fit, which keeps the cost of a long online run
logarithmic in its length. Before the first fit, and with noise ``explore_noise`` after
it, acting explores while training is on, so the data holds a spread of actions.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from aqe.errors import ConfigError
from aqe.learning.base import (
    CycleObservation,
    CycleOutcome,
    Kind,
    TrainStats,
    Transition,
    one_step_transitions,
)

__all__ = ["DecisionTransformerPolicy"]

_MODEL_FILE = "model.pt"
_META_FILE = "state.json"

_DEFAULTS: dict[str, Any] = {
    "context": 8,
    "d_model": 32,
    "layers": 1,
    "heads": 2,
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "batch_size": 64,
    "fit_steps": 150,
    "gamma": 1.0,
    "target_return": None,
    "explore_noise": 0.02,
    "refit_growth": 2.0,
    "min_transitions": 256,
    "capacity": 100_000,
}


def _step(optimiser: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    optimiser.zero_grad()
    loss.backward()  # type: ignore[no-untyped-call]
    optimiser.step()


class _Model(nn.Module):
    """The causal transformer: interleaved (return, state, action) tokens → actions."""

    def __init__(self, n_features: int, context: int, d_model: int, layers: int, heads: int):
        super().__init__()
        self.embed_return = nn.Linear(1, d_model)
        self.embed_state = nn.Linear(n_features, d_model)
        self.embed_action = nn.Linear(1, d_model)
        self.position = nn.Parameter(torch.zeros(3 * context, d_model))
        self.pad = nn.Parameter(torch.zeros(d_model))
        nn.init.normal_(self.position, std=0.02)
        nn.init.normal_(self.pad, std=0.02)
        self.norm = nn.LayerNorm(d_model)
        layer = nn.TransformerEncoderLayer(
            d_model,
            heads,
            dim_feedforward=2 * d_model,
            dropout=0.0,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, 1)
        mask = torch.triu(torch.full((3 * context, 3 * context), float("-inf")), diagonal=1)
        self.register_buffer("causal", mask, persistent=False)

    def forward(
        self,
        returns: torch.Tensor,
        states: torch.Tensor,
        actions: torch.Tensor,
        real: torch.Tensor,
    ) -> torch.Tensor:
        """Predicted actions, shape ``(batch, context)``.

        ``returns``/``actions`` are ``(batch, context)``, ``states`` is
        ``(batch, context, features)``, ``real`` marks the steps that are not padding.
        """
        batch, context = returns.shape
        tokens = torch.stack(
            [
                self.embed_return(returns.unsqueeze(-1)),
                self.embed_state(states),
                self.embed_action(actions.unsqueeze(-1)),
            ],
            dim=2,
        )  # (batch, context, 3, d)
        # Padding stays attendable (no -inf rows, so no NaN) but is marked as such.
        pad = (~real).unsqueeze(-1).unsqueeze(-1).to(tokens.dtype) * self.pad
        tokens = (tokens + pad).reshape(batch, 3 * context, -1) + self.position
        causal = self.get_buffer("causal")
        hidden = self.norm(self.encoder(tokens, mask=causal, is_causal=True))
        at_states = hidden.reshape(batch, context, 3, -1)[:, :, 1]
        out: torch.Tensor = torch.sigmoid(self.head(at_states)).squeeze(-1)
        return out


def _returns_to_go(
    rewards: Sequence[float], dones: Sequence[bool], gamma: float, tail: float
) -> list[float]:
    """Backward returns of one trajectory; ``tail`` stands for what follows its end."""
    out = [0.0] * len(rewards)
    future = tail
    for i in range(len(rewards) - 1, -1, -1):
        future = rewards[i] + (0.0 if dones[i] else gamma * future)
        out[i] = future
    return out


class DecisionTransformerPolicy:
    """Return-conditioned sequence model over each test's history (see the module)."""

    name: str = "decision-transformer"
    kind: Kind = "offline"

    def __init__(self, seed: int = 0, **hyperparameters: Any) -> None:
        unknown = sorted(set(hyperparameters) - set(_DEFAULTS))
        if unknown:
            raise ConfigError(f"{self.name}: unknown hyperparameters {unknown}")
        self.seed = seed
        self.hp: dict[str, Any] = {**_DEFAULTS, **hyperparameters}
        torch.use_deterministic_algorithms(True)
        self._rng = np.random.default_rng(seed)
        self._gen = torch.Generator().manual_seed(seed)
        self._training = True
        self._data: deque[Transition] = deque(maxlen=int(self.hp["capacity"]))
        self._contexts: dict[str, deque[tuple[tuple[float, ...], float, float, bool]]] = {}
        self._model: _Model | None = None
        self._n_features: int | None = None
        self._target = 0.0
        self._fitted_on = 0

    @property
    def context(self) -> int:
        """Steps per window (``K``)."""
        return int(self.hp["context"])

    def _new_model(self, n_features: int) -> _Model:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return _Model(
                n_features,
                self.context,
                int(self.hp["d_model"]),
                int(self.hp["layers"]),
                int(self.hp["heads"]),
            )

    def _remember(self, t: Transition) -> None:
        past = self._contexts.get(t.test_id)
        if past is None:
            past = self._contexts[t.test_id] = deque(maxlen=self.context - 1)
        past.append((t.state, t.action, t.reward, t.done))

    # -- the Policy interface ---------------------------------------------------------

    def act(self, obs: CycleObservation) -> NDArray[np.float64]:
        """Priorities: the model's action for the target return, given each test's
        recent context (exploring while training is on)."""
        n = len(obs.test_ids)
        if n == 0:
            return np.zeros(0, dtype=np.float64)
        feats = np.asarray(obs.features, dtype=np.float32)
        if self._model is None:
            if self._training:
                return self._rng.random(n)
            return np.full(n, 0.5)
        if feats.shape[1] != self._n_features:
            raise ConfigError(
                f"{self.name}: trained on {self._n_features} features, got {feats.shape[1]}"
            )
        k = self.context
        returns = np.zeros((n, k), dtype=np.float32)
        states = np.zeros((n, k, feats.shape[1]), dtype=np.float32)
        actions = np.zeros((n, k), dtype=np.float32)
        real = np.zeros((n, k), dtype=bool)
        gamma = float(self.hp["gamma"])
        for i, test_id in enumerate(obs.test_ids):
            past = list(self._contexts.get(test_id, ()))
            start = k - 1 - len(past)
            rtg = _returns_to_go([p[2] for p in past], [p[3] for p in past], gamma, self._target)
            for j, (state, action, _reward, _done) in enumerate(past):
                returns[i, start + j] = rtg[j]
                states[i, start + j] = state
                actions[i, start + j] = action
            real[i, start:] = True
            returns[i, -1] = self._target
            states[i, -1] = feats[i]
        with torch.no_grad():
            predicted = self._model(
                torch.from_numpy(returns),
                torch.from_numpy(states),
                torch.from_numpy(actions),
                torch.from_numpy(real),
            )[:, -1]
        scores: NDArray[np.float64] = predicted.double().numpy()
        if self._training:
            noise = torch.randn(n, generator=self._gen, dtype=torch.float64).numpy()
            scores = np.clip(scores + float(self.hp["explore_noise"]) * noise, 0.0, 1.0)
        return scores

    def observe(
        self, obs: CycleObservation, priorities: NDArray[np.float64], outcome: CycleOutcome
    ) -> list[Transition]:
        """Record each test's decision and extend its context."""
        rewards = np.asarray(outcome.rewards, dtype=np.float32)
        recorded = one_step_transitions(self.name, obs, priorities, rewards)
        for t in recorded:
            self._remember(t)
            if self._training:
                self._data.append(t)
        return recorded

    def train(self) -> TrainStats:
        """Refit on everything observed once it has grown by ``refit_growth``."""
        size = len(self._data)
        grown = size >= float(self.hp["refit_growth"]) * self._fitted_on
        if not self._training or size < int(self.hp["min_transitions"]) or not grown:
            return TrainStats()
        return self.fit(list(self._data))

    def fit(self, transitions: Sequence[Transition]) -> TrainStats:
        """Train a fresh model on ``transitions`` (oldest first), offline.

        The transitions also become the policy's data and per-test contexts, so the
        same transitions and seed give the same policy however they were gathered.

        Returns:
            ``fit_steps`` updates and the mean loss of the last tenth of them.
        """
        started = time.perf_counter()
        data = list(transitions)
        self._data = deque(data, maxlen=int(self.hp["capacity"]))
        self._contexts = {}
        for t in data:
            self._remember(t)
        if not data:
            return TrainStats(seconds=time.perf_counter() - started)
        returns, states, actions, windows = self._trajectories(data)
        n_features = states.shape[1]
        target = self.hp["target_return"]
        self._target = float(returns.max()) if target is None else float(target)
        self._n_features = n_features
        model = self._new_model(n_features)
        optimiser = torch.optim.AdamW(
            model.parameters(), lr=float(self.hp["lr"]), weight_decay=float(self.hp["weight_decay"])
        )
        rng = np.random.default_rng(self.seed)
        steps = int(self.hp["fit_steps"])
        batch = int(self.hp["batch_size"])
        # A zero row at the end of each array stands for padding (window index -1).
        returns_t = torch.from_numpy(np.append(returns, np.float32(0.0)))
        actions_t = torch.from_numpy(np.append(actions, np.float32(0.0)))
        states_t = torch.from_numpy(np.vstack([states, np.zeros((1, n_features), np.float32)]))
        windows_t = torch.from_numpy(windows)
        losses = []
        model.train()
        for _ in range(steps):
            idx = windows_t[torch.from_numpy(rng.integers(0, len(windows), size=batch))]
            real = idx >= 0
            predicted = model(returns_t[idx], states_t[idx], actions_t[idx], real)
            err = (predicted - actions_t[idx]) ** 2 * real
            loss = err.sum() / real.sum()
            _step(optimiser, loss)
            losses.append(float(loss.detach()))
        model.eval()
        self._model = model
        self._fitted_on = len(data)
        tail = losses[-max(1, math.ceil(steps / 10)) :] if losses else [0.0]
        return TrainStats(
            updates=steps, loss=float(np.mean(tail)), seconds=time.perf_counter() - started
        )

    def _trajectories(
        self, data: Sequence[Transition]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32], NDArray[np.int64]]:
        """Flat arrays of returns-to-go, states, actions and, per step, the indices of
        its window (``-1`` for padding), trajectories grouped by test."""
        cycle_order: dict[str, int] = {}
        for t in data:
            cycle_order.setdefault(t.cycle, len(cycle_order))
        by_test: dict[str, list[Transition]] = {}
        for t in data:
            by_test.setdefault(t.test_id, []).append(t)
        gamma = float(self.hp["gamma"])
        k = self.context
        returns: list[float] = []
        states: list[tuple[float, ...]] = []
        actions: list[float] = []
        windows: list[list[int]] = []
        for test_id in sorted(by_test):
            steps = sorted(by_test[test_id], key=lambda t: cycle_order[t.cycle])
            base = len(returns)
            returns += _returns_to_go(
                [t.reward for t in steps], [t.done for t in steps], gamma, 0.0
            )
            states += [t.state for t in steps]
            actions += [t.action for t in steps]
            for j in range(len(steps)):
                first = j - k + 1
                windows.append([base + i if i >= 0 else -1 for i in range(first, j + 1)])
        return (
            np.asarray(returns, dtype=np.float32),
            np.asarray(states, dtype=np.float32),
            np.asarray(actions, dtype=np.float32),
            np.asarray(windows, dtype=np.int64),
        )

    def hyperparameters(self) -> dict[str, Any]:
        """Everything, besides the seed, needed to construct the same policy again."""
        return dict(self.hp)

    def set_training(self, training: bool) -> None:
        """Exploration and data gathering on (``True``) or off."""
        self._training = training

    def save(self, directory: Path) -> None:
        """Write the model, the target return and the per-test contexts."""
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "algorithm": self.name,
            "seed": self.seed,
            "hyperparameters": self.hyperparameters(),
            "n_features": self._n_features,
            "target": self._target,
            "fitted_on": self._fitted_on,
            "contexts": {
                test_id: [[list(s), a, r, d] for s, a, r, d in past]
                for test_id, past in sorted(self._contexts.items())
            },
        }
        (directory / _META_FILE).write_text(json.dumps(meta, sort_keys=True))
        if self._model is not None:
            torch.save(self._model.state_dict(), directory / _MODEL_FILE)

    def load(self, directory: Path) -> None:
        """Read what :meth:`save` wrote.

        Raises:
            ConfigError: the files are missing or belong to another algorithm.
        """
        try:
            meta = json.loads((directory / _META_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{directory}: no saved {self.name} policy ({exc})") from exc
        if meta.get("algorithm") != self.name:
            raise ConfigError(f"{directory}: holds {meta.get('algorithm')!r}, not {self.name}")
        self._target = float(meta["target"])
        self._fitted_on = int(meta["fitted_on"])
        self._contexts = {
            test_id: deque(
                ((tuple(s), float(a), float(r), bool(d)) for s, a, r, d in past),
                maxlen=self.context - 1,
            )
            for test_id, past in meta["contexts"].items()
        }
        self._n_features = meta["n_features"]
        if self._n_features is None:
            self._model = None
            return
        model = self._new_model(int(self._n_features))
        model.load_state_dict(torch.load(directory / _MODEL_FILE, weights_only=True))
        model.eval()
        self._model = model
