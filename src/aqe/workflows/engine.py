"""The workflow engine's interface: a workflow is a pure fold plus a pure decision.

A workflow instance is an aggregate on ``aqe.workflow.instance.<id>.*``; its state is
the fold of those events and nothing else. A :class:`Workflow` says three things, with
no I/O, clock or randomness:

* ``initial(started)``: the state of a new instance;
* ``apply(state, fact)``: the state after one of the instance's events (:class:`Fact`:
  the event, its stream sequence and its server time);
* ``decide(state, now_ns)``: what should happen now, as :data:`Command` values.

The driver (:class:`aqe.workflows.driver.WorkflowDriver`) turns commands into events,
appended conditional on the instance's last sequence (two drivers can't both decide
on the same state), and every command has a key that makes it happen once:

* :class:`RunTask` ``step``: a step becomes the runner task :func:`step_task_id` (an id
  derived from instance and step, submitted with a content-hash ``Nats-Msg-Id``), so
  asking again for a step already scheduled does nothing, and a restarted driver never
  runs a step twice. Its end comes back as a ``WorkflowStepFinished``;
* :class:`SetTimer` ``timer``: a ``WorkflowTimerSet`` with a due time; the driver
  appends ``WorkflowTimerFired`` once the time has come (also after a restart);
* :class:`Decide` ``key``: a ``WorkflowDecided`` with its reasons and data;
* :class:`Finish`: a ``WorkflowFinished``; nothing is decided for the instance after it.

``decide`` may therefore return the whole plan every time ("these steps, this timer");
only what is new is appended. It is called after every change to the instance and at
each timer's due time. Cancelling (``WorkflowCancelled``) ends an instance without
asking the workflow.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Generic, Protocol, TypeVar

import msgspec

from aqe.events import (
    Event,
    StepStatus,
    TaskOutcome,
    WorkflowCancelled,
    WorkflowDecided,
    WorkflowFinished,
    WorkflowStarted,
    WorkflowStatus,
    WorkflowStepFinished,
    WorkflowStepScheduled,
    WorkflowTimerFired,
    WorkflowTimerSet,
)
from aqe.log.subjects import encode_token

__all__ = [
    "INSTANCE_SUBJECTS",
    "WORKFLOWS_STREAM",
    "Command",
    "Decide",
    "Fact",
    "Finish",
    "Instance",
    "RunTask",
    "SetTimer",
    "StepResult",
    "Workflow",
    "apply_instance",
    "instance_filter",
    "step_task_id",
]

WORKFLOWS_STREAM = "AQE_WORKFLOWS"
INSTANCE_SUBJECTS = "aqe.workflow.instance.>"

S = TypeVar("S")


def instance_filter(instance_id: str) -> str:
    """The subject filter covering every event of one instance."""
    return f"aqe.workflow.instance.{encode_token(instance_id)}.*"


def step_task_id(instance_id: str, step: str) -> str:
    """The task id of a step: the same instance and step always give the same id."""
    digest = hashlib.sha256(f"workflow|{instance_id}|{step}".encode()).hexdigest()
    return f"wf-{digest[:24]}"


# -- what the workflow sees ---------------------------------------------------------------


class Fact(msgspec.Struct, frozen=True, kw_only=True):
    """One event of the instance as stored: the event, its sequence and server time."""

    event: Event
    seq: int
    recorded_at_ns: int


# -- what the workflow asks for -----------------------------------------------------------


class RunTask(msgspec.Struct, frozen=True, kw_only=True):
    """Run step ``step`` as a runner task of ``kind`` (a capability) with ``payload``.

    ``payload`` is the task's input as JSON; for the ``pytest`` and other sandboxed
    kinds, :func:`aqe.runners.runner_payload` builds it from a sandbox spec and argv.
    """

    step: str
    kind: str
    payload: str = ""
    params: Mapping[str, str] = msgspec.field(default_factory=dict)
    complexity: float = 1.0
    reasons: tuple[str, ...] = ()


class SetTimer(msgspec.Struct, frozen=True, kw_only=True):
    """Fire ``timer`` at ``due_ns`` (Unix ns; derive it from ``decide``'s ``now_ns``)."""

    timer: str
    due_ns: int
    reason: str = ""


class Decide(msgspec.Struct, frozen=True, kw_only=True):
    """Record decision ``key`` (once per instance) with its reasons and data."""

    key: str
    decision: str
    reasons: tuple[str, ...] = ()
    data: Mapping[str, str] = msgspec.field(default_factory=dict)


class Finish(msgspec.Struct, frozen=True, kw_only=True):
    """End the instance with ``status``, its reasons and a result."""

    status: WorkflowStatus
    reasons: tuple[str, ...] = ()
    result: Mapping[str, str] = msgspec.field(default_factory=dict)


Command = RunTask | SetTimer | Decide | Finish


class Workflow(Protocol, Generic[S]):
    """A durable process manager: pure fold and pure decision (see the module docstring)."""

    name: str
    """What ``aqe workflow start NAME`` calls it."""

    def initial(self, started: WorkflowStarted) -> S:
        """The state of a new instance (``started.params`` are its parameters)."""
        ...

    def apply(self, state: S, fact: Fact) -> S:
        """The state after one more event of the instance (no I/O, clock or randomness)."""
        ...

    def decide(self, state: S, now_ns: int) -> Sequence[Command]:
        """What should happen now; commands already carried out are skipped by the driver."""
        ...


# -- the engine's own view of an instance -------------------------------------------------


class StepResult(msgspec.Struct, frozen=True, kw_only=True):
    """How a step's task ended."""

    status: StepStatus
    agent_id: str = ""
    outcome: TaskOutcome | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        """Whether the step's task ran and succeeded."""
        return self.status == "completed"


class Instance(msgspec.Struct, kw_only=True):
    """What the driver tracks of every instance (the workflow keeps its own state too)."""

    instance_id: str
    workflow: str
    params: dict[str, str] = msgspec.field(default_factory=dict)
    started_ns: int = 0
    last_seq: int = 0
    """The last sequence under the instance's subjects: what the next append is conditional on."""
    steps: dict[str, str] = msgspec.field(default_factory=dict)
    """Scheduled step -> its task id."""
    kinds: dict[str, str] = msgspec.field(default_factory=dict)
    results: dict[str, StepResult] = msgspec.field(default_factory=dict)
    timers: dict[str, int] = msgspec.field(default_factory=dict)
    """Timer -> due time (Unix ns), set and not yet fired."""
    fired: dict[str, int] = msgspec.field(default_factory=dict)
    decisions: dict[str, str] = msgspec.field(default_factory=dict)
    status: WorkflowStatus | None = None
    """None while it runs."""
    cancel_requested: str | None = None
    reasons: tuple[str, ...] = ()
    result: dict[str, str] = msgspec.field(default_factory=dict)
    finished_ns: int = 0
    events: int = 0

    @property
    def finished(self) -> bool:
        """Whether the instance ended."""
        return self.status is not None

    def pending_steps(self) -> list[str]:
        """Scheduled steps whose task has not ended yet."""
        return [s for s in self.steps if s not in self.results]

    def next_timer_ns(self) -> int | None:
        """The earliest due time of a timer set and not fired, if any."""
        return min(self.timers.values()) if self.timers else None


def apply_instance(instance: Instance | None, fact: Fact) -> Instance | None:
    """Fold one event into the driver's view (None until the instance's start is seen)."""
    event = fact.event
    if isinstance(event, WorkflowStarted):
        if instance is not None:
            return instance
        return Instance(
            instance_id=event.instance_id,
            workflow=event.workflow,
            params=dict(event.params),
            started_ns=fact.recorded_at_ns,
            last_seq=fact.seq,
            reasons=event.reasons,
            events=1,
        )
    if instance is None:
        return None
    instance.last_seq = max(instance.last_seq, fact.seq)
    instance.events += 1
    if isinstance(event, WorkflowStepScheduled):
        instance.steps.setdefault(event.step, event.task_id)
        instance.kinds.setdefault(event.step, event.kind)
    elif isinstance(event, WorkflowStepFinished):
        instance.results.setdefault(
            event.step,
            StepResult(
                status=event.status,
                agent_id=event.agent_id,
                outcome=event.outcome,
                reason=event.reason,
            ),
        )
    elif isinstance(event, WorkflowTimerSet):
        if event.timer not in instance.fired:
            instance.timers.setdefault(event.timer, event.due_ns)
    elif isinstance(event, WorkflowTimerFired):
        instance.timers.pop(event.timer, None)
        instance.fired.setdefault(event.timer, event.due_ns)
    elif isinstance(event, WorkflowDecided):
        instance.decisions.setdefault(event.key, event.decision)
    elif isinstance(event, WorkflowCancelled):
        if instance.cancel_requested is None:
            instance.cancel_requested = event.reason or "cancelled"
    elif isinstance(event, WorkflowFinished) and instance.status is None:
        instance.status = event.status
        instance.reasons = event.reasons
        instance.result = dict(event.result)
        instance.finished_ns = fact.recorded_at_ns
    return instance
