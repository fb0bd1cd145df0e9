"""The heuristic baselines, the oracle, and the registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aqe.errors import ConfigError
from aqe.learning.base import CycleObservation, CycleOutcome, Policy
from aqe.learning.baselines import (
    DurationAwarePolicy,
    FailureCountPolicy,
    OptimalPolicy,
    RandomPolicy,
    RecentFailurePolicy,
)
from aqe.learning.features import HistoryTracker
from aqe.learning.registry import ALGORITHMS, BASELINES, LEARNERS, make_policy

IDS = ("a", "b", "c")


def _feed(policy: Policy, history: list[tuple[list[int], list[float]]]) -> CycleObservation:
    """Observe each (verdicts, durations) cycle of IDS; return the next observation."""
    tracker = HistoryTracker()
    for t, (verdicts, durations) in enumerate(history):
        obs = tracker.observation(f"c{t}", IDS, now=t)
        priorities = policy.act(obs)
        outcome = CycleOutcome(
            verdicts=np.asarray(verdicts, np.int8),
            durations=np.asarray(durations, np.float64),
            rewards=np.asarray(verdicts, np.float32),
        )
        transitions = policy.observe(obs, priorities, outcome)
        assert [tr.test_id for tr in transitions] == list(IDS)
        assert [tr.reward for tr in transitions] == [float(v) for v in verdicts]
        assert all(tr.policy == policy.name for tr in transitions)
        tracker.observe_cycle(f"c{t}", IDS, durations, verdicts, now=t)
    return tracker.observation(f"c{len(history)}", IDS, now=len(history))


HISTORY = [
    ([1, 0, 0], [1.0, 1.0, 10.0]),
    ([1, 0, 1], [1.0, 1.0, 10.0]),
    ([0, 1, 1], [1.0, 1.0, 10.0]),
]


def _order(policy: Policy, obs: CycleObservation) -> list[str]:
    from aqe.learning.metrics import rank

    return [IDS[i] for i in rank(policy.act(obs), obs.test_ids)]


def test_failure_count_ranks_the_most_failing_first() -> None:
    policy = FailureCountPolicy()
    obs = _feed(policy, HISTORY)
    # a: 2 failures, c: 2, b: 1 → a, c (tie by id), b
    assert _order(policy, obs) == ["a", "c", "b"]


def test_recent_failure_ranks_the_latest_failure_first() -> None:
    policy = RecentFailurePolicy()
    obs = _feed(policy, HISTORY)
    # b and c failed in cycle 3, a last in cycle 2
    assert _order(policy, obs) == ["b", "c", "a"]


def test_duration_aware_prefers_cheap_failures() -> None:
    policy = DurationAwarePolicy()
    obs = _feed(policy, HISTORY)
    # a: (2/3)/1 s, b: (1/3)/1 s, c: (2/3)/10 s
    assert _order(policy, obs) == ["a", "b", "c"]


def test_new_tests_get_no_priority_from_history() -> None:
    for policy in (FailureCountPolicy(), RecentFailurePolicy(), DurationAwarePolicy()):
        obs = HistoryTracker().observation("c0", IDS, now=0)
        assert policy.act(obs).tolist() == [0.0, 0.0, 0.0]


def test_random_is_deterministic_by_seed() -> None:
    obs = HistoryTracker().observation("c0", IDS, now=0)
    assert np.array_equal(RandomPolicy(seed=3).act(obs), RandomPolicy(seed=3).act(obs))
    assert not np.array_equal(RandomPolicy(seed=3).act(obs), RandomPolicy(seed=4).act(obs))


@pytest.mark.parametrize("name", BASELINES)
def test_save_and_load_round_trip(name: str, tmp_path: Path) -> None:
    policy = make_policy(name, seed=5)
    obs = _feed(policy, HISTORY)
    policy.save(tmp_path)
    again = make_policy(name, seed=5, **policy.hyperparameters())
    again.load(tmp_path)
    assert np.array_equal(policy.act(obs), again.act(obs))
    assert policy.train().updates == 0
    policy.set_training(False)


def test_load_refuses_another_policys_state(tmp_path: Path) -> None:
    FailureCountPolicy().save(tmp_path)
    with pytest.raises(ConfigError, match="failure-count"):
        RecentFailurePolicy().load(tmp_path)
    with pytest.raises(ConfigError, match="cannot read"):
        RecentFailurePolicy().load(tmp_path / "missing")


def test_heuristics_take_no_hyperparameters() -> None:
    with pytest.raises(ConfigError, match="lr"):
        make_policy("failure-count", lr=0.1)


def test_the_oracle_needs_the_outcome_and_puts_cheap_failures_first() -> None:
    policy = OptimalPolicy()
    obs = HistoryTracker().observation("c0", IDS, now=0)
    with pytest.raises(ConfigError, match="reveal"):
        policy.act(obs)
    policy.reveal("c0", np.array([1, 0, 1], np.int8), np.array([5.0, 1.0, 2.0]))
    assert _order(policy, obs) == ["c", "a", "b"]
    assert policy.oracle


def test_registry_names() -> None:
    assert set(BASELINES) | {"optimal"} | set(LEARNERS) == set(ALGORITHMS)
    assert len(LEARNERS) == 9
    assert make_policy("random", seed=1).name == "random"
    for name in BASELINES:
        assert make_policy(name).kind == "heuristic"


def test_unknown_algorithm_lists_the_names() -> None:
    with pytest.raises(ConfigError, match="failure-count") as err:
        make_policy("nope")
    assert "decision-transformer" in str(err.value)
