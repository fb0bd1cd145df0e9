"""The perf-confirms projection: confirm instances and their verdicts, a pure fold."""

from __future__ import annotations

import pytest

from aqe.events import (
    Event,
    WorkflowDecided,
    WorkflowFinished,
    WorkflowStarted,
)
from aqe.perf.confirms import ConfirmsProjection, ConfirmsState, Verdict, confirm_instance_id
from support.envelopes import envelope


def fold(events: list[Event], state: ConfirmsState | None = None, start: int = 1) -> ConfirmsState:
    projection = ConfirmsProjection()
    state = state or projection.initial()
    for seq, event in enumerate(events, start=start):
        state = projection.apply(state, envelope(event, seq, "AQE_WORKFLOWS"), event)
    return state


def verdict(instance_id: str, change_id: str, decision: str = "confirmed") -> WorkflowDecided:
    return WorkflowDecided(
        instance_id=instance_id,
        key="verdict",
        decision=decision,
        reasons=(f"{decision} by re-runs",),
        data={"change_id": change_id, "magnitude": "2.5", "p_value": "0.0001"},
    )


A, B = confirm_instance_id("c-a"), confirm_instance_id("c-b")
STORY: list[Event] = [
    WorkflowStarted(instance_id=A, workflow="perf-confirm", params={"change_id": "c-a"}),
    WorkflowStarted(instance_id="flaky-1", workflow="flaky", params={"test_id": "t"}),
    WorkflowStarted(instance_id=B, workflow="perf-confirm", params={"change_id": "c-b"}),
    # Another workflow deciding a 'verdict' about a change id is not a perf verdict.
    verdict("flaky-1", "c-a", "dismissed"),
    WorkflowFinished(instance_id="flaky-1", status="succeeded"),
    verdict(A, "c-a"),
    # An instance that does not belong to the change in its data is ignored.
    verdict(A, "c-b", "dismissed"),
    WorkflowFinished(instance_id=A, status="succeeded"),
    verdict(A, "c-a", "dismissed"),  # a second verdict: the first one stands
]


def test_fold_keeps_confirm_instances_and_their_first_verdicts() -> None:
    state = fold(STORY)
    assert state.instances == {A: "succeeded", B: ""}
    assert not state.running(A)
    assert state.running(B)
    assert not state.running("flaky-1")
    assert state.verdicts == {
        "c-a": Verdict(
            instance_id=A,
            decision="confirmed",
            reasons=("confirmed by re-runs",),
            data={"change_id": "c-a", "magnitude": "2.5", "p_value": "0.0001"},
        )
    }


@pytest.mark.parametrize("cut", range(len(STORY) + 1))
def test_rebuild_from_zero_equals_incremental_through_snapshots(cut: int) -> None:
    projection = ConfirmsProjection()
    rebuilt = projection.encode(fold(STORY))
    half = projection.decode(projection.encode(fold(STORY[:cut])))
    assert projection.encode(fold(STORY[cut:], half, start=cut + 1)) == rebuilt
