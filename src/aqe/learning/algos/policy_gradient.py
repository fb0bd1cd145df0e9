"""Policy-gradient prioritisers over priority buckets: A2C, one-step Actor-Critic, PPO.

Each test is a one-step episode: the state is its feature vector
(``obs.features.shape[1]`` columns, read at the first cycle), the action one of
``n_buckets`` priority buckets, the return the learning target of its reward (see
:func:`~aqe.learning.algos._common.learning_targets`). The
priority is the bucket plus half the policy's expected bucket position
``sum_a pi(a|s) a / (n_buckets - 1)`` as a tie-break. While training the bucket is
sampled from ``pi``; otherwise it is the most probable one.

Networks are MLPs with two hidden layers of ``hidden`` (32) tanh units, trained with
Adam and an entropy bonus:

* :class:`A2CPolicy` ("a2c"): one network, shared trunk, actor and critic heads;
  each :meth:`train` makes one synchronous pass over the decisions observed since the
  last call, in minibatches of 16, with advantage ``r' - V(s)`` normalised per
  minibatch.
* :class:`ActorCriticPolicy` ("actor-critic"): separate actor and critic networks and
  optimisers, one update per decision (TD error ``r' - V(s)`` for one-step episodes);
  both losses go through one backward pass and fused Adam steps, as per-decision
  updates of such small networks cost what torch's per-call overheads cost.
* :class:`PPOPolicy` ("ppo"): shared trunk; a few epochs of minibatches over the last
  ``window`` cycles' decisions with the clipped surrogate objective, the behaviour
  log-probabilities being those of the policy that ranked each cycle.

Rewards and targets. A2C and PPO name their own reward, the rank-aware ``timerank``
(their ``reward`` attribute, which the evaluator honours), and learn it through the
``penalised`` target over 5 buckets. With ``tcfail`` under a time budget and the
``calibration`` target (actor-critic's defaults, 10 buckets) a low bucket is a
self-fulfilling claim (see :func:`~aqe.learning.algos._common.learning_targets`): A2C
settled there and ranked the tests most likely to fail last (mean APFD 0.43 on
IOF/ROL, random 0.51), and PPO escaped it on some seeds only (0.595, 0.55, 0.584 for
seeds 0-2; 0.604, 0.595, 0.589 now).

Decisions are kept in a bounded replay memory (the newest ``memory`` = 10,000, as in
RETECS). Same seed, same data: same priorities (weights are initialised under
``torch.manual_seed(seed)`` inside a forked RNG; sampling uses a seeded
``torch.Generator``, shuffling a seeded numpy ``Generator``; torch runs on one thread).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from aqe.errors import ConfigError
from aqe.learning.algos._common import (
    Memory,
    buckets_of,
    check_target,
    learning_targets,
    priorities_of,
    read_hyperparameters,
    transitions_of,
    write_hyperparameters,
)
from aqe.learning.base import CycleObservation, CycleOutcome, Kind, TrainStats, Transition

__all__ = ["A2CPolicy", "ActorCriticPolicy", "PPOPolicy"]

_WEIGHTS_FILE = "weights.pt"


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(n_in, hidden),
        nn.Tanh(),
        nn.Linear(hidden, hidden),
        nn.Tanh(),
        nn.Linear(hidden, n_out),
    )


class _DiscretePolicy:
    name: str = ""
    kind: Kind = "discrete"

    def __init__(
        self,
        seed: int = 0,
        *,
        n_buckets: int = 10,
        hidden: int = 32,
        lr: float = 1e-3,
        entropy: float = 0.01,
        batch_size: int = 64,
        memory: int = 10_000,
        target: str = "calibration",
    ) -> None:
        if n_buckets < 2 or hidden < 1 or batch_size < 1 or lr <= 0:
            raise ConfigError(
                f"need n_buckets >= 2, hidden >= 1, batch_size >= 1, lr > 0 "
                f"({n_buckets}, {hidden}, {batch_size}, {lr})"
            )
        self.seed = seed
        self.n_buckets = n_buckets
        self.hidden = hidden
        self.lr = lr
        self.entropy = entropy
        self.batch_size = batch_size
        self.memory_size = memory
        self.target = check_target(target)
        self._rng = np.random.default_rng(seed)
        self._gen = torch.Generator().manual_seed(seed)
        self._training = True
        self._memory = Memory(memory)
        self._fresh = 0
        self._n_features: int | None = None
        self._position = torch.arange(n_buckets, dtype=torch.float32) / (n_buckets - 1)

    # -- networks (built lazily: the feature count comes with the first cycle) ---------

    def _build(self, n_features: int) -> None:
        raise NotImplementedError

    def _modules(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def _logits(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _ensure(self, n_features: int) -> None:
        if self._n_features is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                self._build(n_features)
            self._n_features = n_features
        elif n_features != self._n_features:
            raise ConfigError(
                f"{self.name}: built for {self._n_features} features, got {n_features}"
            )

    # -- Policy -------------------------------------------------------------------------

    def act(self, obs: CycleObservation) -> NDArray[np.float64]:
        """Priorities: a sampled (training) or most probable bucket plus a tie-break."""
        n = len(obs.test_ids)
        if n == 0:
            return np.zeros(0, dtype=np.float64)
        torch.set_num_threads(1)
        self._ensure(obs.features.shape[1])
        with torch.no_grad():
            probs = torch.softmax(self._logits(torch.from_numpy(obs.features)), dim=-1)
            if self._training:
                chosen = torch.multinomial(probs, 1, generator=self._gen).squeeze(-1)
            else:
                chosen = probs.argmax(dim=-1)
            tie = probs @ self._position
        return priorities_of(chosen.numpy().astype(np.int64), tie.numpy().astype(np.float64))

    def observe(
        self, obs: CycleObservation, priorities: NDArray[np.float64], outcome: CycleOutcome
    ) -> list[Transition]:
        """Record each test's bucket, reward and behaviour log-probability."""
        actions = buckets_of(priorities, self.n_buckets)
        if self._training and len(obs.test_ids) > 0:
            self._ensure(obs.features.shape[1])
            with torch.no_grad():
                logp = torch.log_softmax(self._logits(torch.from_numpy(obs.features)), dim=-1)
                chosen = logp.gather(1, torch.from_numpy(actions).unsqueeze(1)).squeeze(1)
            self._memory.add(obs.features, actions, outcome.rewards, chosen.numpy())
            self._fresh += len(obs.test_ids)
        return transitions_of(self.name, obs, actions, outcome)

    def _update(self) -> tuple[int, float]:
        raise NotImplementedError

    def train(self) -> TrainStats:
        """Learn from the memory (see the class); a no-op when not training."""
        if not self._training or self._fresh == 0:
            return TrainStats()
        torch.set_num_threads(1)
        start = time.perf_counter()
        updates, loss = self._update()
        self._fresh = 0
        return TrainStats(updates=updates, loss=loss, seconds=time.perf_counter() - start)

    def hyperparameters(self) -> dict[str, Any]:
        """The constructor's keyword arguments (without ``seed``)."""
        return {
            "n_buckets": self.n_buckets,
            "hidden": self.hidden,
            "lr": self.lr,
            "entropy": self.entropy,
            "batch_size": self.batch_size,
            "memory": self.memory_size,
            "target": self.target,
        }

    def save(self, directory: Path) -> None:
        """Write ``hyperparameters.json`` and ``weights.pt`` (networks and optimisers)."""
        write_hyperparameters(directory, self.name, self.seed, self.hyperparameters())
        blob: dict[str, Any] = {"n_features": self._n_features}
        if self._n_features is not None:
            blob["modules"] = {k: m.state_dict() for k, m in self._modules().items()}
            blob["optimizers"] = {k: o.state_dict() for k, o in self._optimizers().items()}
        torch.save(blob, directory / _WEIGHTS_FILE)

    def load(self, directory: Path) -> None:
        """Read what :meth:`save` wrote.

        Raises:
            ConfigError: missing files, another algorithm, or other hyperparameters.
        """
        saved = read_hyperparameters(directory, self.name)
        if saved != self.hyperparameters():
            raise ConfigError(f"{directory}: saved with other hyperparameters: {saved}")
        try:
            blob = torch.load(directory / _WEIGHTS_FILE, weights_only=True)
            n_features = blob["n_features"]
            if n_features is None:
                return
            self._n_features = None
            self._ensure(int(n_features))
            for key, module in self._modules().items():
                module.load_state_dict(blob["modules"][key])
            for key, optimizer in self._optimizers().items():
                optimizer.load_state_dict(blob["optimizers"][key])
        except (OSError, RuntimeError, KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{directory}: unreadable weights ({exc})") from exc

    def set_training(self, training: bool) -> None:
        """Sampling and learning on (``True``) or off (most probable bucket)."""
        self._training = training

    # -- helpers for the updates ---------------------------------------------------------

    def _batch(self, rows: NDArray[np.int64]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        m = self._memory
        actions = m.actions[rows]
        returns = learning_targets(actions, m.rewards[rows], self.n_buckets, self.target)
        return (
            torch.from_numpy(m.states[rows]),
            torch.from_numpy(actions),
            torch.from_numpy(returns.astype(np.float32)),
            torch.from_numpy(m.logps[rows]),
        )

    def _minibatches(self, rows: NDArray[np.int64]) -> list[NDArray[np.int64]]:
        shuffled = rows[self._rng.permutation(rows.size)]
        return [shuffled[i : i + self.batch_size] for i in range(0, shuffled.size, self.batch_size)]


class _SharedNet(nn.Module):
    """A tanh trunk with an actor head (bucket logits) and a critic head (value)."""

    def __init__(self, n_in: int, hidden: int, n_buckets: int) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh()
        )
        self.actor = nn.Linear(hidden, n_buckets)
        self.critic = nn.Linear(hidden, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.trunk(x)
        return self.actor(h), self.critic(h).squeeze(-1)


class _SharedPolicy(_DiscretePolicy):
    reward: str = "timerank"
    """The reward :func:`aqe.learning.evaluate.evaluate_online` scores these policies with."""

    def __init__(
        self,
        seed: int = 0,
        *,
        value_coef: float = 0.5,
        n_buckets: int = 5,
        target: str = "penalised",
        **kwargs: Any,
    ) -> None:
        super().__init__(seed, n_buckets=n_buckets, target=target, **kwargs)
        self.value_coef = value_coef
        self._net: _SharedNet | None = None
        self._opt: torch.optim.Optimizer | None = None

    def _build(self, n_features: int) -> None:
        self._net = _SharedNet(n_features, self.hidden, self.n_buckets)
        self._opt = torch.optim.Adam(self._net.parameters(), lr=self.lr)

    def _parts(self) -> tuple[_SharedNet, torch.optim.Optimizer]:
        if self._net is None or self._opt is None:
            raise RuntimeError(f"{self.name}: no network before the first cycle")
        return self._net, self._opt

    def _modules(self) -> dict[str, nn.Module]:
        return {"net": self._parts()[0]}

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"net": self._parts()[1]}

    def _logits(self, x: Tensor) -> Tensor:
        logits: Tensor = self._parts()[0](x)[0]
        return logits

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "value_coef": self.value_coef}


