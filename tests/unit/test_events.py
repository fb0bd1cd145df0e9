"""Event Structs, the registry's single decoder, validation and upcasting."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, ClassVar, cast

import msgspec
import pytest

from aqe.errors import EventDecodeError, EventValidationError, UnknownEventTypeError
from aqe.events import (
    REGISTRY,
    AgentHeartbeat,
    AgentRegistered,
    AgentRetired,
    AgentSuspected,
    BridgeApplied,
    Event,
    EventRegistry,
    ExperienceRecorded,
    ExperienceStep,
    LeaderCheckpointed,
    LeaseAcquired,
    LeaseReleased,
    LeaseRenewed,
    PatternAdded,
    PatternDeprecated,
    PatternUpdated,
    PatternUsed,
    PolicyTrained,
    ProposalOpened,
    TaskAbandoned,
    TaskClaimed,
    TaskCompleted,
    TaskOutcome,
    TaskParked,
    TaskQueued,
    TaskSubmitted,
    TestCaseExecuted,
    TestCaseQuarantined,
    TestCaseUnquarantined,
    TestRunFinished,
    TestRunSelected,
    TestRunStarted,
    TopologySelected,
    VoteCast,
    Voter,
    WorkflowCancelled,
    WorkflowDecided,
    WorkflowFinished,
    WorkflowStarted,
    WorkflowStepFinished,
    WorkflowStepScheduled,
    WorkflowTimerFired,
    WorkflowTimerSet,
)

WHEN = datetime(2026, 5, 1, 12, 30, 15, 250000, tzinfo=UTC)

# One fully populated example per registered type; a new type must add one here.
from aqe.events.perf import (  # noqa: E402
    BenchmarkMeasured,
    MachineFingerprint,
    PerfAlertDelivered,
    PerfAlertRaised,
    PerfAlertResolved,
    PerfChangeDetected,
    PerfChangeVerified,
)

_PERF_SAMPLES: list[Event] = [
    BenchmarkMeasured(
        series_id="s1",
        benchmark="test_parse",
        metric="time",
        unit="s",
        samples=(0.012, 0.011),
        machine=MachineFingerprint(machine_class="x86_64-4c-py3.12", cores=4),
        commit="9f2c1e7",
    ),
    PerfChangeDetected(
        change_id="c1",
        series_id="s1",
        benchmark="test_parse",
        metric="time",
        machine_class="m",
        direction="regression",
        magnitude=1.3,
        confidence=0.999,
        p_value=0.001,
        commit_before="a",
        commit_after="b",
        index=10,
        before_median=1.0,
        after_median=1.3,
        points_before=10,
        points_after=8,
    ),
    PerfChangeVerified(
        change_id="c1",
        verdict="confirmed",
        magnitude=1.3,
        p_value=0.01,
        samples_before=10,
        samples_after=10,
    ),
    PerfAlertRaised(
        change_id="c1",
        series_id="s1",
        benchmark="test_parse",
        metric="time",
        machine_class="m",
        direction="regression",
        magnitude=1.3,
        confidence=0.999,
        commit_before="a",
        commit_after="b",
        summary="30 % slower",
    ),
    PerfAlertResolved(change_id="c1", commit="c", level_ratio=1.01),
    PerfAlertDelivered(change_id="c1", sink="webhook", state="firing", status="200"),
]

from aqe.events.testgen import (  # noqa: E402
    CoverageTotals,
    GeneratedTestKept,
    GeneratedTestRejected,
    GenerationMeasured,
)

_TESTGEN_SAMPLES: list[Event] = [
    GeneratedTestKept(
        candidate_id="gen-1",
        batch_id="tg-1",
        target="toolz.itertoolz",
        generator="pynguin",
        seed=7,
        name="test_pn_toolz_itertoolz_0.py",
        code="def test_0():\n    assert 1\n",
        runs=3,
        lines_gained=2,
        branches_gained=1,
        gained_lines={"toolz/itertoolz.py": (10, 11)},
        instance_id="w1",
    ),
    GeneratedTestRejected(
        candidate_id="gen-2",
        batch_id="tg-1",
        target="toolz.itertoolz",
        generator="ghostwriter",
        seed=7,
        name="test_gw_toolz_itertoolz_groupby.py",
        reason="flaky",
        runs=3,
        passed=2,
        detail="AssertionError",
        code="def test_x(): ...",
        instance_id="w1",
    ),
    GenerationMeasured(
        batch_id="tg-1",
        source="/src/tz",
        targets=("toolz.itertoolz",),
        generators=("ghostwriter", "pynguin"),
        seed=7,
        runs=3,
        sandbox="namespace",
        before={"toolz/itertoolz.py": CoverageTotals(statements=10, lines=5, branches=4, taken=1)},
        after={"toolz/itertoolz.py": CoverageTotals(statements=10, lines=7, branches=4, taken=2)},
        generated={"pynguin": 1, "ghostwriter": 1},
        kept={"pynguin": 1, "ghostwriter": 0},
        wall_s=12.5,
        instance_id="w1",
    ),
]

from aqe.events.coverage import CoverageRecorded, FileCoverage, TestLines  # noqa: E402

_COVERAGE_SAMPLES: list[Event] = [
    CoverageRecorded(
        run_id="gh-8812-1",
        chunk=0,
        chunks=2,
        files=(
            FileCoverage(
                path="src/pkg/core.py",
                statements=(1, 1, 1, 4),
                executed=(1, 1, 5),
                branches=(2, 2, 1),
                tests=(TestLines(test_id="tests.test_core.test_a", lines=(2, 5)),),
            ),
        ),
        commit="4f9c2e1",
        per_test=True,
    ),
]

from aqe.events.audit import StreamSealed  # noqa: E402
from aqe.events.flakemodel import FlakeModelTrained, FlakinessPredicted  # noqa: E402


def _hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


_MODEL_DIGEST = _hex("flakemodel artefact")

_AUDIT_AND_FLAKEMODEL_SAMPLES: list[Event] = [
    StreamSealed(
        stream="AQE_TESTS",
        tree_size=7,
        root=_hex("root 7"),
        last_seq=9,
        prev_size=4,
        prev_root=_hex("root 4"),
        prev_last_seq=5,
        consistency=(_hex("node a"), _hex("node b")),
        frontier=(_hex("subtree 4"), _hex("subtree 2"), _hex("leaf 7")),
        runs=((6, 7), (9, 9)),
        digests="AAECAwQFBgcICQoLDA0ODxAREhMUFRYX",
        signer="3f6c1e0a9b2d4c58",
        public_key="11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
        sealed_at="2026-12-07T21:17:14.420891Z",
        signature="c2lnbmF0dXJlIG92ZXIgdGhlIHNlYWwgYnl0ZXM=",
    ),
    FlakeModelTrained(
        model_id=f"fm-{_MODEL_DIGEST[:16]}",
        digest=_MODEL_DIGEST,
        bucket="AQE_MODELS",
        object_name=_MODEL_DIGEST,
        size_bytes=48213,
        embedder="all-MiniLM-L6-v2@onnx-1",
        columns=402,
        threshold=0.42,
        trained_on="data/flakeflagger.jsonl",
        data_digest=_hex("flakeflagger.jsonl"),
        tests=811,
        flaky=102,
        hyperparameters={"c": "1.0", "inner_folds": "5"},
        train_seconds=3.25,
        trained_at=WHEN,
    ),
    FlakinessPredicted(
        test_id="tests/test_net.py::test_reconnect",
        model_id=f"fm-{_MODEL_DIGEST[:16]}",
        digest=_MODEL_DIGEST,
        probability=0.87,
        flaky=True,
        threshold=0.42,
        input_digest=_hex("def test_reconnect(): ..."),
        project="aqe",
        source="tests/test_net.py",
    ),
]

SAMPLES: dict[str, Event] = {
    e.type_tag(): e
    for e in [
        TestRunStarted(
            run_id="gh-8812-1",
            suite="unit",
            commit="9f2c1e7",
            branch="main",
            ci_url="https://ci.example/8812",
            started_at=WHEN,
            agent_id="agent-1",
            source="junit",
        ),
        TestRunFinished(
            run_id="gh-8812-1",
            total=10,
            passed=7,
            failed=1,
            errors=1,
            skipped=1,
            duration_s=12.5,
            finished_at=WHEN,
            flaky=1,
        ),
        TestRunSelected(
            run_id="gh-8812-1",
            mode="subset",
            policy="failure-count",
            budget="30%",
            collected=10,
            selected=3,
            new=1,
            deselected_ids=("tests.test_a.test_slow",),
            deselected=7,
        ),
        TestCaseExecuted(
            test_id="tests/api/test_login.py::TestLogin::test_redirect[admin user]",
            run_id="gh-8812-1",
            outcome="failed",
            duration_s=0.25,
            attempt=2,
            message="AssertionError: 302 != 303",
            file="tests/api/test_login.py",
            commit="9f2c1e7",
            suite="api",
            name="test_redirect[admin user]",
            classname="tests.api.test_login.TestLogin",
            output="GET /login -> 302\n\x1b[31mred\x1b[0m",
            started_at=WHEN,
        ),
        TestCaseQuarantined(
            test_id="tests.api.test_login.TestLogin.test_redirect[admin user]",
            reason="flaky: failed then passed on 9f2c1e7",
            by="agent-1",
            at=WHEN,
        ),
        TestCaseUnquarantined(
            test_id="tests.api.test_login.TestLogin.test_redirect[admin user]",
            reason="20 green runs",
            by="alice",
            at=WHEN,
        ),
        PatternAdded(
            pattern_id="p-42",
            name="retry on 503",
            code="def test_retry(): ...",
            description="Réessaie — unicode survives",
            category="resilience",
            framework="pytest",
            tags=("http", "retry"),
        ),
        PatternUpdated(
            pattern_id="p-42",
            name="retry on 503 with jitter",
            code="def test_retry_jitter(): ...",
            description="now with jitter",
            category="resilience",
            language="python",
            framework="pytest",
            tags=("http", "retry", "jitter"),
        ),
        PatternDeprecated(pattern_id="p-41", reason="superseded", replaced_by="p-42"),
        PatternUsed(
            pattern_id="p-42", outcome="failure", used_by="agent-1", context="cart tests", at=WHEN
        ),
        ExperienceRecorded(
            policy_id="ppo-7",
            algorithm="ppo",
            cycle="iofrol-0042",
            feature_version=1,
            steps=(
                ExperienceStep(test_id="iofrol.78082", state=(0.5, 1.0), action=7.0, reward=1.0),
                ExperienceStep(
                    test_id="iofrol.78083",
                    state=(0.0, 0.25),
                    action=2.0,
                    reward=0.0,
                    next_state=(0.0, 0.5),
                    done=False,
                ),
            ),
        ),
        PolicyTrained(
            policy_id="ppo-7",
            algorithm="ppo",
            seed=7,
            feature_version=1,
            hyperparameters={"lr": "0.001", "buckets": "10"},
            trained_on="log",
            trained_until_seq=33790,
            cycles=320,
            mean_apfd=0.71,
            mean_napfd=0.6,
            artefact=f"AQE_MODELS/{_hex('ppo-7 packed')}",
            trained_at=WHEN,
            bucket="AQE_MODELS",
            digest=_hex("ppo-7 packed"),
        ),
        AgentRegistered(
            agent_id="agent-1",
            role="runner",
            capabilities=("pytest", "gpu"),
            host="ci-7",
            version="0.1.0",
        ),
        AgentHeartbeat(agent_id="agent-1", beat=3, status="busy", load=0.75, session="s1"),
        AgentRetired(agent_id="agent-1", reason="scaled down"),
        AgentSuspected(agent_id="agent-2", by="coord-1", last_beat=7, missed=3),
        LeaseAcquired(group="dispatch", holder="agent-1", lease_ms=2000, after_seq=0),
        LeaseRenewed(group="dispatch", holder="agent-1", term=12, renewal=1, lease_ms=2000),
        LeaseReleased(group="dispatch", holder="agent-1", term=12, reason="shutdown"),
        LeaderCheckpointed(group="dispatch", holder="agent-1", term=12, n=3, note="ok"),
        TaskSubmitted(task_id="t1", kind="flaky-hunt", complexity=2.5, params={"test": "x"}),
        TaskClaimed(task_id="t1", agent_id="agent-1", topology="mesh", epoch=3),
        TaskCompleted(task_id="t1", agent_id="agent-1", ok=True, result="done", duration_ms=1.5),
        TaskAbandoned(task_id="t1", agent_id="agent-1", attempt=1, reason="agent dead"),
        TopologySelected(
            fleet="qe",
            topology="star",
            signals={"agents": 4.0},
            scores={"star": 1.0},
            reasons=("few agents",),
        ),
        ProposalOpened(
            proposal_id="p1",
            question="is test x flaky?",
            options=("yes", "no"),
            mode="byzantine",
            voters=(Voter(agent_id="a", public_key="AAAA"),),
            faulty=0,
        ),
        VoteCast(proposal_id="p1", voter="a", choice="yes", signature="c2ln"),
        BridgeApplied(
            chain="a/AQE_TESTS/3",
            origin="a",
            stream="AQE_TESTS",
            partition=3,
            partitions=8,
            first_seq=11,
            last_seq=20,
            prev_seq=10,
            count=10,
            via="a",
        ),
        TaskQueued(capability="pytest", task_id="t1"),
        TaskParked(task_id="t1", agent_id="runner-1", deliveries=4, attempts=3, reason="died"),
        WorkflowStarted(instance_id="w1", workflow="rerun", params={"n": "3"}, reasons=("hand",)),
        WorkflowStepScheduled(instance_id="w1", step="run-1", task_id="wf-1", kind="pytest"),
        WorkflowStepFinished(
            instance_id="w1",
            step="run-1",
            task_id="wf-1",
            status="completed",
            agent_id="runner-1",
            outcome=TaskOutcome(exit_code=1, tests=1, failed=1, outcomes={"t.py::x": "failed"}),
        ),
        WorkflowTimerSet(instance_id="w1", timer="give-up", due_ns=10**18, reason="1 h"),
        WorkflowTimerFired(instance_id="w1", timer="give-up", due_ns=10**18),
        WorkflowDecided(instance_id="w1", key="verdict", decision="flaky", reasons=("1/3",)),
        WorkflowFinished(instance_id="w1", status="succeeded", result={"passed": "2"}),
        WorkflowCancelled(instance_id="w1", reason="not needed", by="me"),
        *_PERF_SAMPLES,
        *_TESTGEN_SAMPLES,
        *_COVERAGE_SAMPLES,
        *_AUDIT_AND_FLAKEMODEL_SAMPLES,
    ]
}


def case(**overrides: Any) -> TestCaseExecuted:
    fields: dict[str, Any] = {"test_id": "tests/test_a.py::test_x", "run_id": "r1"}
    fields["outcome"] = "passed"
    fields.update(overrides)
    return TestCaseExecuted(**fields)


def test_every_registered_type_has_a_sample() -> None:
    assert sorted(SAMPLES) == list(REGISTRY.tags())


@pytest.mark.parametrize("tag", sorted(SAMPLES))
def test_round_trip_through_the_wire(tag: str) -> None:
    event = SAMPLES[tag]
    data = event.to_json()
    assert msgspec.json.decode(data)["event"] == tag
    decoded = REGISTRY.decode(data, subject="s", seq=1)
    assert decoded == event
    assert type(decoded) is type(event)
    assert decoded.to_json() == data


@pytest.mark.parametrize("tag", sorted(SAMPLES))
def test_build_from_payload_equals_struct(tag: str) -> None:
    event = SAMPLES[tag]
    payload = msgspec.json.decode(event.to_json())
    del payload["event"]
    assert REGISTRY.build(tag, payload) == event


@pytest.mark.parametrize("tag", sorted(SAMPLES))
def test_aggregate_id_is_the_id_field(tag: str) -> None:
    event = SAMPLES[tag]
    assert event.aggregate_id() == getattr(event, type(event).id_field)


def test_default_id_is_deterministic_and_hashes_the_payload() -> None:
    first, again = case(), case()
    assert first is not again
    assert first.default_id() == again.default_id()
    assert first.default_id() == hashlib.sha256(first.to_json()).hexdigest()[:32]
    assert len(first.default_id()) == 32
    assert set(first.default_id()) <= set("0123456789abcdef")


@pytest.mark.parametrize(
    "other",
    [
        {"run_id": "r2"},
        {"outcome": "failed"},
        {"attempt": 2},
        {"duration_s": 0.5},
        {"test_id": "tests/test_a.py::test_y"},
        {"message": ""},
    ],
)
def test_default_id_differs_for_different_facts(other: dict[str, Any]) -> None:
    assert case(**other).default_id() != case().default_id()


def test_default_ids_of_all_samples_are_distinct() -> None:
    ids = {e.default_id() for e in SAMPLES.values()}
    assert len(ids) == len(SAMPLES)


# --- build() validation -------------------------------------------------------------------


def test_build_unknown_type_lists_known_types() -> None:
    with pytest.raises(UnknownEventTypeError) as info:
        REGISTRY.build("tests.case.vanished.v1", {})
    assert info.value.event_type == "tests.case.vanished.v1"
    assert info.value.known == REGISTRY.tags()
    assert "tests.case.executed.v1" in str(info.value)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"run_id": "r", "outcome": "passed"}, "test_id"),
        ({"test_id": "t", "outcome": "passed"}, "run_id"),
        ({"test_id": 5, "run_id": "r", "outcome": "passed"}, "test_id"),
        ({"test_id": "t", "run_id": "r", "outcome": "passed", "attempt": [1]}, "attempt"),
        ({"test_id": "t", "run_id": "r", "outcome": "passed", "duration_s": {}}, "duration_s"),
        ({"test_id": "t", "run_id": "r", "outcome": "flaky"}, "outcome"),
    ],
)
def test_build_invalid_payload_names_the_field(payload: dict[str, Any], field: str) -> None:
    with pytest.raises(EventValidationError) as info:
        REGISTRY.build("tests.case.executed.v1", payload)
    assert info.value.event_type == "tests.case.executed.v1"
    assert f"`{field}`" in info.value.detail or f"$.{field}" in info.value.detail


def test_build_rejects_a_contradicting_tag_field() -> None:
    payload = {"event": "tests.run.started.v1", "test_id": "t", "run_id": "r", "outcome": "passed"}
    with pytest.raises(EventValidationError, match="event"):
        REGISTRY.build("tests.case.executed.v1", payload)


def test_build_bad_datetime_names_the_field() -> None:
    with pytest.raises(EventValidationError, match="started_at"):
        REGISTRY.build("tests.run.started.v1", {"run_id": "r", "started_at": "yesterday"})


# --- decode() errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (b"\xff\x00garbage", "not JSON"),
        (b"", "not JSON"),
        (b'{"event": "tests.case.executed.v1"', "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b"42", "not a JSON object"),
        (b'"tests.case.executed.v1"', "not a JSON object"),
        (b"null", "not a JSON object"),
        (b'{"event": "tests.case.vanished.v1", "test_id": "t"}', "unknown event type"),
        (b'{"test_id": "t", "run_id": "r", "outcome": "passed"}', "event"),
        (b'{"event": 7}', "event"),
        (b'{"event": "tests.case.executed.v1", "run_id": "r", "outcome": "passed"}', "test_id"),
        (
            b'{"event": "tests.run.finished.v1", "run_id": "r", "total": "1", '
            b'"passed": 1, "failed": 0}',
            "total",
        ),
    ],
)
def test_decode_failure_carries_subject_and_seq(data: bytes, detail: str) -> None:
    with pytest.raises(EventDecodeError) as info:
        REGISTRY.decode(data, subject="aqe.tests.case.t.executed", seq=17)
    err = info.value
    assert err.subject == "aqe.tests.case.t.executed"
    assert err.seq == 17
    assert detail in err.detail
    assert "aqe.tests.case.t.executed" in str(err)
    assert "17" in str(err)


def test_decode_ignores_unknown_fields() -> None:
    data = b'{"event": "agents.agent.heartbeat.v1", "agent_id": "a", "beat": 1, "new": true}'
    assert REGISTRY.decode(data) == AgentHeartbeat(agent_id="a", beat=1)


def test_decode_fills_defaults_of_absent_fields() -> None:
    data = b'{"event": "tests.case.executed.v1", "test_id": "t", "run_id": "r", "outcome": "error"}'
    event = REGISTRY.decode(data)
    assert event == TestCaseExecuted(test_id="t", run_id="r", outcome="error")


# --- upcasting ----------------------------------------------------------------------------
# Tags must be vN with N >= 1, so the chain under test is v1 -> v2 -> v3 (v3 is current).


class WidgetRenamed(Event, frozen=True, kw_only=True, tag="demo.widget.renamed.v3"):
    """Test-local current version: ``name`` became ``new_name``, ``reason`` was added."""

    id_field: ClassVar[str] = "widget_id"

    widget_id: str
    new_name: str
    old_name: str | None = None
    reason: str = ""


def _v1_to_v2(raw: dict[str, Any]) -> dict[str, Any]:
    # v1 had "id" and "name"; v2 named the id "widget_id".
    raw["widget_id"] = raw.pop("id")
    raw["event"] = "demo.widget.renamed.v2"
    return raw


def _v2_to_v3(raw: dict[str, Any]) -> dict[str, Any]:
    raw["new_name"] = raw.pop("name")
    raw["event"] = "demo.widget.renamed.v3"
    return raw


def widget_registry() -> EventRegistry:
    registry = EventRegistry([WidgetRenamed])
    registry.register_upcaster("demo.widget.renamed.v2", _v2_to_v3)
    registry.register_upcaster("demo.widget.renamed.v1", _v1_to_v2)
    return registry


def test_upcaster_decodes_retired_v2_bytes_into_current() -> None:
    old = b'{"event": "demo.widget.renamed.v2", "widget_id": "w1", "name": "Knob"}'
    event = widget_registry().decode(old, subject="aqe.demo.widget.w1.renamed", seq=3)
    assert event == WidgetRenamed(widget_id="w1", new_name="Knob")


def test_upcasters_chain_from_v1() -> None:
    old = b'{"event": "demo.widget.renamed.v1", "id": "w1", "name": "Knob"}'
    assert widget_registry().decode(old) == WidgetRenamed(widget_id="w1", new_name="Knob")


def test_current_tag_decodes_without_upcasting() -> None:
    event = WidgetRenamed(widget_id="w1", new_name="Knob", reason="typo")
    assert widget_registry().decode(event.to_json()) == event


def test_build_accepts_a_retired_tag() -> None:
    built = widget_registry().build("demo.widget.renamed.v1", {"id": "w1", "name": "Knob"})
    assert built == WidgetRenamed(widget_id="w1", new_name="Knob")


def test_upcast_result_is_still_validated() -> None:
    old = b'{"event": "demo.widget.renamed.v2", "name": "Knob"}'
    with pytest.raises(EventDecodeError, match="widget_id") as info:
        widget_registry().decode(old, subject="s", seq=9)
    assert info.value.seq == 9


def test_upcaster_failing_on_a_malformed_old_message_is_a_decode_error() -> None:
    old = b'{"event": "demo.widget.renamed.v2", "widget_id": "w1"}'
    with pytest.raises(EventDecodeError, match="upcaster failed") as info:
        widget_registry().decode(old, subject="s", seq=9)
    assert info.value.seq == 9
    assert isinstance(info.value.__cause__, EventValidationError)
    with pytest.raises(EventValidationError, match=r"demo\.widget\.renamed\.v2"):
        widget_registry().build("demo.widget.renamed.v2", {"widget_id": "w1"})


def test_upcaster_loop_is_a_decode_error() -> None:
    registry = EventRegistry([WidgetRenamed])
    registry.register_upcaster("demo.widget.renamed.v1", lambda raw: raw)
    with pytest.raises(EventDecodeError, match="loop"):
        registry.decode(b'{"event": "demo.widget.renamed.v1"}', subject="s", seq=1)


def test_upcaster_for_a_current_tag_is_refused() -> None:
    registry = EventRegistry([WidgetRenamed])
    with pytest.raises(ValueError, match="current"):
        registry.register_upcaster("demo.widget.renamed.v3", _v2_to_v3)


def test_fresh_registry_does_not_touch_the_default_one() -> None:
    widget_registry()
    assert "demo.widget.renamed.v3" not in REGISTRY.tags()
    with pytest.raises(EventDecodeError, match="unknown event type"):
        REGISTRY.decode(WidgetRenamed(widget_id="w", new_name="n").to_json())


# --- registration -------------------------------------------------------------------------


class BadlyTagged(Event, frozen=True, kw_only=True, tag="Demo.Widget-Renamed"):
    id_field: ClassVar[str] = "widget_id"

    widget_id: str


class UnversionedTag(Event, frozen=True, kw_only=True, tag="demo.widget.renamed"):
    id_field: ClassVar[str] = "widget_id"

    widget_id: str


class ImpostorWidgetRenamed(Event, frozen=True, kw_only=True, tag="demo.widget.renamed.v3"):
    id_field: ClassVar[str] = "widget_id"

    widget_id: str


class NoIdField(Event, frozen=True, kw_only=True, tag="demo.widget.moved.v1"):
    widget_id: str


class WrongIdField(Event, frozen=True, kw_only=True, tag="demo.widget.moved.v1"):
    id_field: ClassVar[str] = "widget"

    widget_id: str


@pytest.mark.parametrize("cls", [BadlyTagged, UnversionedTag])
def test_register_malformed_tag_raises(cls: type[Event]) -> None:
    with pytest.raises(ValueError, match=r"domain\.aggregate\.action\.vN"):
        EventRegistry([cls])


def test_register_duplicate_tag_raises() -> None:
    registry = EventRegistry([WidgetRenamed])
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(ImpostorWidgetRenamed)
    assert registry.types["demo.widget.renamed.v3"] is WidgetRenamed


def test_registering_the_same_class_again_is_harmless() -> None:
    registry = EventRegistry([WidgetRenamed])
    registry.register(WidgetRenamed)
    assert registry.tags() == ("demo.widget.renamed.v3",)


@pytest.mark.parametrize("cls", [NoIdField, WrongIdField])
def test_register_requires_an_id_field(cls: type[Event]) -> None:
    with pytest.raises(ValueError, match="id_field"):
        EventRegistry([cls])


def test_registry_exposes_sorted_tags_and_copies_types() -> None:
    tags = REGISTRY.tags()
    assert list(tags) == sorted(tags)
    cast("dict[str, type[Event]]", REGISTRY.types).clear()
    assert REGISTRY.tags() == tags


def test_fields_at_their_default_are_left_out_of_the_wire() -> None:
    event = TestCaseExecuted(test_id="t", run_id="r", outcome="passed")
    assert event.to_json() == (
        b'{"event":"tests.case.executed.v1","test_id":"t","run_id":"r","outcome":"passed"}'
    )


def test_adding_a_defaulted_field_keeps_old_ids() -> None:

    from aqe.events import Event

    class Before(Event, frozen=True, kw_only=True, tag="demo.thing.happened.v1"):
        id_field: ClassVar[str] = "thing_id"
        thing_id: str

    class After(Event, frozen=True, kw_only=True, tag="demo.thing.happened.v1"):
        id_field: ClassVar[str] = "thing_id"
        thing_id: str
        note: str = ""

    assert Before(thing_id="x").default_id() == After(thing_id="x").default_id()
    assert After(thing_id="x", note="n").default_id() != Before(thing_id="x").default_id()
