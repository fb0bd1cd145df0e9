"""The experience-buffer projection: buffers per policy, tables, sampling."""

from __future__ import annotations

from pathlib import Path

import pytest

from aqe.events import Envelope, Event, ExperienceRecorded, ExperienceStep, PolicyTrained
from aqe.learning import experience as exp
from aqe.learning.experience import ExperienceProjection, sample, transitions
from aqe.log.subjects import subject_for
from aqe.projections import Snapshot, SnapshotStore
from aqe.projections.tables import read_table, tables_current


def recorded(policy: str, cycle: int, n: int = 3, version: int = 1) -> ExperienceRecorded:
    return ExperienceRecorded(
        policy_id=policy,
        algorithm="ppo",
        cycle=f"c{cycle}",
        feature_version=version,
        steps=tuple(
            ExperienceStep(
                test_id=f"t{i}",
                state=(i / n, cycle / 10),
                action=float(i),
                reward=1.0 if i == 0 else 0.0,
            )
            for i in range(n)
        ),
    )


def fold(*events: Event) -> exp.ExperienceState:
    projection = ExperienceProjection()
    state = projection.initial()
    for seq, event in enumerate(events, start=1):
        env = Envelope(
            stream="AQE_LEARNING",
            seq=seq,
            subject=subject_for(event),
            event_id=event.default_id(),
            event_type=event.type_tag(),
            recorded_at_ns=seq,
            data=event.to_json(),
            headers={},
        )
        state = projection.apply(state, env, event)
    return state


def test_buffers_per_policy_in_recording_order() -> None:
    state = fold(recorded("a", 1), recorded("b", 1, n=2), recorded("a", 2))
    a = state.policies["a"]
    assert (a.cycles, a.recorded, len(a.steps)) == (2, 6, 6)
    got = transitions(state, "a")
    assert [t.cycle for t in got] == ["c1"] * 3 + ["c2"] * 3
    assert got[0].state == got[0].next_state
    assert got[0].done
    assert got[0].reward == 1.0
    assert len(transitions(state, "b")) == 2


def test_capacity_keeps_the_newest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exp, "CAPACITY", 4)
    state = fold(recorded("a", 1), recorded("a", 2))
    assert [s.cycle for s in state.policies["a"].steps] == ["c1", "c2", "c2", "c2"]
    assert state.policies["a"].recorded == 6


def test_a_feature_version_change_is_refused() -> None:
    with pytest.raises(ValueError, match="feature version"):
        fold(recorded("a", 1), recorded("a", 2, version=2))


def test_trained_policies_are_listed() -> None:
    state = fold(
        recorded("a", 1),
        PolicyTrained(policy_id="a", algorithm="ppo", seed=1, feature_version=1, cycles=1),
    )
    assert state.policies["a"].trained[0]["seed"] == 1


def test_sampling_is_seeded_and_without_replacement() -> None:
    state = fold(*(recorded("a", c, n=5) for c in range(10)))
    first = sample(state, "a", 7, seed=3)
    assert first == sample(state, "a", 7, seed=3)
    assert first != sample(state, "a", 7, seed=4)
    assert len({(t.cycle, t.test_id) for t in first}) == 7
    assert len(sample(state, "a", 1000)) == 50


def test_same_events_same_buffers_and_table(tmp_path: Path) -> None:
    events = [recorded("a", 1), recorded("b", 2)]
    projection = ExperienceProjection()
    one, two = fold(*events), fold(*events)
    assert projection.encode(one) == projection.encode(two)
    assert projection.encode(projection.decode(projection.encode(one))) == projection.encode(one)
    store = SnapshotStore(projection, tmp_path / "experience")
    store.save(Snapshot(state=one, checkpoints={"AQE_LEARNING": 2}))
    assert tables_current(tmp_path / "experience", {"AQE_LEARNING": 2})
    rows = read_table(tmp_path / "experience", "transitions")
    assert [(r["policy_id"], r["test_id"]) for r in rows] == [
        ("a", "t0"),
        ("a", "t1"),
        ("a", "t2"),
        ("b", "t0"),
        ("b", "t1"),
        ("b", "t2"),
    ]
    assert rows[0]["state"] == pytest.approx([0.0, 0.1])
