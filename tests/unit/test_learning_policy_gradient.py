"""A2C, Actor-Critic and PPO (orderings as episodes of picks) on synthetic cycles where the
right order is known."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from aqe.errors import ConfigError
from aqe.learning.algos._common import Target, learning_targets, position_rewards
from aqe.learning.algos.policy_gradient import (
    A2CPolicy,
    ActorCriticPolicy,
    PPOPolicy,
    step_log_probs,
)
from aqe.learning.base import CycleObservation, CycleOutcome
from aqe.learning.metrics import apfd, rank

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
    policy = cls(seed=0)
    run(policy, 40)
    policy.set_training(False)
    assert held_out_auc(policy) > 0.9


@pytest.mark.parametrize("cls", ALL)
def test_same_seed_same_priorities(cls: PolicyClass) -> None:
    a, b = cls(seed=5), cls(seed=5)
    run(a, 10)
    run(b, 10)
    obs, _ = make_cycle(np.random.default_rng(3), 0)
    assert np.array_equal(a.act(obs), b.act(obs))  # the sampled training episodes included
    c = cls(seed=6)
    run(c, 10)
    assert not np.array_equal(a.act(obs), c.act(obs))


def test_step_log_probs_make_a_distribution_over_orderings() -> None:
    # Plackett-Luce: the probabilities of all 4! orderings sum to 1, and the ordering
    # by descending score is the most probable one.
    from itertools import permutations

    import torch

    scores = torch.tensor([0.3, -1.2, 2.0, 0.5])
    probs = {
        order: float(step_log_probs(scores[list(order)]).sum().exp())
        for order in permutations(range(4))
    }
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert max(probs, key=lambda o: probs[o]) == (2, 3, 0, 1)


@pytest.mark.parametrize("cls", ALL)
def test_act_is_the_mode_training_or_not(cls: PolicyClass) -> None:
    policy = cls(seed=0)
    obs, _ = make_cycle(np.random.default_rng(3), 0, n=50)
    first = policy.act(obs)
    policy.set_training(False)
    assert np.array_equal(first, policy.act(obs))


def test_position_rewards_sum_to_failures_times_apfd() -> None:
    ordered = np.array([0, 1, 0, 0, 1, 1, 0], dtype=np.int8)
    rewards = position_rewards(ordered)
    assert rewards[ordered == 0].tolist() == [0.0] * 4
    assert rewards.sum() == pytest.approx(3 * (apfd(ordered) or 0.0))
    assert rewards[1] > rewards[4] > rewards[5] > 0


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
    order = rank(pri, obs.test_ids)
    assert [s.test_id for s in steps] == [obs.test_ids[i] for i in order]
    assert {s.policy for s in steps} == {policy.name}
    assert [s.done for s in steps] == [False] * 29 + [True]
    assert all(a.next_state == b.state for a, b in itertools.pairwise(steps))
    assert [s.action for s in steps] == [float(30 - k) for k in range(30)]
    assert [s.reward for s in steps] == pytest.approx(position_rewards(verdicts[order]).tolist())
    stats = policy.train()
    assert stats.updates > 0
    assert stats.loss is not None
    assert policy.train().updates == 0  # nothing new
    policy.set_training(False)
    policy.observe(
        obs, pri, CycleOutcome(verdicts=verdicts, durations=obs.durations, rewards=rewards)
    )
    assert policy.train().updates == 0


def test_cycles_where_order_cannot_matter_are_not_replayed() -> None:
    policy = A2CPolicy(seed=0)
    obs, _ = make_cycle(np.random.default_rng(0), 0)
    for verdicts in (np.zeros(30, np.int8), np.ones(30, np.int8)):
        outcome = CycleOutcome(verdicts=verdicts, durations=obs.durations, rewards=verdicts * 1.0)
        policy.observe(obs, policy.act(obs), outcome)
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
        A2CPolicy(gamma=1.5)
    with pytest.raises(ConfigError):
        ActorCriticPolicy(replay=0)
    with pytest.raises(ConfigError):
        A2CPolicy(batch=0)


def test_penalised_target_does_not_pay_for_hiding_a_failure() -> None:
    # tcfail under a budget, a test failing with probability p: claimed at bucket p and
    # run, it earns 1 when it fails; put in bucket 0 it runs after the budget and earns
    # 0 either way. "calibration" prefers hiding it; "penalised" does not.
    p, n = 0.3, 11
    claim = np.array([3, 3], dtype=np.int64)  # bucket 3 of 0..10: the claim 0.3
    hide = np.array([0, 0], dtype=np.int64)
    fails_or_not = np.array([1.0, 0.0], dtype=np.float32)
    weights = np.array([p, 1 - p])

    def expected(actions: np.ndarray, rewards: np.ndarray, target: Target) -> float:
        return float(weights @ learning_targets(actions, rewards, n, target))

    nothing = np.zeros(2, dtype=np.float32)
    assert expected(hide, nothing, "calibration") > expected(claim, fails_or_not, "calibration")
    assert expected(claim, fails_or_not, "penalised") > expected(hide, nothing, "penalised")
    assert expected(claim, fails_or_not, "penalised") == pytest.approx(p**2)
    # A negative reward (timerank's missed failure) is a cost whatever the claim.
    missed = learning_targets(np.array([0, 10]), np.array([-1.0, -1.0], np.float32), n, "penalised")
    assert missed.tolist() == [-1.0, -2.0]


def test_defaults_round_trip() -> None:
    for cls in ALL:
        assert not hasattr(cls, "reward")  # their reward is their own, by position
        hp = cls(seed=0).hyperparameters()
        assert hp["gamma"] == 0.0
        assert cls(seed=0, **hp).hyperparameters() == hp
