"""The history trigger of the flaky workflow and the events its quarantine decisions append."""

from __future__ import annotations

from aqe.events import (
    Envelope,
    Event,
    TestCaseExecuted,
    TestCaseQuarantined,
    TestCaseUnquarantined,
    TestRunFinished,
    TestRunStarted,
    WorkflowDecided,
)
from aqe.projections.history import HistoryProjection, HistoryState
from aqe.workflows._flaky_trigger import flaky_instance_id, flaky_starts, quarantine_event

BASE = {"source": "/src/project", "python": "python"}


def _fold(events: list[Event]) -> HistoryState:
    projection = HistoryProjection()
    state = projection.initial()
    for seq, event in enumerate(events, start=1):
        env = Envelope(
            stream="AQE_TESTS",
            seq=seq,
            subject="aqe.tests.x",
            event_id=f"e{seq}",
            event_type=type(event).__name__,
            recorded_at_ns=seq,
            data=b"",
        )
        state = projection.apply(state, env, event)
    return state


def _run(run_id: str, commit: str, outcomes: dict[str, list[str]]) -> list[Event]:
    events: list[Event] = [TestRunStarted(run_id=run_id, commit=commit)]
    for test_id, attempts in outcomes.items():
        events.extend(
            TestCaseExecuted(
                test_id=test_id,
                run_id=run_id,
                outcome=o,
                attempt=i,
                commit=commit,  # type: ignore[arg-type]
            )
            for i, o in enumerate(attempts, start=1)
        )
    events.append(TestRunFinished(run_id=run_id, total=len(outcomes), passed=0, failed=0))
    return events


def test_a_pass_on_retry_starts_one_instance_with_a_deterministic_id() -> None:
    state = _fold(_run("ci-1", "c1", {"a.t_retry": ["failed", "passed"], "a.t_ok": ["passed"]}))
    starts = flaky_starts(state, BASE)
    assert [s.params["test_id"] for s in starts] == ["a.t_retry"]
    assert starts[0].instance_id == flaky_instance_id("a.t_retry", "ci-1")
    assert starts[0].params["source"] == "/src/project"
    assert "passed on retry in run ci-1" in starts[0].reasons[0]
    assert flaky_starts(state, BASE) == starts


def test_a_failure_on_a_commit_where_it_had_passed_starts_an_instance() -> None:
    events = _run("ci-1", "c1", {"a.t": ["passed"], "a.u": ["passed"]})
    events += _run("ci-2", "c1", {"a.t": ["failed"], "a.u": ["passed"]})
    events += _run("ci-3", "c2", {"a.v": ["failed"]})
    starts = flaky_starts(_fold(events), BASE)
    assert [s.params["test_id"] for s in starts] == ["a.t"]
    assert "on commit c1, where it had passed" in starts[0].reasons[0]


def test_new_commits_quarantined_active_and_workflow_runs_start_nothing() -> None:
    events = _run("ci-1", "c1", {"a.t": ["passed"]})
    events += _run("ci-2", "c2", {"a.t": ["failed"]})
    events += _run("ci-3", "c3", {"a.q": ["failed", "passed"], "a.busy": ["failed", "passed"]})
    events += _run("wf-0123-a1", "c3", {"a.w": ["failed", "passed"]})
    events.append(TestCaseQuarantined(test_id="a.q", reason="flaky"))
    assert flaky_starts(_fold(events), BASE, active={"a.busy"}) == []


def test_quarantine_decisions_become_events_with_the_evidence_and_stable_ids() -> None:
    decided = WorkflowDecided(
        instance_id="flaky-1",
        key="quarantine",
        decision="quarantine",
        data={
            "test_id": "check_state.test_registry_starts_empty",
            "verdict": "order-dependent",
            "failure_rate": "0.000",
            "interval": "[0.000, 0.259]",
            "polluter": "check_state.py::test_register_user",
        },
    )
    mapped = quarantine_event(decided)
    assert mapped is not None
    event_id, event = mapped
    assert event_id == "flaky-1-quarantine"
    assert isinstance(event, TestCaseQuarantined)
    assert event.by == "workflow:flaky-1"
    assert "polluter check_state.py::test_register_user" in event.reason
    assert "failure rate 0.000 [0.000, 0.259]" in event.reason
    lifted = quarantine_event(
        WorkflowDecided(
            instance_id="flaky-1",
            key="unquarantine",
            decision="unquarantine",
            reasons=("5 clean passes in a row",),
            data={"test_id": "check_state.test_registry_starts_empty"},
        )
    )
    assert lifted is not None
    assert isinstance(lifted[1], TestCaseUnquarantined)
    assert (
        quarantine_event(WorkflowDecided(instance_id="f", key="verdict", decision="flaky")) is None
    )
