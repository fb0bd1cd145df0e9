"""A2C, one-step Actor-Critic and PPO on synthetic cycles where the right order is known."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from aqe.errors import ConfigError
from aqe.learning.algos.policy_gradient import A2CPolicy, ActorCriticPolicy, PPOPolicy
from aqe.learning.base import CycleObservation, CycleOutcome

ALL = [A2CPolicy, ActorCriticPolicy, PPOPolicy]
PolicyClass = type[A2CPolicy] | type[ActorCriticPolicy] | type[PPOPolicy]
AnyPolicy = A2CPolicy | ActorCriticPolicy | PPOPolicy


def make_cycle(
    rng: np.random.Generator, index: int, n: int = 30
) -> tuple[CycleObservation, NDArray[np.int8]]:
    """A cycle whose tests fail exactly when column 0 >= 0.75 (a perfect predictor)."""
    feats = rng.random((n, 6), dtype=np.float32)
    verdicts = (feats[:, 0] >= 0.75).astype(np.int8)
    obs = CycleObservation(
        cycle=f"c{index}",
        test_ids=tuple(f"t{index}-{i}" for i in range(n)),
        features=feats,
        durations=np.ones(n),
    )
    return obs, verdicts


def auc(priorities: NDArray[np.float64], verdicts: NDArray[np.int8]) -> float:
    """How often a failing test outranks a passing one (1 perfect, 0.5 random)."""
    fail, ok = priorities[verdicts == 1], priorities[verdicts == 0]
    wins = (fail[:, None] > ok[None, :]).mean() + 0.5 * (fail[:, None] == ok[None, :]).mean()
    return float(wins)


def run(policy: AnyPolicy, cycles: int, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    for c in range(cycles):
        obs, verdicts = make_cycle(rng, c)
        pri = policy.act(obs)
        rewards = verdicts.astype(np.float32)
        outcome = CycleOutcome(verdicts=verdicts, durations=obs.durations, rewards=rewards)
        policy.observe(obs, pri, outcome)
        policy.train()


def held_out_auc(policy: AnyPolicy, cycles: int = 20) -> float:
    rng = np.random.default_rng(99)
    scores = []
    for c in range(cycles):
        obs, verdicts = make_cycle(rng, 10_000 + c)
        if verdicts.any() and not verdicts.all():
            scores.append(auc(policy.act(obs), verdicts))
    return float(np.mean(scores))


@pytest.mark.parametrize("cls", ALL)
def test_learns_to_rank_failing_tests_first(cls: PolicyClass) -> None:
    # ~100 Adam steps for the shared-trunk ones; actor-critic takes one per decision.
    policy = cls(seed=0, lr=3e-3)
    run(policy, 60 if cls is ActorCriticPolicy else 150)
    policy.set_training(False)
    assert held_out_auc(policy) > 0.9


@pytest.mark.parametrize("cls", ALL)
def test_same_seed_same_priorities(cls: PolicyClass) -> None:
    a, b = cls(seed=5), cls(seed=5)
    run(a, 10)
    run(b, 10)
    obs, _ = make_cycle(np.random.default_rng(3), 0)
    assert np.array_equal(a.act(obs), b.act(obs))  # sampling included
    c = cls(seed=6)
    run(c, 10)
    assert not np.array_equal(a.act(obs), c.act(obs))


@pytest.mark.parametrize("cls", ALL)
def test_sampling_only_while_training(cls: PolicyClass) -> None:
    policy = cls(seed=0)
    obs, _ = make_cycle(np.random.default_rng(3), 0, n=200)
    policy.set_training(False)
    first = policy.act(obs)
    assert np.array_equal(first, policy.act(obs))
    policy.set_training(True)
    assert not np.array_equal(first, policy.act(obs))


@pytest.mark.parametrize("cls", ALL)
def test_observe_and_train(cls: PolicyClass) -> None:
    policy = cls(seed=0)
    assert policy.train().updates == 0  # nothing seen yet
    obs, verdicts = make_cycle(np.random.default_rng(0), 4)
    pri = policy.act(obs)
    rewards = verdicts.astype(np.float32)
    steps = policy.observe(
        obs, pri, CycleOutcome(verdicts=verdicts, durations=obs.durations, rewards=rewards)
    )
    assert len(steps) == 30
    assert {s.policy for s in steps} == {policy.name}
    assert all(s.done and s.state == s.next_state and s.cycle == "c4" for s in steps)
    assert [s.action for s in steps] == [float(np.floor(p)) for p in pri]
    assert all(0 <= s.action < 10 for s in steps)
    stats = policy.train()
    assert stats.updates > 0
    assert stats.loss is not None
    assert policy.train().updates == 0  # nothing new
    policy.set_training(False)
    policy.observe(
        obs, pri, CycleOutcome(verdicts=verdicts, durations=obs.durations, rewards=rewards)
    )
    assert policy.train().updates == 0


@pytest.mark.parametrize("cls", ALL)
def test_save_load_round_trip(cls: PolicyClass, tmp_path: Path) -> None:
    policy = cls(seed=1, hidden=16)
    run(policy, 5)
    policy.set_training(False)
    policy.save(tmp_path)
    again = cls(seed=1, **policy.hyperparameters())
    again.load(tmp_path)
    again.set_training(False)
    obs, _ = make_cycle(np.random.default_rng(8), 0)
    assert np.array_equal(policy.act(obs), again.act(obs))


def test_load_refuses_other_algorithm_and_unbuilt_save_is_fine(tmp_path: Path) -> None:
    A2CPolicy(seed=0).save(tmp_path)
    with pytest.raises(ConfigError):
        PPOPolicy(seed=0).load(tmp_path)
    fresh = A2CPolicy(seed=0)
    fresh.load(tmp_path)  # saved before any cycle: nothing to restore


def test_feature_count_is_fixed_by_the_first_cycle() -> None:
    policy = PPOPolicy(seed=0)
    run(policy, 1)
    obs = CycleObservation(
        cycle="x",
        test_ids=("a",),
        features=np.zeros((1, 3), dtype=np.float32),
        durations=np.zeros(1),
    )
    with pytest.raises(ConfigError):
        policy.act(obs)


def test_attributes_and_bad_settings() -> None:
    assert [(c.name, c.kind) for c in ALL] == [
        ("a2c", "discrete"),
        ("actor-critic", "discrete"),
        ("ppo", "discrete"),
    ]
    with pytest.raises(ConfigError):
        PPOPolicy(clip=0.0)
    with pytest.raises(ConfigError):
        A2CPolicy(target="nonsense")


@pytest.mark.parametrize("cls", ALL)
def test_a_thousand_decisions_train_fast(cls: PolicyClass) -> None:
    policy = cls(seed=0)
    started = time.perf_counter()
    run(policy, 34)  # ~1,000 decisions, training after each cycle
    assert time.perf_counter() - started < 5.0
