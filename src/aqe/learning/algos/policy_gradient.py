"""Policy-gradient prioritisers over real sequential decisions: A2C, Actor-Critic, PPO.

Ordering a cycle of ``n`` tests is an episode of ``n`` decisions (as for
:mod:`aqe.learning.algos.sequential`):

* **state** at step ``k``: the tests still to place (their feature rows);
* **action**: the next test, drawn from ``pi(i | remaining) = softmax(s)`` over the
  remaining tests, where the actor gives every test a score ``s = f(features)`` (a
  listwise, Plackett-Luce policy: the whole ordering's probability is the product of
  these choices);
* **reward** of the test placed at 1-based position ``k``: ``(n - k + 0.5) / n`` if it
  fails, else 0 (:func:`~aqe.learning.algos._common.position_rewards`): the failure's
  share of APFD, so the return of an episode is ``m * APFD`` and a failing test earns
  more the earlier it is placed (rank-aware by construction);
* **critic**: the value of a state is additive over the tests still to place,
  ``V_k = sum_{j remaining} v(x_j)``, ``v`` a critic head, so ``V_n = 0`` at the end.

The algorithms differ in how they learn from an episode (advantages normalised per
episode, so every cycle weighs the same whatever its size):

* :class:`A2CPolicy` ("a2c"): shared trunk, actor and critic heads; advantage
  ``G_k - V_k`` with the Monte-Carlo return-to-go ``G_k``; one synchronous update per
  train call over the episodes drawn.
* :class:`ActorCriticPolicy` ("actor-critic"): separate actor and critic networks
  and optimisers; the one-step TD error ``r_k + gamma V_{k+1} - V_k`` (bootstrapped)
  is both the actor's advantage and the critic's error; one update per episode.
* :class:`PPOPolicy` ("ppo"): shared trunk; GAE(``gamma``, ``lam``) advantages and the
  clipped surrogate over the per-step log-probabilities, ``epochs`` passes per batch,
  the behaviour log-probabilities being those of the policy that sampled the episode.

Experience and replay. Every observed cycle's features and verdicts are kept (the
newest ``memory`` cycles; all of IOF/ROL by default). A past cycle is an environment
that can be replayed exactly: its verdicts are known once it ran. Each :meth:`train`
samples ``replay`` episodes from the current policy (Gumbel-perturbed scores, i.e. an
ordering drawn from the Plackett-Luce policy, with a seeded ``torch.Generator``) on the
newest cycle and on past cycles drawn uniformly (seeded numpy ``Generator``), and
learns from them, as Bagherzadeh, Kahani and Briand (TSE 2021) train on episodes
simulated from earlier cycles. Cycles where order cannot matter (one test, none or
all failing) are not replayed: every ordering earns the same.

Acting. :meth:`act` returns the scores themselves: the most probable ordering of the
Plackett-Luce policy (its mode). The exploration is in the sampled training episodes,
never in the ranking that is evaluated. Decisions only ever see the observation
(earlier cycles); the verdicts arrive in :meth:`observe`, after the ranking.

Networks are MLPs with two hidden layers of ``hidden`` (32) tanh units, trained with
Adam; torch runs on one thread; weights are initialised under ``torch.manual_seed(seed)``
inside a forked RNG. Same seed, same data: same priorities.

Defaults measured on IOF/ROL seed 0 (APFD, ``aqe`` / ``rows`` protocol, 18 feature
columns). The first version (one-step bandits over 5 or 10 priority buckets with a
``timerank`` / ``penalised`` target, as RETECS formulates them) reached 0.584 / 0.606
(A2C), 0.548 / 0.578 (actor-critic, 5-seed means) and 0.594 / 0.622 (PPO, 5-seed
means). As episodes of picks with ``gamma`` 1 (the return-to-go, a long-horizon credit
for each pick): PPO 0.559. ``gamma`` 0 (each pick judged by its own reward; placing a
passing test early already costs through the later failures' smaller rewards): A2C
0.597 / 0.623, actor-critic 0.597, PPO 0.588 (``lr`` 3e-3) and 0.593 (``lr`` 1e-3).
A2C with 16 replayed episodes instead of 8: 0.596. With feature version 2, A2C over
seeds 0 and 2 (aqe): one update of 8 episodes 0.587 / 0.579; ``batch`` 2 (four
updates) 0.585 / 0.586; and ``value_coef`` 0.1 **0.590 / 0.586** (its default);
``lr`` 1e-3 0.586 / 0.558. PPO: ``epochs`` 2 0.584 (seed 0); ``batch`` 4 0.589 /
0.590; ``value_coef`` 0.1 0.592 / 0.588; both (its defaults) **0.594 / 0.588**, against
0.585 (seed 0) for one batch and ``value_coef`` 0.5; ``batch`` 2 with 2 epochs 0.593 /
0.588. Over seeds 0-4 (aqe), against the defaults' 0.591 (A2C) and 0.591 (PPO): A2C
``batch`` 1 0.591; PPO ``batch`` 2 0.592, ``lr`` 2e-3 0.592: inside the spread, not kept.
``value_coef`` 0.01 (their defaults): A2C **0.594** (every seed up, 0.593-0.597), PPO
0.595 / 0.594 / 0.592 on seeds 0-2 (against 0.594 / 0.593 / 0.588): the critic's
gradient through the shared trunk was costing the actor.
A critic head on the trunk's detached output instead (``value_coef`` 0.5; no critic
gradient in the trunk at all): A2C 0.594, PPO 0.594 over seeds 0-4: no better, not kept.
Then over seeds 0-4 (aqe), against 0.594 (A2C) and 0.595 (PPO): A2C ``lr`` 1e-3 0.593,
16 replayed episodes 0.591; PPO ``lr`` 5e-4 0.595, 16 replayed episodes 0.596 (twice
the training time): inside the spread, not kept.
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
    episode_transitions,
    position_rewards,
    read_hyperparameters,
    write_hyperparameters,
)
from aqe.learning.base import CycleObservation, CycleOutcome, Kind, TrainStats, Transition
from aqe.learning.metrics import rank

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


def step_log_probs(scores: Tensor) -> Tensor:
    """Per step ``k``, ``log pi(a_k | remaining)`` for scores given in pick order.

    ``log softmax`` of the picked test's score over the tests not yet placed:
    ``s_k - logsumexp(s_k, ..., s_{n-1})``.
    """
    suffix = torch.logcumsumexp(scores.flip(0), dim=0).flip(0)
    return scores - suffix


def _returns_to_go(rewards: Tensor) -> Tensor:
    return torch.flip(torch.cumsum(torch.flip(rewards, (0,)), 0), (0,))


def _normalise(advantage: Tensor) -> Tensor:
    if advantage.numel() < 2:
        return advantage
    return (advantage - advantage.mean()) / (advantage.std() + 1e-8)


class _Episode:
    """One replayed ordering: features and rewards in pick order, behaviour log-probs."""

    __slots__ = ("features", "logp", "rewards")

    def __init__(self, features: Tensor, rewards: Tensor, logp: Tensor) -> None:
        self.features = features
        self.rewards = rewards
        self.logp = logp


class _RankingPolicy:
    name: str = ""
    kind: Kind = "discrete"

    def __init__(
        self,
        seed: int = 0,
        *,
        hidden: int = 32,
        lr: float = 3e-3,
        replay: int = 8,
        memory: int = 1000,
        gamma: float = 0.0,
    ) -> None:
        if hidden < 1 or lr <= 0 or replay < 1 or memory < 1 or not 0.0 <= gamma <= 1.0:
            raise ConfigError(
                f"need hidden >= 1, lr > 0, replay >= 1, memory >= 1, 0 <= gamma <= 1 "
                f"({hidden}, {lr}, {replay}, {memory}, {gamma})"
            )
        self.seed = seed
        self.hidden = hidden
        self.lr = lr
        self.replay = replay
        self.memory = memory
        self.gamma = gamma
        self._rng = np.random.default_rng(seed)
        self._gen = torch.Generator().manual_seed(seed)
        self._training = True
        self._cycles: list[tuple[NDArray[np.float32], NDArray[np.int8]]] = []
        self._fresh = False
        self._n_features: int | None = None

    # -- networks (built lazily: the feature count comes with the first cycle) ---------

    def _build(self, n_features: int) -> None:
        raise NotImplementedError

    def _modules(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def _scores_values(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per test, the actor's score and the critic's share ``v``."""
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
        """The actor's scores: the policy's most probable ordering, highest first."""
        if len(obs.test_ids) == 0:
            return np.zeros(0, dtype=np.float64)
        torch.set_num_threads(1)
        self._ensure(obs.features.shape[1])
        with torch.no_grad():
            scores, _ = self._scores_values(torch.from_numpy(obs.features))
        return scores.numpy().astype(np.float64)

    def observe(
        self, obs: CycleObservation, priorities: NDArray[np.float64], outcome: CycleOutcome
    ) -> list[Transition]:
        """Keep the cycle for replay; one transition per placement, in run order."""
        order = rank(priorities, obs.test_ids)
        verdicts = np.asarray(outcome.verdicts, dtype=np.int8)
        if self._training and len(obs.test_ids) > 0:
            self._cycles.append((obs.features.astype(np.float32), verdicts.copy()))
            del self._cycles[: max(0, len(self._cycles) - self.memory)]
            self._fresh = True
        rewards = position_rewards(verdicts[order])
        return episode_transitions(self.name, obs, order, rewards)

    def train(self) -> TrainStats:
        """Learn from ``replay`` episodes sampled now (see the module docstring)."""
        if not self._training or not self._fresh:
            return TrainStats()
        self._fresh = False
        usable = [i for i, (_, v) in enumerate(self._cycles) if 0 < int(v.sum()) < v.size]
        if not usable:
            return TrainStats()
        torch.set_num_threads(1)
        start = time.perf_counter()
        newest = len(self._cycles) - 1
        picks = [newest] if newest in usable else []
        while len(picks) < self.replay:
            picks.append(usable[int(self._rng.integers(len(usable)))])
        episodes = [self._sample(*self._cycles[i]) for i in picks]
        updates, loss = self._update(episodes)
        return TrainStats(updates=updates, loss=loss, seconds=time.perf_counter() - start)

    def _sample(self, features: NDArray[np.float32], verdicts: NDArray[np.int8]) -> _Episode:
        """An ordering drawn from the current policy (Gumbel-max = Plackett-Luce draws)."""
        x = torch.from_numpy(features)
        with torch.no_grad():
            scores, _ = self._scores_values(x)
            u = torch.rand(scores.shape, generator=self._gen).clamp_(1e-12, 1.0 - 1e-7)
            order = torch.argsort(scores - torch.log(-torch.log(u)), descending=True)
            logp = step_log_probs(scores[order])
        failed = verdicts[order.numpy()]
        rewards = torch.from_numpy(position_rewards(failed).astype(np.float32))
        return _Episode(x[order], rewards, logp)

    def _update(self, episodes: list[_Episode]) -> tuple[int, float]:
        raise NotImplementedError

    def _values(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """``V_k`` (remaining tests' shares summed) and ``V_{k+1}`` (0 after the last)."""
        value = _returns_to_go(v)
        return value, torch.cat([value[1:], value.new_zeros(1)])

    def hyperparameters(self) -> dict[str, Any]:
        """The constructor's keyword arguments (without ``seed``)."""
        return {
            "hidden": self.hidden,
            "lr": self.lr,
            "replay": self.replay,
            "memory": self.memory,
            "gamma": self.gamma,
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
        """Read what :meth:`save` wrote (the replayed cycles are not saved).

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
        self._cycles = []

    def set_training(self, training: bool) -> None:
        """Learning (and the sampled training episodes) on or off."""
        self._training = training


class _SharedNet(nn.Module):
    """A tanh trunk with an actor head (score) and a critic head (the test's share)."""

    def __init__(self, n_in: int, hidden: int) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh()
        )
        self.actor = nn.Linear(hidden, 1)
        self.critic = nn.Linear(hidden, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.trunk(x)
        return self.actor(h).squeeze(-1), self.critic(h).squeeze(-1)


class _SharedPolicy(_RankingPolicy):
    def __init__(
        self, seed: int = 0, *, value_coef: float = 0.5, batch: int = 8, **kwargs: Any
    ) -> None:
        super().__init__(seed, **kwargs)
        if batch < 1:
            raise ConfigError(f"batch must be at least 1, got {batch}")
        self.value_coef = value_coef
        self.batch = batch
        self._net: _SharedNet | None = None
        self._opt: torch.optim.Optimizer | None = None

    def _build(self, n_features: int) -> None:
        self._net = _SharedNet(n_features, self.hidden)
        self._opt = torch.optim.Adam(self._net.parameters(), lr=self.lr)

    def _parts(self) -> tuple[_SharedNet, torch.optim.Optimizer]:
        if self._net is None or self._opt is None:
            raise RuntimeError(f"{self.name}: no network before the first cycle")
        return self._net, self._opt

    def _modules(self) -> dict[str, nn.Module]:
        return {"net": self._parts()[0]}

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"net": self._parts()[1]}

    def _scores_values(self, x: Tensor) -> tuple[Tensor, Tensor]:
        scores, values = self._parts()[0](x)
        return scores, values

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "value_coef": self.value_coef, "batch": self.batch}

    def _batches(self, count: int) -> list[range]:
        return [range(i, min(i + self.batch, count)) for i in range(0, count, self.batch)]


class A2CPolicy(_SharedPolicy):
    """Advantage actor-critic, shared trunk, one synchronous update over the episodes.

    Args:
        seed: seeds weights, the sampled episodes and the replayed cycles.
        hidden: units per hidden layer (two layers).
        lr: Adam step size.
        replay: episodes per :meth:`train` (the newest cycle and past ones).
        memory: cycles kept for replay.
        gamma: discount of the return-to-go.
        value_coef: weight of the critic's squared error (0.01: the trunk is shared,
            and the critic's gradient there costs the actor).
        batch: episodes per synchronous update (2: four updates per train call).
    """

    name = "a2c"

    def __init__(
        self, seed: int = 0, *, batch: int = 2, value_coef: float = 0.01, **kwargs: Any
    ) -> None:
        super().__init__(seed, batch=batch, value_coef=value_coef, **kwargs)

    def _update(self, episodes: list[_Episode]) -> tuple[int, float]:
        net, opt = self._parts()
        total = 0.0
        batches = self._batches(len(episodes))
        for batch in batches:
            losses = []
            for ep in (episodes[i] for i in batch):
                scores, v = net(ep.features)
                logp = step_log_probs(scores)
                value, _ = self._values(v)
                returns = _discounted(ep.rewards, self.gamma)
                advantage = _normalise((returns - value).detach())
                losses.append(
                    -(logp * advantage).mean() + self.value_coef * (returns - value).pow(2).mean()
                )
            loss = torch.stack(losses).mean()
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            total += float(loss.item())
        return len(batches), total / len(batches)


class PPOPolicy(_SharedPolicy):
    """Proximal policy optimisation (clipped surrogate, GAE) with a shared trunk.

    Args:
        seed, hidden, replay, memory, gamma: as for :class:`A2CPolicy`.
        value_coef: weight of the critic's squared error (0.01, as A2C).
        batch: episodes per clipped step (4: two steps per epoch).
        lr: Adam step size (1e-3: its ``epochs`` passes take more steps per train).
        clip: the ratio clip ``epsilon``.
        epochs: passes over the sampled episodes per :meth:`train`.
        lam: the GAE ``lambda``.
    """

    name = "ppo"

    def __init__(
        self,
        seed: int = 0,
        *,
        clip: float = 0.2,
        epochs: int = 4,
        lam: float = 0.95,
        lr: float = 1e-3,
        batch: int = 4,
        value_coef: float = 0.01,
        **kwargs: Any,
    ) -> None:
        super().__init__(seed, lr=lr, batch=batch, value_coef=value_coef, **kwargs)
        if clip <= 0 or epochs < 1 or not 0.0 <= lam <= 1.0:
            raise ConfigError(
                f"need clip > 0, epochs >= 1, 0 <= lam <= 1 ({clip}, {epochs}, {lam})"
            )
        self.clip = clip
        self.epochs = epochs
        self.lam = lam

    def hyperparameters(self) -> dict[str, Any]:
        return {
            **super().hyperparameters(),
            "clip": self.clip,
            "epochs": self.epochs,
            "lam": self.lam,
        }

    def _update(self, episodes: list[_Episode]) -> tuple[int, float]:
        net, opt = self._parts()
        # advantages from the behaviour policy's critic, fixed for the epochs
        targets = []
        with torch.no_grad():
            for ep in episodes:
                _, v = net(ep.features)
                value, following = self._values(v)
                delta = ep.rewards + self.gamma * following - value
                advantage = _discounted(delta, self.gamma * self.lam)
                targets.append((_normalise(advantage), advantage + value))
        total, updates = 0.0, 0
        for _ in range(self.epochs):
            for batch in self._batches(len(episodes)):
                total += self._clipped_step(
                    net, opt, [episodes[i] for i in batch], [targets[i] for i in batch]
                )
                updates += 1
        return updates, total / max(updates, 1)

    def _clipped_step(
        self,
        net: _SharedNet,
        opt: torch.optim.Optimizer,
        episodes: list[_Episode],
        targets: list[tuple[Tensor, Tensor]],
    ) -> float:
        losses = []
        for ep, (advantage, returns) in zip(episodes, targets, strict=True):
            scores, v = net(ep.features)
            logp = step_log_probs(scores)
            value, _ = self._values(v)
            ratio = torch.exp(logp - ep.logp)
            surrogate = torch.minimum(
                ratio * advantage,
                torch.clamp(ratio, 1.0 - self.clip, 1.0 + self.clip) * advantage,
            )
            losses.append(-surrogate.mean() + self.value_coef * (returns - value).pow(2).mean())
        loss = torch.stack(losses).mean()
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        return float(loss.item())


class ActorCriticPolicy(_RankingPolicy):
    """One-step actor-critic: separate networks, the TD(0) error as the advantage.

    Args:
        seed, hidden, lr, replay, memory, gamma: as for :class:`A2CPolicy` (``lr`` is
            the actor's step size).
        critic_lr: the critic's step size.
    """

    name = "actor-critic"

    def __init__(self, seed: int = 0, *, critic_lr: float = 5e-3, **kwargs: Any) -> None:
        super().__init__(seed, **kwargs)
        self.critic_lr = critic_lr
        self._actor: nn.Sequential | None = None
        self._critic: nn.Sequential | None = None
        self._actor_opt: torch.optim.Optimizer | None = None
        self._critic_opt: torch.optim.Optimizer | None = None

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "critic_lr": self.critic_lr}

    def _build(self, n_features: int) -> None:
        self._actor = _mlp(n_features, self.hidden, 1)
        self._critic = _mlp(n_features, self.hidden, 1)
        self._actor_opt = torch.optim.Adam(self._actor.parameters(), lr=self.lr)
        self._critic_opt = torch.optim.Adam(self._critic.parameters(), lr=self.critic_lr)

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

    def _scores_values(self, x: Tensor) -> tuple[Tensor, Tensor]:
        actor, critic, _, _ = self._parts()
        return actor(x).squeeze(-1), critic(x).squeeze(-1)

    def _update(self, episodes: list[_Episode]) -> tuple[int, float]:
        actor, critic, actor_opt, critic_opt = self._parts()
        total = 0.0
        for ep in episodes:
            value, following = self._values(critic(ep.features).squeeze(-1))
            # bootstrapped on the critic's next value: one-step temporal differences
            delta = ep.rewards + self.gamma * following.detach() - value
            logp = step_log_probs(actor(ep.features).squeeze(-1))
            actor_loss = -(logp * _normalise(delta.detach())).mean()
            critic_loss = delta.pow(2).mean()
            # no shared parameters: one backward pass gives each network its own gradient
            actor_opt.zero_grad()
            critic_opt.zero_grad()
            (actor_loss + critic_loss).backward()  # type: ignore[no-untyped-call]
            actor_opt.step()
            critic_opt.step()
            total += float(critic_loss.item())
        return len(episodes), total / max(len(episodes), 1)


def _discounted(values: Tensor, factor: float) -> Tensor:
    """``sum_{l >= k} factor ** (l - k) * values[l]`` for every ``k`` (no gradient)."""
    if factor == 1.0:
        return _returns_to_go(values.detach())
    out = np.empty(values.numel(), dtype=np.float32)
    running = 0.0
    for k, value in zip(
        range(values.numel() - 1, -1, -1), values.detach().flip(0).tolist(), strict=True
    ):
        running = value + factor * running
        out[k] = running
    return torch.from_numpy(out)
