"""A runner agent: pull tasks from capability work queues, run them in sandboxes, record.

One delivery of a queued task goes through :meth:`RunnerAgent.handle`:

1. the task's subjects are folded (:func:`read_task`): a completed or parked task is
   acked and skipped (a delivery that outlived its runner's ack);
2. past ``max_attempts`` deliveries the task is **parked**: a
   :class:`~aqe.events.TaskParked` with the reason, conditional on the task's last
   message, plus a copy of the queue message on the dead-letter stream;
3. a task still claimed by another runner came back because that runner stopped
   acknowledging (it died, or hangs past the ack wait): its claim is abandoned,
   conditional on being the task's last message;
4. the runner **claims** the next attempt, conditional on the task's last message, so
   of any number of runners one claim per attempt is stored; a runner that loses the
   race leaves the delivery alone (the winner acks it);
5. the task runs in the sandbox named by its spec, while ``in_progress`` acks restart
   the ack wait every third of it and the agent's heartbeats say ``busy``;
6. JUnit XML artefacts become a test run through the same builders ``aqe ingest`` uses
   (:func:`aqe.ingest.runs.run_events`, :func:`aqe.ingest.runs.append_run`), one run per
   attempt, so history sees every rerun;
7. the outcome is appended as the task's :class:`~aqe.events.TaskCompleted`, conditional
   on the claim still being the task's last message: only the current attempt's result
   counts. Then, and only then, the delivery is acked.

A runner killed anywhere in between leaves the delivery unacked: after the ack wait the
server hands it to another runner, which abandons the dead runner's claim and runs the
next attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import msgspec

from aqe.coordination.agent import AgentRuntime
from aqe.coordination.tasks import (
    COORD_STREAM,
    TaskBoard,
    TaskEntry,
    abandon_task,
    claim_task,
    complete_task,
    task_filter,
)
from aqe.errors import (
    AqeError,
    ConcurrencyError,
    ConfigError,
    EventDecodeError,
    LogError,
    ReportError,
)
from aqe.events import Envelope, TaskOutcome, TaskParked, TaskQueued
from aqe.log.retry import append_conditional, while_unavailable
from aqe.runners.tasks import NOOP, RunnerTask, check_capability, ensure_queue, runner_task
from aqe.sandbox import Sandbox, SandboxResult, open_sandbox

if TYPE_CHECKING:
    from aqe.coordination.bus import Bus, WorkItem, WorkQueue
    from aqe.log.port import EventLog
    from aqe.projections.deadletter import DeadLetterSink

__all__ = ["DEAD_LETTER_PROJECTION", "RunnerAgent", "RunnerConfig", "RunnerStats", "read_task"]

_log = logging.getLogger("aqe.runners")

DEAD_LETTER_PROJECTION = "runners"
"""Parked queue messages go to ``aqe.dlq.runners.AQE_COORD``."""

_TAIL = 4096
_MAX_OUTCOMES = 500


class RunnerConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How a runner pulls and when it gives up on a task.

    Attributes:
        ack_wait_s: how long the queue waits for an ack (or an in-progress) before it
            hands a delivery to another runner; set on the queue when it is created.
        max_attempts: deliveries that may run the task; the next one parks it (a
            task's ``max_attempts`` param overrides this).
        slots: tasks this runner runs at once.
        fetch_timeout_s: how long one pull waits for a task.
        heartbeat_s: the agent's heartbeat interval.
    """

    ack_wait_s: float = 30.0
    max_attempts: int = 3
    slots: int = 1
    fetch_timeout_s: float = 1.0
    heartbeat_s: float = 1.0

    def __post_init__(self) -> None:
        if not self.ack_wait_s > 0:
            raise ConfigError(f"runner: ack_wait_s must be > 0, not {self.ack_wait_s}")
        if self.max_attempts < 1:
            raise ConfigError(f"runner: max_attempts must be >= 1, not {self.max_attempts}")
        if self.slots < 1:
            raise ConfigError(f"runner: slots must be >= 1, not {self.slots}")


class RunnerStats(msgspec.Struct, kw_only=True):
    """What a runner did since it started."""

    completed: int = 0
    failed: int = 0
    parked: int = 0
    skipped: int = 0
    lost_races: int = 0
    superseded: int = 0
    """Runs whose result did not count: the claim was abandoned while it ran."""
    abandoned_others: int = 0