class A2CPolicy(_SharedPolicy):
    """Advantage actor-critic with a shared trunk, synchronous minibatch updates.

    Like :class:`PPOPolicy` it learns from the ``timerank`` reward with the ``penalised``
    target over 5 buckets (see the module docstring); its minibatches hold 16 decisions
    and their advantages are normalised.

    Args:
        seed: seeds weights, sampling and shuffling.
        n_buckets: priority buckets (actions).
        hidden: units per hidden layer (two layers).
        lr: Adam step size.
        entropy: entropy bonus weight.
        batch_size: minibatch size.
        memory: replay memory capacity (decisions).
        target: ``"penalised"``, ``"calibration"`` or ``"raw"``.
        value_coef: weight of the critic's squared error.
        normalize_advantage: scale each minibatch's advantages to mean 0, std 1.
    """

    name = "a2c"

    def __init__(
        self,
        seed: int = 0,
        *,
        batch_size: int = 16,
        normalize_advantage: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(seed, batch_size=batch_size, **kwargs)
        self.normalize_advantage = normalize_advantage

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "normalize_advantage": self.normalize_advantage}

    def _update(self) -> tuple[int, float]:
        net, opt = self._parts()
        rows = self._memory.last_rows(self._fresh)
        total, updates = 0.0, 0
        for batch in self._minibatches(rows):
            states, actions, returns, _ = self._batch(batch)
            logits, values = net(states)
            logp = torch.log_softmax(logits, dim=-1)
            advantage = (returns - values).detach()
            if self.normalize_advantage and advantage.numel() > 1:
                advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
            chosen = logp.gather(1, actions.unsqueeze(1)).squeeze(1)
            entropy = -(logp.exp() * logp).sum(-1).mean()
            value_loss = (returns - values).pow(2).mean()
            loss = -(chosen * advantage).mean() + self.value_coef * value_loss
            loss = loss - self.entropy * entropy
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.item())
            updates += 1
        return updates, total / max(updates, 1)


