"""Tabular Q-learning and SARSA on synthetic cycles where the right order is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from aqe.errors import ConfigError
from aqe.learning.algos._common import Memory, buckets_of, learning_targets, priorities_of
from aqe.learning.algos.tabular import QLearningPolicy, SarsaPolicy
from aqe.learning.base import CycleObservation, CycleOutcome

NAMES = ("fail_rate", "noise", "verdict_1", "since_fail")


def make_cycle(
    rng: np.random.Generator, index: int, n: int = 30
) -> tuple[CycleObservation, NDArray[np.int8]]:
    """A cycle whose tests fail exactly when ``fail_rate`` >= 0.75 (a perfect predictor)."""
    feats = rng.random((n, len(NAMES)), dtype=np.float32)
    verdicts = (feats[:, 0] >= 0.75).astype(np.int8)
    obs = CycleObservation(
        cycle=f"c{index}",
        test_ids=tuple(f"t{index}-{i}" for i in range(n)),
        features=feats,
        durations=np.ones(n),
        feature_names=NAMES,
    )
    return obs, verdicts


def auc(priorities: NDArray[np.float64], verdicts: NDArray[np.int8]) -> float:
    """How often a failing test outranks a passing one (1 perfect, 0.5 random)."""
    fail, ok = priorities[verdicts == 1], priorities[verdicts == 0]
    wins = (fail[:, None] > ok[None, :]).mean() + 0.5 * (fail[:, None] == ok[None, :]).mean()
    return float(wins)


def run(policy: QLearningPolicy, cycles: int, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    for c in range(cycles):
        obs, verdicts = make_cycle(rng, c)
        pri = policy.act(obs)
        rewards = verdicts.astype(np.float32)  # "tcfail" without a budget
        outcome = CycleOutcome(verdicts=verdicts, durations=obs.durations, rewards=rewards)
        policy.observe(obs, pri, outcome)
        policy.train()


def held_out_auc(policy: QLearningPolicy, cycles: int = 20) -> float:
    rng = np.random.default_rng(99)
    scores = []
    for c in range(cycles):
        obs, verdicts = make_cycle(rng, 10_000 + c)
        if verdicts.any():
            scores.append(auc(policy.act(obs), verdicts))
    return float(np.mean(scores))


@pytest.mark.parametrize("cls", [QLearningPolicy, SarsaPolicy])
def test_learns_to_rank_failing_tests_first(cls: type[QLearningPolicy]) -> None:
    policy = cls(seed=3)
    run(policy, 300)
    policy.set_training(False)
    assert held_out_auc(policy) > 0.9


def test_untrained_policy_is_about_random() -> None:
    policy = QLearningPolicy(seed=3)
    policy.set_training(False)
    assert held_out_auc(policy) < 0.7


@pytest.mark.parametrize("target", ["calibration", "raw"])
def test_raw_target_learns_from_a_rank_aware_reward(target: str) -> None:
    # A reward that depends on the bucket: failing tests earn 1 only in the top half of
    # the buckets, passing tests pay 0.5 for being there. Both targets should learn it.
    policy = QLearningPolicy(seed=0, target=target)
    rng = np.random.default_rng(5)
    for c in range(300):
        obs, verdicts = make_cycle(rng, c)
        pri = policy.act(obs)
        high = buckets_of(pri, 10) >= 5
        rewards = np.where(verdicts == 1, high * 1.0, high * -0.5).astype(np.float32)
        outcome = CycleOutcome(verdicts=verdicts, durations=obs.durations, rewards=rewards)
        policy.observe(obs, pri, outcome)
        policy.train()
    policy.set_training(False)
    assert held_out_auc(policy) > 0.9


def test_observe_returns_one_step_transitions() -> None:
    policy = SarsaPolicy(seed=0)
    obs, verdicts = make_cycle(np.random.default_rng(0), 7)
    pri = policy.act(obs)
    rewards = verdicts.astype(np.float32)
    outcome = CycleOutcome(verdicts=verdicts, durations=obs.durations, rewards=rewards)
    steps = policy.observe(obs, pri, outcome)
    assert len(steps) == len(obs.test_ids)
    first = steps[0]
    assert first.policy == "sarsa"
    assert first.cycle == "c7"
    assert first.test_id == obs.test_ids[0]
    assert first.done
    assert first.state == first.next_state
    assert first.state == tuple(float(v) for v in obs.features[0])
    assert first.action == float(np.floor(pri[0]))
    assert [s.reward for s in steps] == [float(r) for r in rewards]
    stats = policy.train()
    assert stats.updates == len(obs.test_ids)


@pytest.mark.parametrize("cls", [QLearningPolicy, SarsaPolicy])
def test_same_seed_same_priorities(cls: type[QLearningPolicy]) -> None:
    a, b = cls(seed=11), cls(seed=11)
    run(a, 30)
    run(b, 30)
    obs, _ = make_cycle(np.random.default_rng(123), 0)
    assert np.array_equal(a.act(obs), b.act(obs))  # exploration included


def test_exploration_only_while_training() -> None:
    policy = QLearningPolicy(seed=0, epsilon=1.0)
    run(policy, 5)
    obs, _ = make_cycle(np.random.default_rng(4), 0)
    policy.set_training(False)
    first = policy.act(obs)
    assert np.array_equal(first, policy.act(obs))
    policy.set_training(True)
    assert not np.array_equal(first, policy.act(obs))


def test_no_learning_while_not_training() -> None:
    policy = QLearningPolicy(seed=0)
    policy.set_training(False)
    run(policy, 3)
    assert policy.train().updates == 0


@pytest.mark.parametrize("cls", [QLearningPolicy, SarsaPolicy])
def test_save_load_round_trip(cls: type[QLearningPolicy], tmp_path: Path) -> None:
    policy = cls(seed=2, alpha=0.2)
    run(policy, 40)
    policy.set_training(False)
    policy.save(tmp_path)
    again = cls(seed=2, **policy.hyperparameters())
    again.load(tmp_path)
    again.set_training(False)
    obs, _ = make_cycle(np.random.default_rng(8), 0)
    assert np.array_equal(policy.act(obs), again.act(obs))


def test_load_refuses_other_algorithm_or_hyperparameters(tmp_path: Path) -> None:
    QLearningPolicy(seed=0).save(tmp_path)
    with pytest.raises(ConfigError):
        SarsaPolicy(seed=0).load(tmp_path)
    with pytest.raises(ConfigError):
        QLearningPolicy(seed=0, alpha=0.5).load(tmp_path)


def test_columns_fall_back_without_names() -> None:
    policy = QLearningPolicy(seed=0)
    obs = CycleObservation(
        cycle="c",
        test_ids=("a", "b"),
        features=np.zeros((2, 5), dtype=np.float32),
        durations=np.zeros(2),
    )
    pri = policy.act(obs)
    assert pri.shape == (2,)
    assert policy.hyperparameters()["columns"] is None


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        QLearningPolicy(n_buckets=1)
    with pytest.raises(ConfigError):
        QLearningPolicy(target="nonsense")


def test_common_helpers() -> None:
    buckets = np.array([0, 3, 9], dtype=np.int64)
    pri = priorities_of(buckets, np.array([1.0, 0.2, 5.0]))
    assert np.array_equal(buckets_of(pri, 10), buckets)
    targets = learning_targets(
        buckets, np.array([0.0, 1.0, 1.0], dtype=np.float32), 10, "calibration"
    )
    assert targets[0] == 0.0
    assert targets[2] == 0.0
    assert targets[1] < 0.0
    memory = Memory(5)
    for c in range(3):
        memory.add(
            np.full((2, 3), c, dtype=np.float32),
            np.zeros(2, dtype=np.int64),
            np.zeros(2, dtype=np.float32),
        )
    assert len(memory) == 5
    assert memory.states[memory.last_cycles(1)].max() == 2
    assert memory.last_cycles(2).size == 4
