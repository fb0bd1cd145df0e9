"""Experience in the log: rebuilt buffers are identical, and so is what is learned from them."""

from __future__ import annotations

from pathlib import Path

import nats
import numpy as np
import pytest

from aqe.events import ExperienceRecorded
from aqe.learning.algos.decision_transformer import DecisionTransformerPolicy
from aqe.learning.experience import ExperienceProjection, ExperienceState, transitions
from aqe.learning.features import Cycle, HistoryTracker
from aqe.learning.training import train_policy
from aqe.log import NewEvent, load_stream_specs
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.projections import MemoryDeadLetters, ProjectionRunner, SnapshotStore, rebuild

pytestmark = pytest.mark.nats


def synthetic_cycles(n: int = 24) -> list[Cycle]:
    """t0 fails every other cycle, t1 every fourth, t2 and t3 never."""
    return [
        Cycle(
            cycle_id=f"c{i:03d}",
            test_ids=("t0", "t1", "t2", "t3"),
            durations=(1.0, 2.0, 1.5, 0.5),
            verdicts=(int(i % 2 == 0), int(i % 4 == 0), 0, 0),
        )
        for i in range(n)
    ]


def priorities_after(state: ExperienceState, policy_id: str, cycles: list[Cycle]) -> list[float]:
    policy = DecisionTransformerPolicy(seed=5)
    policy.fit(transitions(state, policy_id))
    policy.set_training(False)
    tracker = HistoryTracker()
    for i, c in enumerate(cycles):
        tracker.observe_cycle(c.cycle_id, c.test_ids, c.durations, c.verdicts, now=i)
    obs = tracker.observation("next", cycles[0].test_ids, now=len(cycles))
    return np.asarray(policy.act(obs), dtype=np.float64).tolist()


async def test_rebuilt_buffers_and_policies_are_identical(nats_url: str, tmp_path: Path) -> None:
    cycles = synthetic_cycles()
    recorded: list[ExperienceRecorded] = []
    _, result = train_policy("failure-count", cycles, seed=1, record=recorded.append)
    policy_id = result.meta.policy_id
    assert len(recorded) == len(cycles)
    root = tmp_path / "projections"
    nc = await nats.connect(nats_url)
    try:
        specs = load_stream_specs()
        await apply_streams(nc, specs)
        log = JetStreamEventLog(nc, specs)
        await log.append_many([NewEvent(event=e) for e in recorded])
        projection = ExperienceProjection()
        store = SnapshotStore(projection, root / projection.name)
        await ProjectionRunner(projection, log, store, MemoryDeadLetters()).run()
        live = store.load().state
        await rebuild(projection, log, root, MemoryDeadLetters())
        rebuilt = store.load().state
    finally:
        await nc.close()
    assert projection.encode(live) == projection.encode(rebuilt)
    assert len(transitions(rebuilt, policy_id)) == 4 * len(cycles)
    first = priorities_after(live, policy_id, cycles)
    assert first == priorities_after(rebuilt, policy_id, cycles)
