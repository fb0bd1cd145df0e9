"""The workflow driver: runs instances against the log and the runners' work queues.

A driver process (``aqe workflows run``, or ``aqe agent run --capability workflows``)
follows ``AQE_WORKFLOWS`` and folds every instance (the engine's :class:`Instance` view
plus the workflow's own state), and follows the ends of tasks (``TaskCompleted``,
``TaskParked`` on ``AQE_COORD``). For each instance that changed, or whose timer is due,
it appends, conditional on the instance's last sequence and with deterministic ids:

1. ``WorkflowFinished(cancelled)`` when a cancellation was asked for;
2. a ``WorkflowStepFinished`` for each step whose task ended, and a
   ``WorkflowTimerFired`` for each timer now due;
3. otherwise, what ``decide(state, now)`` asks for that is new (steps not scheduled yet,
   timers not set, decisions not recorded, the finish), after which the new steps'
   tasks are submitted (:func:`aqe.runners.submit_runner_task`, once per task id).

Every write is conditional and idempotent, so a driver killed at any point, restarted,
or running beside another driver neither loses nor repeats anything: on start it folds
the log, submits again every scheduled step that has no end (a duplicate when it was
submitted before), and reads the ends it missed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aqe.coordination.tasks import COORD_STREAM, task_filter
from aqe.errors import CommandRejectedError, ConcurrencyError, LogError
from aqe.events import (
    Envelope,
    Event,
    TaskCompleted,
    TaskParked,
    WorkflowDecided,
    WorkflowFinished,
    WorkflowStarted,
    WorkflowStepFinished,
    WorkflowStepScheduled,
    WorkflowTimerFired,
    WorkflowTimerSet,
)
from aqe.log.port import EventLog, NewEvent
from aqe.log.retry import while_unavailable
from aqe.runners.tasks import submit_runner_task
from aqe.workflows._store import fact_of
from aqe.workflows.engine import (
    INSTANCE_SUBJECTS,
    WORKFLOWS_STREAM,
    Command,
    Decide,
    Finish,
    Instance,
    RunTask,
    SetTimer,
    Workflow,
    apply_instance,
    instance_filter,
    step_task_id,
)

__all__ = ["WorkflowDriver"]

_log = logging.getLogger("aqe.workflows")

_ROUNDS = 50
"""Most appends one advance makes: a decide that always finds something new is a bug."""


class _Live:
    __slots__ = ("instance", "state", "workflow")

    def __init__(self, instance: Instance, workflow: Workflow[Any], state: Any) -> None:
        self.instance = instance
        self.workflow = workflow
        self.state = state


def _id(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


class WorkflowDriver:
    """Drives every instance of the given workflows (see the module docstring).

    Args:
        log: the event log.
        workflows: name -> workflow; instances of other workflows are left alone.
        driver_id: who submits the tasks (``submitted_by``).
        tick_s: how often due timers are looked for.
        clock_ns: the clock decisions and timers use (Unix ns).
    """

    def __init__(
        self,
        log: EventLog,
        workflows: Mapping[str, Workflow[Any]],
        *,
        driver_id: str = "workflows",
        tick_s: float = 0.2,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.log = log
        self.workflows = dict(workflows)
        self.driver_id = driver_id
        self.tick_s = tick_s
        self.clock_ns = clock_ns
        self.live: dict[str, _Live] = {}
        self.applied_seq = 0
        self._owner: dict[str, tuple[str, str]] = {}
        """Task id -> (instance, step), for every scheduled step without an end."""
        self._ends: dict[str, WorkflowStepFinished] = {}
        self._schedules: dict[str, WorkflowStepScheduled] = {}
        """Task id -> its scheduling (kind, payload), for submitting it again."""
        self._dirty: dict[str, None] = {}
        self._wake = asyncio.Event()
        self._applied = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.decisions = 0

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Fold the log, catch up with missed task ends, and start driving."""
        coord_after = await while_unavailable(lambda: self.log.last_seq(COORD_STREAM))
        async for env in self.log.read(WORKFLOWS_STREAM, subjects=INSTANCE_SUBJECTS):
            self._apply(env)
        for action in ("completed", "parked"):
            self._spawn(self._follow_ends(action, coord_after))
        self._spawn(self._follow_instances())
        for live in list(self.live.values()):
            await self._catch_up(live)
        self._spawn(self._drive())
        self._spawn(self._timers())

    async def stop(self) -> None:
        """Stop driving (appends in flight are abandoned; everything resumes on restart)."""
        self._stopping = True
        self._wake.set()
        pending = {t for t in self._tasks if not t.done()}
        while pending:
            # asyncio.wait_for before Python 3.12 can swallow a cancellation that races
            # with a completing operation: cancel again until every loop has ended.
            for task in pending:
                task.cancel()
            _done, pending = await asyncio.wait(pending, timeout=1.0)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def __aenter__(self) -> WorkflowDriver:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _spawn(self, coro: Any) -> None:
        self._tasks.append(asyncio.create_task(coro))

    # -- folding ------------------------------------------------------------------------

    def _apply(self, env: Envelope) -> None:
        if env.seq <= self.applied_seq:
            return
        self.applied_seq = env.seq
        fact = fact_of(env)
        instance_id = getattr(fact.event, "instance_id", None) if fact else None
        if fact is None or not isinstance(instance_id, str):
            return
        event = fact.event
        live = self.live.get(instance_id)
        if live is None:
            if not isinstance(event, WorkflowStarted):
                return
            workflow = self.workflows.get(event.workflow)
            instance = apply_instance(None, fact)
            if workflow is None or instance is None:
                return  # another driver's workflow
            self.live[instance_id] = _Live(instance, workflow, workflow.initial(event))
            self._mark(instance_id)
            return
        apply_instance(live.instance, fact)
        live.state = live.workflow.apply(live.state, fact)
        if isinstance(event, WorkflowStepScheduled) and event.step not in live.instance.results:
            self._owner[event.task_id] = (instance_id, event.step)
            self._schedules[event.task_id] = event
        elif isinstance(event, WorkflowStepFinished):
            self._owner.pop(event.task_id, None)
            self._ends.pop(event.task_id, None)
            self._schedules.pop(event.task_id, None)
        self._mark(instance_id)

    def _mark(self, instance_id: str) -> None:
        self._dirty[instance_id] = None
        self._wake.set()

    async def _follow_instances(self) -> None:
        while not self._stopping:
            try:
                async for env in self.log.read(
                    WORKFLOWS_STREAM,
                    after_seq=self.applied_seq,
                    subjects=INSTANCE_SUBJECTS,
                    follow=True,
                ):
                    self._apply(env)
                    async with self._applied:
                        self._applied.notify_all()
            except LogError as exc:
                _log.warning("workflow driver: following instances: %s", exc)
                await asyncio.sleep(self.tick_s)

    async def _reach(self, seq: int, timeout_s: float = 30.0) -> None:
        async with self._applied:
            await asyncio.wait_for(
                self._applied.wait_for(lambda: self.applied_seq >= seq), timeout_s
            )

    async def _follow_ends(self, action: str, after_seq: int) -> None:
        subjects = f"aqe.coord.task.*.{action}"
        while not self._stopping:
            try:
                async for env in self.log.read(
                    COORD_STREAM, after_seq=after_seq, subjects=subjects, follow=True
                ):
                    after_seq = env.seq
                    fact = fact_of(env)
                    if fact is not None:
                        self._task_ended(fact.event)
            except LogError as exc:
                _log.warning("workflow driver: following task ends: %s", exc)
                await asyncio.sleep(self.tick_s)

    def _task_ended(self, event: Event) -> None:
        if not isinstance(event, TaskCompleted | TaskParked):
            return
        owner = self._owner.get(event.task_id)
        if owner is None:
            return
        instance_id, step = owner
        if isinstance(event, TaskCompleted):
            finished = WorkflowStepFinished(
                instance_id=instance_id,
                step=step,
                task_id=event.task_id,
                status="completed" if event.ok else "failed",
                agent_id=event.agent_id,
                outcome=event.outcome,
                reason=event.result,
            )
        else:
            finished = WorkflowStepFinished(
                instance_id=instance_id,
                step=step,
                task_id=event.task_id,
                status="parked",
                agent_id=event.agent_id,
                reason=event.reason,
            )
        self._ends[event.task_id] = finished
        self._mark(instance_id)

    async def _catch_up(self, live: _Live) -> None:
        """Submit scheduled steps again (idempotent) and read ends the followers missed."""
        instance = live.instance
        if instance.finished:
            return
        for step in instance.pending_steps():
            task_id = instance.steps[step]
            last = await while_unavailable(
                lambda t=task_id: self.log.last(task_filter(t))  # type: ignore[misc]
            )
            if last is None:
                await self._submit_scheduled(instance.instance_id, step)
                continue
            fact = fact_of(last)
            if fact is not None:
                self._task_ended(fact.event)

    # -- driving ------------------------------------------------------------------------

    async def _timers(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.tick_s)
            now = self.clock_ns()
            for instance_id, live in self.live.items():
                due = live.instance.next_timer_ns()
                if not live.instance.finished and due is not None and due <= now:
                    self._mark(instance_id)

    async def _drive(self) -> None:
        while not self._stopping:
            if not self._dirty:
                self._wake.clear()
                await self._wake.wait()
                continue
            instance_id = next(iter(self._dirty))
            del self._dirty[instance_id]
            try:
                await self._advance(self.live[instance_id])
            except LogError as exc:
                _log.warning("workflow %s: %s (retrying)", instance_id, exc)
                await asyncio.sleep(self.tick_s)
                self._mark(instance_id)

    async def _advance(self, live: _Live) -> None:
        for _ in range(_ROUNDS):
            instance = live.instance
            if instance.finished:
                return
            items, submit = self._next_events(live)
            if not items:
                return
            first = items[0]
            items[0] = NewEvent(
                event=first.event,
                event_id=first.event_id,
                expected_last_seq=instance.last_seq,
                expected_subject=instance_filter(instance.instance_id),
            )
            try:
                result = await while_unavailable(
                    lambda batch=items: self.log.append_batch(batch)  # type: ignore[misc]
                )
            except ConcurrencyError:
                # Someone else (another driver, a cancel) wrote first: fold, decide again.
                await self._reach(await self.log.last_subject_seq(INSTANCE_SUBJECTS))
                continue
            self.decisions += 1
            await self._reach(result.last_seq)
            for step in submit:
                await self._submit_scheduled(instance.instance_id, step)
        _log.error("workflow %s: decide keeps asking for more; stopped", live.instance.instance_id)

    def _next_events(self, live: _Live) -> tuple[list[NewEvent], list[str]]:
        instance = live.instance
        iid = instance.instance_id
        if instance.cancel_requested is not None:
            event = WorkflowFinished(
                instance_id=iid, status="cancelled", reasons=(instance.cancel_requested,)
            )
            return [NewEvent(event=event, event_id=_id(iid, "finished"))], []
        items = [
            NewEvent(event=self._ends[task_id], event_id=_id(iid, "stepped", task_id))
            for step, task_id in instance.steps.items()
            if step not in instance.results and task_id in self._ends
        ]
        now = self.clock_ns()
        items += [
            NewEvent(
                event=WorkflowTimerFired(instance_id=iid, timer=timer, due_ns=due),
                event_id=_id(iid, "fired", timer),
            )
            for timer, due in instance.timers.items()
            if due <= now
        ]
        if items:
            return items, []
        return self._commands(live, live.workflow.decide(live.state, now))

    def _commands(
        self, live: _Live, commands: Sequence[Command]
    ) -> tuple[list[NewEvent], list[str]]:
        instance = live.instance
        iid = instance.instance_id
        items: list[NewEvent] = []
        submit: list[str] = []
        seen: set[tuple[str, str]] = set()
        for command in commands:
            event: Event
            key: tuple[str, str]
            if isinstance(command, RunTask):
                if command.step in instance.steps:
                    continue
                key = ("step", command.step)
                event = WorkflowStepScheduled(
                    instance_id=iid,
                    step=command.step,
                    task_id=step_task_id(iid, command.step),
                    kind=command.kind,
                    reasons=command.reasons,
                    payload=command.payload,
                    params=dict(command.params),
                    complexity=command.complexity,
                )
            elif isinstance(command, SetTimer):
                if command.timer in instance.timers or command.timer in instance.fired:
                    continue
                key = ("timer", command.timer)
                event = WorkflowTimerSet(
                    instance_id=iid,
                    timer=command.timer,
                    due_ns=command.due_ns,
                    reason=command.reason,
                )
            elif isinstance(command, Decide):
                if command.key in instance.decisions:
                    continue
                key = ("decided", command.key)
                event = WorkflowDecided(
                    instance_id=iid,
                    key=command.key,
                    decision=command.decision,
                    reasons=command.reasons,
                    data=dict(command.data),
                )
            else:
                key = ("finished", "")
                event = WorkflowFinished(
                    instance_id=iid,
                    status=command.status,
                    reasons=command.reasons,
                    result=dict(command.result),
                )
            if key in seen:
                continue
            seen.add(key)
            if isinstance(command, RunTask):
                submit.append(command.step)
            items.append(NewEvent(event=event, event_id=_id(iid, *key)))
            if isinstance(command, Finish):
                break  # nothing after the finish
        return items, submit

    async def _submit_scheduled(self, instance_id: str, step: str) -> None:
        live = self.live.get(instance_id)
        if live is None:
            return
        task_id = live.instance.steps.get(step)
        scheduled = self._schedules.get(task_id) if task_id else None
        if task_id is None or scheduled is None:
            return
        try:
            await submit_runner_task(
                self.log,
                task_id,
                scheduled.kind,
                payload=scheduled.payload,
                params=scheduled.params,
                complexity=scheduled.complexity,
                submitted_by=f"workflow:{instance_id}",
            )
        except CommandRejectedError as exc:
            _log.error("workflow %s step %s: %s", instance_id, step, exc)
