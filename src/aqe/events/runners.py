"""Events of runner agents: a task put on a capability's work queue, what a run saw, parking.

A runner task is an ordinary :class:`~aqe.events.TaskSubmitted` (its ``kind`` is the
capability, its ``payload`` the JSON of :class:`aqe.runners.RunnerTask`) appended in one
atomic batch with a :class:`TaskQueued` on ``aqe.coord.work.<capability>.queued``: that
subject is what a capability's durable pull consumer (its work queue) filters on. What a
run saw travels on the task's own subjects, in the :class:`TaskCompleted` as a
:class:`TaskOutcome`; a task that no runner could finish is :class:`TaskParked`.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from aqe.events._base import Event

__all__ = ["TaskOutcome", "TaskParked", "TaskQueued"]


class TaskOutcome(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a runner saw running one task in a sandbox (carried by ``TaskCompleted``)."""

    exit_code: int | None = None
    """The command's exit status; None when a signal ended it (or nothing ran)."""
    signal: int | None = None
    stopped: str | None = None
    """Why the sandbox stopped it (``wall-time``, ``memory``, ...), None when it ended itself."""
    backend: str = ""
    wall_s: float = 0.0
    cpu_s: float = 0.0
    max_rss_kb: int = 0
    stdout_tail: str = ""
    """The last few KiB of stdout (the whole capped output stays in the sandbox result)."""
    stderr_tail: str = ""
    artefacts: tuple[str, ...] = ()
    """Relative paths of the artefacts the run produced."""
    run_id: str | None = None
    """The test run its JUnit reports were appended as (``aqe.tests.run.<id>.*``)."""
    tests: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    outcomes: dict[str, str] = msgspec.field(default_factory=dict)
    """Final outcome per test (pytest node id where known, else the test id), capped."""
    outcomes_truncated: bool = False
    order: tuple[str, ...] = ()
    """The keys of ``outcomes`` in the order the tests ran (an encoded event sorts a
    dict's keys, so ``outcomes`` alone loses it)."""
    error: str = ""
    """Why the runner could not run it at all (a bad payload, a sandbox it cannot open)."""


class TaskQueued(Event, frozen=True, kw_only=True, tag="coord.work.queued.v1"):
    """``task_id`` waits on the work queue of ``capability`` (appended with its submission).

    The subject, ``aqe.coord.work.<capability>.queued``, is what the capability's work
    queue (a durable pull consumer on ``AQE_COORD``) filters on.
    """

    id_field: ClassVar[str] = "capability"

    capability: str
    task_id: str


class TaskParked(Event, frozen=True, kw_only=True, tag="coord.task.parked.v1"):
    """No runner finished the task within its deliveries; it is set aside with the reason.

    Appended conditional on the task's last message (so a completion that came first
    wins) by the runner that received the delivery past the limit; a copy of the queue
    message goes to the dead-letter stream as well.
    """

    id_field: ClassVar[str] = "task_id"

    task_id: str
    agent_id: str
    deliveries: int
    attempts: int
    reason: str
