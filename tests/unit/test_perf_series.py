"""The perf projection: a pure fold; rebuild from zero equals folding in parts; alerts due."""

from __future__ import annotations

import msgspec
import pytest

from aqe.events import Event
from aqe.events.perf import (
    BenchmarkMeasured,
    MachineFingerprint,
    PerfAlertDelivered,
    PerfAlertRaised,
    PerfChangeDetected,
    PerfChangeVerified,
)
from aqe.perf.alerts import alert_events
from aqe.perf.pipeline import new_changes
from aqe.perf.series import PerfProjection, PerfState
from support.envelopes import envelope

MACHINE = MachineFingerprint(machine_class="x86_64-test-2c-py3.12", cores=2)


def points(levels: list[float]) -> list[Event]:
    out: list[Event] = []
    for i, level in enumerate(levels):
        wobble = 1 + 0.01 * ((i * 7) % 5 - 2)
        out.append(
            BenchmarkMeasured(
                series_id="s1",
                benchmark="bench_x",
                metric="time",
                unit="s",
                samples=(level * wobble, level * wobble * 1.01, level * wobble * 0.99),
                machine=MACHINE,
                commit=f"c{i:03d}",
                run_id=f"r{i}",
                command=("python3", "-c", "pass"),
                repo="file:///repo",
            )
        )
    return out


def fold(events: list[Event], state: PerfState | None = None, start: int = 1) -> PerfState:
    projection = PerfProjection()
    state = state or projection.initial()
    for i, event in enumerate(events):
        state = projection.apply(state, envelope(event, start + i), event)
    return state


def test_points_fold_in_order_and_a_run_counts_once() -> None:
    events = points([1.0, 1.0, 1.1])
    state = fold([*events, events[1]])
    series = state.series["s1"]
    assert [p.commit for p in series.points] == ["c000", "c001", "c002"]
    assert series.command == ("python3", "-c", "pass")
    assert series.points[0].n == 3


def test_rebuild_from_zero_equals_incremental_through_snapshots() -> None:
    projection = PerfProjection()
    events = points([1.0] * 30 + [1.3] * 20)
    whole = fold(events)
    found = new_changes(whole)
    assert len(found) == 1
    tail: list[Event] = [
        found[0],
        PerfChangeVerified(
            change_id=found[0].change_id,
            verdict="confirmed",
            magnitude=1.3,
            p_value=0.001,
            samples_before=15,
            samples_after=15,
        ),
    ]
    everything = [*events, *tail]
    rebuilt = projection.encode(fold(everything))
    # Fold half, save and load the snapshot bytes, fold the rest: the same bytes.
    half = projection.decode(projection.encode(fold(everything[:25])))
    incremental = fold(everything[25:], half, start=26)
    assert projection.encode(incremental) == rebuilt


def test_change_alerts_once_then_resolves_when_the_series_returns() -> None:
    events = points([1.0] * 30 + [1.3] * 20)
    state = fold(events)
    (change,) = new_changes(state)
    assert change.direction == "regression"
    assert (change.commit_before, change.commit_after) == ("c029", "c030")
    state = fold([change], state, start=100)
    assert new_changes(state) == []  # the same change is not detected twice
    assert alert_events(state) == []  # suspected only: no alert
    verified = PerfChangeVerified(
        change_id=change.change_id,
        verdict="confirmed",
        magnitude=1.29,
        p_value=0.001,
        samples_before=15,
        samples_after=15,
    )
    state = fold([verified], state, start=101)
    (raised,) = alert_events(state)
    assert isinstance(raised.event, PerfAlertRaised)
    assert raised.event_id == f"alert-{change.change_id}"
    state = fold([raised.event], state, start=102)
    assert alert_events(state) == []  # firing, the series has not returned
    back = points([1.0] * 30 + [1.3] * 20 + [1.0] * 40)[50:]
    state = fold(back, state, start=200)
    (resolved,) = [e for e in alert_events(state) if e.event.type_tag() == "perf.alert.resolved.v1"]
    state = fold([resolved.event], state, start=300)
    delivered = PerfAlertDelivered(change_id=change.change_id, sink="webhook", state="firing")
    state = fold([delivered, delivered], state, start=301)
    entry = state.changes[change.change_id]
    assert entry.alert == "resolved"
    assert entry.delivered == ["webhook:firing"]


def test_a_point_without_samples_is_refused_before_the_state_changes() -> None:
    projection = PerfProjection()
    state = fold(points([1.0]))
    before = projection.encode(state)
    empty = msgspec.structs.replace(points([1.0])[0], samples=(), run_id="r-empty")  # type: ignore[type-var]
    with pytest.raises(ValueError, match="at least one sample"):
        projection.apply(state, envelope(empty, 9), empty)
    assert projection.encode(state) == before


def test_detected_events_carry_what_alerts_need() -> None:
    state = fold(points([1.0] * 30 + [0.7] * 20))
    (change,) = new_changes(state)
    assert isinstance(change, PerfChangeDetected)
    assert change.direction == "improvement"
    assert change.magnitude < 0.75
    assert change.points_before >= 5