class PPOPolicy(_SharedPolicy):
    """Proximal policy optimisation (clipped surrogate) with a shared trunk.

    Args:
        seed, n_buckets, hidden, lr, entropy, batch_size, memory, target, value_coef:
            as for :class:`A2CPolicy` (but ``batch_size`` 64 by default).
        clip: the ratio clip ``epsilon``.
        epochs: passes over the window per :meth:`train`.
        window: how many of the newest cycles each :meth:`train` learns from.
    """

    name = "ppo"

    def __init__(
        self,
        seed: int = 0,
        *,
        clip: float = 0.2,
        epochs: int = 4,
        window: int = 4,
        **kwargs: Any,
    ) -> None:
        super().__init__(seed, **kwargs)
        if clip <= 0 or epochs < 1 or window < 1:
            raise ConfigError(
                f"need clip > 0, epochs >= 1, window >= 1 ({clip}, {epochs}, {window})"
            )
        self.clip = clip
        self.epochs = epochs
        self.window = window

    def hyperparameters(self) -> dict[str, Any]:
        return {
            **super().hyperparameters(),
            "clip": self.clip,
            "epochs": self.epochs,
            "window": self.window,
        }

    def _update(self) -> tuple[int, float]:
        net, opt = self._parts()
        rows = self._memory.last_cycles(self.window)
        total, updates = 0.0, 0
        for _ in range(self.epochs):
            for batch in self._minibatches(rows):
                states, actions, returns, old_logp = self._batch(batch)
                logits, values = net(states)
                logp = torch.log_softmax(logits, dim=-1)
                chosen = logp.gather(1, actions.unsqueeze(1)).squeeze(1)
                advantage = (returns - values).detach()
                if advantage.numel() > 1:
                    advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
                ratio = torch.exp(chosen - old_logp)
                surrogate = torch.minimum(
                    ratio * advantage,
                    torch.clamp(ratio, 1.0 - self.clip, 1.0 + self.clip) * advantage,
                )
                entropy = -(logp.exp() * logp).sum(-1).mean()
                value_loss = (returns - values).pow(2).mean()
                loss = -surrogate.mean() + self.value_coef * value_loss - self.entropy * entropy
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.item())
                updates += 1
        return updates, total / max(updates, 1)


