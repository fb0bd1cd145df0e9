"""Events of durable workflows (process managers): an instance's state is the fold of these.

Every event of one instance lives on ``aqe.workflow.instance.<instance_id>.<action>``
(stream ``AQE_WORKFLOWS``), so an instance is read, and appended to conditionally, as
one aggregate. The engine (:mod:`aqe.workflows.engine`) appends them; a workflow's pure
``decide`` chooses which. Steps are tasks on the fleet's work queues with ids derived
from the instance and the step, timers are events with due times, and every decision
carries its reasons.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec

from aqe.events._base import Event
from aqe.events.runners import TaskOutcome

__all__ = [
    "StepStatus",
    "WorkflowCancelled",
    "WorkflowDecided",
    "WorkflowFinished",
    "WorkflowStarted",
    "WorkflowStatus",
    "WorkflowStepFinished",
    "WorkflowStepScheduled",
    "WorkflowTimerFired",
    "WorkflowTimerSet",
]

StepStatus = Literal["completed", "failed", "parked"]
"""How a step's task ended: it ran and succeeded, it ran and failed, no runner finished it."""

WorkflowStatus = Literal["succeeded", "failed", "gave-up", "cancelled"]


class WorkflowStarted(Event, frozen=True, kw_only=True, tag="workflow.instance.started.v1"):
    """An instance of ``workflow`` began with ``params``."""

    id_field: ClassVar[str] = "instance_id"

    instance_id: str
    workflow: str
    params: dict[str, str] = msgspec.field(default_factory=dict)
    started_by: str = ""
    reasons: tuple[str, ...] = ()
    """Why it was started (by hand, by a history trigger with its evidence)."""


class WorkflowStepScheduled(Event, frozen=True, kw_only=True, tag="workflow.instance.scheduled.v1"):
    """Step ``step`` is the task ``task_id`` (an id derived from instance and step)."""

    id_field: ClassVar[str] = "instance_id"

    instance_id: str
    step: str
    task_id: str
    kind: str
    reasons: tuple[str, ...] = ()
    payload: str = ""
    """The task's payload, so a restarted driver can submit it again (idempotently)."""
    params: dict[str, str] = msgspec.field(default_factory=dict)
    complexity: float = 1.0


class WorkflowStepFinished(Event, frozen=True, kw_only=True, tag="workflow.instance.stepped.v1"):
    """The task of step ``step`` ended: its outcome as the runner recorded it."""

    id_field: ClassVar[str] = "instance_id"

    instance_id: str
    step: str
    task_id: str
    status: StepStatus
    agent_id: str = ""
    outcome: TaskOutcome | None = None
    reason: str = ""
    """Why it was parked, or the task's own result text."""


class WorkflowTimerSet(Event, frozen=True, kw_only=True, tag="workflow.instance.timer_set.v1"):
    """Timer ``timer`` fires at ``due_ns`` (Unix ns): a retry after, a give-up after."""

    id_field: ClassVar[str] = "instance_id"

    instance_id: str
    timer: str
    due_ns: int
    reason: str = ""


class WorkflowTimerFired(Event, frozen=True, kw_only=True, tag="workflow.instance.timer_fired.v1"):
    """Timer ``timer`` (due at ``due_ns``) fired."""

    id_field: ClassVar[str] = "instance_id"

    instance_id: str
    timer: str
    due_ns: int


class WorkflowDecided(Event, frozen=True, kw_only=True, tag="workflow.instance.decided.v1"):
    """A decision (``key`` names it within the instance) with its reasons and data."""

    id_field: ClassVar[str] = "instance_id"

    instance_id: str
    key: str
    decision: str
    reasons: tuple[str, ...] = ()
    data: dict[str, str] = msgspec.field(default_factory=dict)


class WorkflowFinished(Event, frozen=True, kw_only=True, tag="workflow.instance.finished.v1"):
    """The instance ended with ``status``; nothing is decided for it after this."""

    id_field: ClassVar[str] = "instance_id"

    instance_id: str
    status: WorkflowStatus
    reasons: tuple[str, ...] = ()
    result: dict[str, str] = msgspec.field(default_factory=dict)


class WorkflowCancelled(Event, frozen=True, kw_only=True, tag="workflow.instance.cancelled.v1"):
    """Someone cancelled the instance; the engine finishes it as ``cancelled``."""

    id_field: ClassVar[str] = "instance_id"

    instance_id: str
    reason: str = ""
    by: str = ""
