"""The Decision Transformer: offline fitting, return conditioning, determinism."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from aqe.errors import ConfigError  # noqa: E402
from aqe.learning.algos.decision_transformer import (  # noqa: E402
    DecisionTransformerPolicy,
    _places,
    _returns_to_go,
)
from aqe.learning.base import CycleObservation, CycleOutcome, Transition  # noqa: E402

N_TESTS = 24
N_FEATURES = 4
FAST = {"fit_steps": 60, "min_transitions": 1}


def synthetic_cycle(rng: np.random.Generator, index: int) -> tuple[CycleObservation, np.ndarray]:
    """Feature 0 above 0.7 means the test fails; tests recur across cycles."""
    feats = rng.random((N_TESTS, N_FEATURES)).astype(np.float32)
    verdicts = (feats[:, 0] > 0.7).astype(np.int8)
    obs = CycleObservation(
        cycle=f"c{index}",
        test_ids=tuple(f"t{j}" for j in range(N_TESTS)),
        features=feats,
        durations=np.ones(N_TESTS),
    )
    return obs, verdicts


def outcome_for(verdicts: np.ndarray, priorities: np.ndarray) -> CycleOutcome:
    # A reward that depends on the decision: high priority pays for a failing test,
    # low priority for a passing one; the best return is 1.
    rewards = np.where(verdicts == 1, priorities, 1.0 - priorities).astype(np.float32)
    return CycleOutcome(verdicts=verdicts, durations=np.ones(len(verdicts)), rewards=rewards)


Outcome = Callable[[np.ndarray, np.ndarray], CycleOutcome]


def gather(
    policy: DecisionTransformerPolicy, cycles: int, seed: int = 1, outcome: Outcome = outcome_for
) -> list[Transition]:
    rng = np.random.default_rng(seed)
    out: list[Transition] = []
    for i in range(cycles):
        obs, verdicts = synthetic_cycle(rng, i)
        priorities = policy.act(obs)
        out += policy.observe(obs, priorities, outcome(verdicts, priorities))
    return out


def eval_obs() -> CycleObservation:
    return synthetic_cycle(np.random.default_rng(42), 999)[0]


def test_returns_to_go_follow_done_flags() -> None:
    assert _returns_to_go([1.0, 0.0, 2.0], [True, True, True], 1.0, 5.0) == [1.0, 0.0, 2.0]
    assert _returns_to_go([1.0, 0.0, 2.0], [False, False, False], 0.5, 4.0) == [
        1.0 + 0.5 * (0.0 + 0.5 * (2.0 + 0.5 * 4.0)),
        0.0 + 0.5 * (2.0 + 0.5 * 4.0),
        2.0 + 0.5 * 4.0,
    ]


def pairs_right(policy: DecisionTransformerPolicy, outcome: Outcome, cycles: int = 10) -> float:
    """How often a failing test outranks a passing one over fresh cycles (training off)."""
    policy.set_training(False)
    rng = np.random.default_rng(7)
    right = total = 0
    for i in range(cycles):
        obs, verdicts = synthetic_cycle(rng, 100 + i)
        prio = policy.act(obs)
        fail = verdicts == 1
        diff = prio[fail][:, None] - prio[~fail][None, :]
        right += int((diff > 0).sum())
        total += diff.size
        policy.observe(obs, prio, outcome(verdicts, prio))
    return right / total


def test_conditioned_on_a_high_return_it_ranks_failing_tests_first() -> None:
    # Here the best return is open to every test, by a state-dependent action: the model
    # must read the state to answer the one fixed target.
    policy = DecisionTransformerPolicy(seed=0, fit_steps=400, lr=3e-3, target_return=1.0)
    transitions = gather(policy, 40)  # untrained: uniformly random priorities
    stats = policy.fit(transitions)
    assert stats.updates == 400
    rewards = [t.reward for t in transitions]
    assert policy._returns == pytest.approx((min(rewards), max(rewards)))
    assert pairs_right(policy, outcome_for) > 0.9


def budget_outcome(verdicts: np.ndarray, priorities: np.ndarray) -> CycleOutcome:
    # tcfail under a budget: 1 for a failing test in the first half of the order.
    first_half = _places(priorities, tuple(map(str, range(len(verdicts))))) >= 0.5
    rewards = ((verdicts == 1) & first_half).astype(np.float32)
    return CycleOutcome(verdicts=verdicts, durations=np.ones(len(verdicts)), rewards=rewards)


def test_asks_each_test_for_a_return_it_can_plausibly_earn() -> None:
    # Only a failing test can earn 1, and only early: one fixed target would ask every
    # test to run early; the per-test aim asks that of the tests likely to fail.
    policy = DecisionTransformerPolicy(seed=0)
    policy.fit(gather(policy, 40, outcome=budget_outcome))
    assert policy._returns == (0.0, 1.0)
    assert pairs_right(policy, budget_outcome) > 0.9


def test_places_run_from_first_to_last_with_ties_by_id() -> None:
    assert _places(np.array([0.2, 0.9, 0.5]), ("a", "b", "c")).tolist() == [0.0, 1.0, 0.5]
    assert _places(np.array([0.5, 0.5]), ("b", "a")).tolist() == [0.0, 1.0]
    assert _places(np.array([3.0]), ("a",)).tolist() == [0.5]


def test_fit_from_transitions_equals_training_through_observe() -> None:
    online = DecisionTransformerPolicy(seed=4, **FAST)
    transitions = gather(online, 6)
    assert online.train().updates == FAST["fit_steps"]
    offline = DecisionTransformerPolicy(seed=4, **FAST)
    offline.fit(transitions)
    for p in (online, offline):
        p.set_training(False)
    assert np.array_equal(online.act(eval_obs()), offline.act(eval_obs()))


def test_train_refits_only_when_the_data_has_grown() -> None:
    policy = DecisionTransformerPolicy(seed=0, **FAST)
    gather(policy, 2)
    assert policy.train().updates == FAST["fit_steps"]
    assert policy.train().updates == 0
    gather(policy, 2, seed=3)
    assert policy.train().updates == FAST["fit_steps"]


def test_transitions_and_interface() -> None:
    policy = DecisionTransformerPolicy(seed=0)
    assert policy.kind == "offline"
    assert policy.name == "decision-transformer"
    obs, verdicts = synthetic_cycle(np.random.default_rng(0), 0)
    prio = policy.act(obs)
    assert prio.shape == (N_TESTS,)
    assert prio.dtype == np.float64
    recorded = policy.observe(obs, prio, outcome_for(verdicts, prio))
    t = recorded[3]
    assert (t.policy, t.cycle, t.test_id) == ("decision-transformer", "c0", "t3")
    assert t.action == prio[3]
    assert t.state == t.next_state == tuple(float(x) for x in obs.features[3])
    assert t.done
    assert policy.train().updates == 0  # fewer than min_transitions


def test_same_seed_same_priorities() -> None:
    a, b, c = (DecisionTransformerPolicy(seed=s, **FAST) for s in (5, 5, 6))
    for p in (a, b, c):
        gather(p, 3)
        p.train()
    assert np.array_equal(a.act(eval_obs()), b.act(eval_obs()))
    assert not np.array_equal(a.act(eval_obs()), c.act(eval_obs()))


def test_exploration_off_when_not_training() -> None:
    policy = DecisionTransformerPolicy(seed=0, **FAST)
    gather(policy, 3)
    policy.train()
    assert not np.array_equal(policy.act(eval_obs()), policy.act(eval_obs()))
    policy.set_training(False)
    assert np.array_equal(policy.act(eval_obs()), policy.act(eval_obs()))


def test_save_load_round_trip(tmp_path: Path) -> None:
    policy = DecisionTransformerPolicy(seed=1, **FAST)
    gather(policy, 4)
    policy.train()
    policy.save(tmp_path)
    again = DecisionTransformerPolicy(seed=1, **policy.hyperparameters())
    again.load(tmp_path)
    for p in (policy, again):
        p.set_training(False)
    assert np.array_equal(policy.act(eval_obs()), again.act(eval_obs()))


def test_load_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no saved"):
        DecisionTransformerPolicy().load(tmp_path)
    with pytest.raises(ConfigError, match="unknown"):
        DecisionTransformerPolicy(contxt=4)


def test_load_refuses_a_policy_saved_before_the_return_head(tmp_path: Path) -> None:
    policy = DecisionTransformerPolicy(seed=1, **FAST)
    gather(policy, 4)
    policy.train()
    policy.save(tmp_path)
    state = tmp_path / "state.json"
    meta = json.loads(state.read_text())
    meta["target"] = meta.pop("returns")[1]  # what the older version wrote
    state.write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="unreadable"):
        DecisionTransformerPolicy(seed=1, **FAST).load(tmp_path)