class ActorCriticPolicy(_DiscretePolicy):
    """One-step actor-critic: separate actor and critic networks, per-decision updates.

    Args:
        seed, n_buckets, hidden, lr, entropy, memory, target: as for :class:`A2CPolicy`
            (``lr`` is the actor's step size), but 10 buckets and the ``calibration``
            target by default, with the evaluator's reward.
        critic_lr: the critic's step size.
        gamma: discount, used only for decisions that are not ``done`` (none here).
    """

    name = "actor-critic"

    def __init__(
        self, seed: int = 0, *, critic_lr: float = 5e-3, gamma: float = 0.9, **kwargs: Any
    ) -> None:
        super().__init__(seed, **kwargs)
        self.critic_lr = critic_lr
        self.gamma = gamma
        self._actor: nn.Sequential | None = None
        self._critic: nn.Sequential | None = None
        self._actor_opt: torch.optim.Optimizer | None = None
        self._critic_opt: torch.optim.Optimizer | None = None

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "critic_lr": self.critic_lr, "gamma": self.gamma}

    def _build(self, n_features: int) -> None:
        self._actor = _mlp(n_features, self.hidden, self.n_buckets)
        self._critic = _mlp(n_features, self.hidden, 1)
        # Fused Adam: one kernel per step instead of a loop over tensors; the per-decision
        # updates are dominated by such overheads, not by arithmetic.
        self._actor_opt = torch.optim.Adam(self._actor.parameters(), lr=self.lr, fused=True)
        self._critic_opt = torch.optim.Adam(
            self._critic.parameters(), lr=self.critic_lr, fused=True
        )

    def _parts(
        self,
    ) -> tuple[nn.Sequential, nn.Sequential, torch.optim.Optimizer, torch.optim.Optimizer]:
        if (
            self._actor is None
            or self._critic is None
            or self._actor_opt is None
            or self._critic_opt is None
        ):
            raise RuntimeError(f"{self.name}: no networks before the first cycle")
        return self._actor, self._critic, self._actor_opt, self._critic_opt

    def _modules(self) -> dict[str, nn.Module]:
        actor, critic, _, _ = self._parts()
        return {"actor": actor, "critic": critic}

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        _, _, actor_opt, critic_opt = self._parts()
        return {"actor": actor_opt, "critic": critic_opt}

    def _logits(self, x: Tensor) -> Tensor:
        logits: Tensor = self._parts()[0](x)
        return logits

    def _update(self) -> tuple[int, float]:
        actor, critic, actor_opt, critic_opt = self._parts()
        rows = self._memory.last_rows(self._fresh)
        states, actions, returns, _ = self._batch(rows)
        total = 0.0
        # One-step episodes (done): the TD target is the return itself.
        for i in range(rows.size):
            s = states[i : i + 1]
            delta = returns[i] - critic(s).squeeze()
            logp = torch.log_softmax(actor(s), dim=-1).squeeze(0)
            entropy = -(logp.exp() * logp).sum()
            actor_loss = -logp[actions[i]] * delta.detach() - self.entropy * entropy
            # The two losses share no parameters: one backward pass gives each network
            # exactly the gradient of its own loss.
            critic_opt.zero_grad()
            actor_opt.zero_grad()
            (delta.pow(2) + actor_loss).backward()
            critic_opt.step()
            actor_opt.step()
            total += float(delta.detach().pow(2).item())
        return int(rows.size), total / max(int(rows.size), 1)