async def read_task(log: EventLog, task_id: str) -> TaskEntry | None:
    """Fold one task's subjects: its state now (None when it was never submitted)."""
    board = TaskBoard()
    async for env in log.read(COORD_STREAM, subjects=task_filter(task_id)):
        board.apply(env)
    return board.tasks.get(task_id)


SandboxOpener = Callable[[str], Sandbox]
TaskHandler = Callable[[TaskEntry, SandboxOpener], Awaitable[TaskOutcome]]
"""Runs a task of a kind that is not a sandboxed command (``testgen``): entry, sandboxes."""


class RunnerAgent:
    """Pulls runner tasks of its capabilities and runs them (see the module docstring).

    Args:
        log: the event log.
        bus: work queues (and core messaging).
        capabilities: the queues to pull from (``noop`` needs no sandbox).
        agent_id: this runner's id [default: ``runner-<host>-<random>``].
        config: pulling and parking settings.
        dead_letters: where a parked task's queue message is copied (None: only the event).
        open_sandbox_for: how a backend name becomes a sandbox [default:
            :func:`aqe.sandbox.open_sandbox`].
        handlers: per task kind, a :data:`TaskHandler` that runs it instead of the
            payload's sandboxed command (composed by the CLI, e.g. ``testgen``).
        register: join the fleet (register and heartbeat) while running.
    """

    def __init__(
        self,
        log: EventLog,
        bus: Bus,
        capabilities: Sequence[str],
        *,
        agent_id: str | None = None,
        config: RunnerConfig | None = None,
        dead_letters: DeadLetterSink | None = None,
        open_sandbox_for: SandboxOpener = open_sandbox,
        register: bool = True,
        handlers: Mapping[str, TaskHandler] | None = None,
    ) -> None:
        if not capabilities:
            raise ConfigError("runner: give at least one capability")
        self.log = log
        self.bus = bus
        self.capabilities = tuple(dict.fromkeys(check_capability(c) for c in capabilities))
        self.agent_id = agent_id or f"runner-{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
        self.config = config or RunnerConfig()
        self.dead_letters = dead_letters
        self._open_sandbox = open_sandbox_for
        self._handlers = dict(handlers or {})
        self._sandboxes: dict[str, Sandbox] = {}
        self.runtime = (
            AgentRuntime(
                log,
                self.agent_id,
                "runner",
                self.capabilities,
                interval_s=self.config.heartbeat_s,
            )
            if register
            else None
        )
        self.stats = RunnerStats()
        self._busy = 0
        self._running: set[str] = set()
        self._pullers: list[WorkQueue] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Join the fleet, create missing queues and start pulling."""
        if self.runtime is not None:
            await self.runtime.start()
        for capability in self.capabilities:
            name = await ensure_queue(self.bus, capability, ack_wait_s=self.config.ack_wait_s)
            self._pullers.append(await self.bus.open_work_queue(COORD_STREAM, name))
        for slot in range(self.config.slots):
            self._tasks.append(asyncio.create_task(self._pull(slot), name=f"slot-{slot}"))

    async def stop(self, *, retire: bool = True) -> None:
        """Stop pulling, let running tasks finish, and leave the fleet."""
        self._stopping.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for puller in self._pullers:
            await puller.close()
        self._pullers.clear()
        if self.runtime is not None:
            await self.runtime.stop(retire=retire)

    async def kill(self) -> None:
        """Stop at once as a crash would: no acks, no completion, no retirement (tests)."""
        self._stopping.set()
        if self.runtime is not None:
            self.runtime.kill()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for puller in self._pullers:
            await puller.close()
        self._pullers.clear()

    async def run_until(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then stop cleanly."""
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()

    async def __aenter__(self) -> RunnerAgent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- pulling ------------------------------------------------------------------------

    async def _pull(self, slot: int) -> None:
        """One slot: pull one task at a time, asking each capability's queue in turn.

        A slot that waited on one queue while another held work would starve that
        capability (a runner with two capabilities ran only the first one's tasks), so
        each turn asks the next queue, for a share of ``fetch_timeout_s``.
        """
        pullers = self._pullers
        timeout = max(self.config.fetch_timeout_s / len(pullers), 0.05)
        turn = slot
        while not self._stopping.is_set():
            puller = pullers[turn % len(pullers)]
            turn += 1
            try:
                items = await puller.fetch(1, timeout)
            except LogError as exc:
                _log.info("%s: fetch failed: %s", self.agent_id, exc)
                await asyncio.sleep(timeout)
                continue
            if not items:
                continue
            try:
                await self.handle(items[0])
            except LogError as exc:
                # The log is out of reach: leave the delivery; it comes back after the
                # ack wait, and every step of handling it is conditional.
                _log.warning("%s: task left for redelivery: %s", self.agent_id, exc)

    def _set_busy(self, delta: int) -> None:
        self._busy += delta
        if self.runtime is not None:
            self.runtime.status = "busy" if self._busy else "idle"
            self.runtime.load = self._busy / self.config.slots

    # -- one delivery -------------------------------------------------------------------

    async def handle(self, item: WorkItem) -> None:
        """Handle one delivery of a queued task (the steps of the module docstring)."""
        env = item.envelope
        try:
            queued = env.decode()
        except EventDecodeError:
            queued = None
        if not isinstance(queued, TaskQueued):
            await self._park_letter(env, "not a queued task")
            await item.ack()
            return
        task_id = queued.task_id
        if task_id in self._running:
            return  # our own run came back early (a slow in-progress); it acks itself
        entry = await while_unavailable(lambda: read_task(self.log, task_id))
        if entry is None or entry.status in ("completed", "parked"):
            if entry is None:
                await self._park_letter(env, f"task {task_id} was never submitted")
            self.stats.skipped += 1
            await item.ack()
            return
        max_attempts = _max_attempts(entry, self.config.max_attempts)
        if item.deliveries > max_attempts:
            await self._park(item, entry, max_attempts)
            return
        after_seq = entry.last_seq
        if entry.status == "claimed":
            reason = (
                f"delivered again (delivery {item.deliveries}) after the ack wait: "
                f"{entry.agent} stopped acknowledging"
            )
            abandoned = await abandon_task(self.log, entry, reason=reason)
            if abandoned is None:
                self.stats.lost_races += 1
                return  # the task moved on meanwhile; whoever moved it holds it
            self.stats.abandoned_others += 1
            after_seq = abandoned.seq
        claim = await claim_task(
            self.log,
            entry.submitted(),
            after_seq=after_seq,
            attempt=entry.attempt + 1,
            agent_id=self.agent_id,
            topology="mesh",
            epoch=0,
        )
        if claim is None:
            self.stats.lost_races += 1
            return
        self._running.add(task_id)
        self._set_busy(+1)
        keeper = asyncio.create_task(self._keep_in_progress(item))
        try:
            began = time.perf_counter()
            outcome = await self._run(entry, claim.attempt)
            duration_ms = (time.perf_counter() - began) * 1000
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            self._running.discard(task_id)
            self._set_busy(-1)
        ok = outcome.error == "" and outcome.exit_code == 0 and outcome.stopped is None
        stored = await complete_task(
            self.log,
            claim,
            ok=ok,
            result=_summary(outcome),
            duration_ms=duration_ms,
            outcome=outcome,
        )
        if stored is None:
            self.stats.superseded += 1
            _log.warning(
                "%s: task %s attempt %d was abandoned while it ran; its result does not count",
                self.agent_id,
                task_id,
                claim.attempt,
            )
            return  # the current attempt's runner holds (and acks) the delivery
        if ok:
            self.stats.completed += 1
        else:
            self.stats.failed += 1
        await item.ack()

    async def _keep_in_progress(self, item: WorkItem) -> None:
        every = self.config.ack_wait_s / 3
        while True:
            await asyncio.sleep(every)
            try:
                await item.in_progress()
            except LogError as exc:
                _log.info("%s: in-progress ack failed: %s", self.agent_id, exc)

    async def _park(self, item: WorkItem, entry: TaskEntry, max_attempts: int) -> None:
        last = f"; the last attempt was {entry.agent}'s" if entry.agent else ""
        reason = (
            f"delivered {item.deliveries} times, {entry.attempt} claims, no completion "
            f"(max attempts {max_attempts}){last}"
        )
        event = TaskParked(
            task_id=entry.task_id,
            agent_id=self.agent_id,
            deliveries=item.deliveries,
            attempts=entry.attempt,
            reason=reason,
        )
        try:
            await append_conditional(
                self.log,
                event,
                event_id=f"parked-{entry.task_id}-{entry.last_seq}",
                expected_last_seq=entry.last_seq,
                expected_subject=task_filter(entry.task_id),
            )
        except ConcurrencyError:
            self.stats.lost_races += 1
            return  # the task moved on (completed, claimed): leave the delivery
        await self._park_letter(item.envelope, reason)
        self.stats.parked += 1
        await item.ack()

    async def _park_letter(self, env: Envelope, reason: str) -> None:
        if self.dead_letters is not None:
            await self.dead_letters.park(DEAD_LETTER_PROJECTION, env, reason)

    # -- running ------------------------------------------------------------------------

    async def _run(self, entry: TaskEntry, attempt: int) -> TaskOutcome:
        if entry.kind == NOOP:
            return TaskOutcome(exit_code=0)
        handler = self._handlers.get(entry.kind)
        if handler is not None:
            return await handler(entry, self._sandbox)
        try:
            task = runner_task(entry.payload)
            sandbox = self._sandbox(task.spec.backend)
            result = await sandbox.run(task.spec, task.argv, workdir=task.workdir)
        except AqeError as exc:
            return TaskOutcome(error=f"{type(exc).__name__}: {exc}")
        return await self._record(entry, attempt, task, result)

    def _sandbox(self, backend: str) -> Sandbox:
        sandbox = self._sandboxes.get(backend)
        if sandbox is None:
            sandbox = self._sandboxes[backend] = self._open_sandbox(backend)
        return sandbox

    async def _record(
        self, entry: TaskEntry, attempt: int, task: RunnerTask, result: SandboxResult
    ) -> TaskOutcome:
        from aqe.runners._results import ingest_artefacts

        run_id = f"{entry.task_id}-a{attempt}"
        error = ""
        tested = None
        if task.ingest:
            try:
                tested = await ingest_artefacts(
                    self.log,
                    result.artefacts,
                    run_id=run_id,
                    commit=task.commit,
                    branch=task.branch,
                )
            except ReportError as exc:
                error = f"report: {exc}"
        outcomes = tested.outcomes if tested is not None else {}
        kept = dict(list(outcomes.items())[:_MAX_OUTCOMES])
        summary = tested.summary if tested is not None else None
        return TaskOutcome(
            exit_code=result.exit_code,
            signal=result.signal,
            stopped=result.stopped,
            backend=result.backend,
            wall_s=round(result.wall_s, 4),
            cpu_s=round(result.cpu_s, 4),
            max_rss_kb=result.max_rss_kb,
            stdout_tail=result.stdout[-_TAIL:],
            stderr_tail=result.stderr[-_TAIL:],
            artefacts=tuple(sorted(result.artefacts)),
            run_id=run_id if summary is not None else None,
            tests=summary.tests if summary else 0,
            passed=summary.passed if summary else 0,
            failed=summary.failed if summary else 0,
            errors=summary.errors if summary else 0,
            skipped=summary.skipped if summary else 0,
            outcomes=kept,
            outcomes_truncated=len(kept) < len(outcomes),
            order=tuple(kept),
            error=error,
        )


def _max_attempts(entry: TaskEntry, default: int) -> int:
    raw = entry.params.get("max_attempts")
    if raw is not None and raw.isdigit() and int(raw) >= 1:
        return int(raw)
    return default


def _summary(outcome: TaskOutcome) -> str:
    if outcome.error:
        return outcome.error[:200]
    parts = [f"exit {outcome.exit_code}" if outcome.signal is None else f"signal {outcome.signal}"]
    if outcome.stopped:
        parts.append(f"stopped: {outcome.stopped}")
    if outcome.tests:
        parts.append(
            f"{outcome.tests} tests: {outcome.passed} passed, {outcome.failed} failed, "
            f"{outcome.errors} errors, {outcome.skipped} skipped"
        )
    return "; ".join(parts)
