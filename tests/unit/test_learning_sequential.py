"""Q-learning and SARSA over pick-next-test episodes: real multi-step decisions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aqe.errors import ConfigError
from aqe.learning.algos.sequential import SequentialQLearning, SequentialSarsa
from aqe.learning.base import CycleOutcome
from aqe.learning.evaluate import evaluate_online
from aqe.learning.features import Cycle, HistoryTracker


def _cycles(count: int = 30) -> list[Cycle]:
    """t3 and t8 fail in most cycles, the rest rarely."""
    rng = np.random.default_rng(0)
    ids = tuple(f"t{i}" for i in range(12))
    return [
        Cycle(
            cycle_id=f"c{c}",
            test_ids=ids,
            durations=(1.0,) * 12,
            verdicts=tuple(int(rng.random() < (0.8 if i in (3, 8) else 0.03)) for i in range(12)),
        )
        for c in range(count)
    ]


@pytest.mark.parametrize("cls", [SequentialQLearning, SequentialSarsa])
def test_learns_to_pick_the_failing_tests_first(cls: type[SequentialQLearning]) -> None:
    report = evaluate_online(cls(seed=1), _cycles())
    late = [s.apfd for s in report.per_cycle[15:] if s.apfd is not None]
    assert sum(late) / len(late) > 0.7  # random is 0.5; the optimum about 0.92


def test_episodes_are_multi_step_and_q_learning_differs_from_sarsa() -> None:
    cycles = _cycles(12)
    q, s = SequentialQLearning(seed=2, epsilon=0.5), SequentialSarsa(seed=2, epsilon=0.5)
    evaluate_online(q, cycles)
    evaluate_online(s, cycles)
    # the same episodes' first update is the same; the bootstraps (max over what is left
    # vs the class actually picked next) make the tables differ
    assert q._q.keys() & s._q.keys()
    assert any(not np.allclose(q._q[k], s._q[k]) for k in q._q.keys() & s._q.keys())
    policy = SequentialSarsa(seed=0)
    tracker = HistoryTracker()
    for c in cycles[:3]:
        tracker.observe_cycle(c.cycle_id, c.test_ids, c.durations, c.verdicts)
    last = cycles[3]
    obs = tracker.observation(last.cycle_id, last.test_ids, now=3)
    priorities = policy.act(obs)
    outcome = CycleOutcome(
        verdicts=np.asarray(last.verdicts, dtype=np.int8),
        durations=np.asarray(last.durations),
        rewards=np.zeros(12, dtype=np.float32),
    )
    steps = policy.observe(obs, priorities, outcome)
    assert [t.done for t in steps] == [False] * 11 + [True]
    order = np.argsort(-priorities, kind="stable")
    assert [t.test_id for t in steps] == [last.test_ids[i] for i in order]
    assert steps[0].next_state == steps[1].state
    n = 12
    for k, t in enumerate(steps, start=1):
        failed = last.verdicts[last.test_ids.index(t.test_id)]
        assert t.reward == pytest.approx((n - k + 0.5) / n if failed else 0.0)
    assert policy.train().updates == 12


def test_same_seed_same_order_and_save_load(tmp_path: Path) -> None:
    cycles = _cycles(10)
    one, two = SequentialQLearning(seed=4), SequentialQLearning(seed=4)
    assert evaluate_online(one, cycles).per_cycle == evaluate_online(two, cycles).per_cycle
    one.save(tmp_path)
    loaded = SequentialQLearning(seed=4)
    loaded.load(tmp_path)
    loaded.set_training(False)
    one.set_training(False)
    tracker = HistoryTracker()
    for c in cycles:
        tracker.observe_cycle(c.cycle_id, c.test_ids, c.durations, c.verdicts)
    obs = tracker.observation("next", cycles[0].test_ids, now=10)
    np.testing.assert_array_equal(one.act(obs), loaded.act(obs))
    with pytest.raises(ConfigError, match="other hyperparameters"):
        SequentialQLearning(seed=4, gamma=0.5).load(tmp_path)
    with pytest.raises(ConfigError):
        SequentialSarsa(epsilon=2.0)
