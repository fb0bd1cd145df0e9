"""Durable workflows: process managers whose state is a fold of their own events.

The interface (:mod:`aqe.workflows.engine`) is pure; the driver
(:mod:`aqe.workflows.driver`) runs instances against the log and the runners' work
queues. Which workflows exist is decided at the composition root (the CLI).
"""

from aqe.workflows.engine import (
    INSTANCE_SUBJECTS,
    WORKFLOWS_STREAM,
    Command,
    Decide,
    Fact,
    Finish,
    Instance,
    RunTask,
    SetTimer,
    StepResult,
    Workflow,
    apply_instance,
    instance_filter,
    step_task_id,
)

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
