"""The pieces every topology shares: workers, the live board, the dispatcher base.

* :class:`Worker` runs the tasks it holds stored claims for, a few at a time, and
  records each outcome (conditional on its claim, see :func:`complete_task`). It is told
  about a claim three ways, whichever comes first: it made the claim itself (mesh, ring),
  a coordinator or leader told it over ``aqe.work.<fleet>.agent.<id>`` (star,
  hierarchical), or the fleet saw the claim in the log (a lost notification). A claim is
  run once per worker, however many ways it arrives.
* :class:`LiveBoard` follows ``aqe.coord.task.>`` and keeps a :class:`TaskBoard` current,
  waking waiters on every change.
* :class:`Dispatcher` is what a topology implements: ``start()`` then ``drain()``; between
  them it makes claims, each through :meth:`Dispatcher.claim`, which ``drain`` waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any, ClassVar

import msgspec

from aqe.coordination.bus import WORK_PREFIX, Bus, BusMessage, Subscription
from aqe.coordination.tasks import (
    COORD_STREAM,
    TASK_SUBJECTS,
    Claim,
    TaskBoard,
    TaskEntry,
    claim_task,
    complete_task,
)
from aqe.errors import AqeError, EventDecodeError, LogError
from aqe.events import Envelope, Event, TaskSubmitted
from aqe.events.coordination import Topology
from aqe.log.port import EventLog
from aqe.log.subjects import encode_token

__all__ = [
    "DispatchConfig",
    "DispatchContext",
    "Dispatcher",
    "Follower",
    "LiveBoard",
    "TaskHandler",
    "Worker",
]

_log = logging.getLogger("aqe.coordination.dispatch")

TaskHandler = Callable[[TaskSubmitted], Awaitable[str | None]]
"""Runs one task; its return value is the result, an exception a failed task."""


class DispatchConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Tunables of the four topologies (seconds unless said otherwise)."""

    ring_batch: int = 4
    """Claims a ring token holder makes per turn."""
    ring_hold_s: float = 0.05
    """How long an idle holder keeps the token waiting for work before passing it."""
    ring_pass_timeout_s: float = 0.5
    """How long a pass waits for the next agent's acknowledgement before skipping it."""
    token_timeout_s: float = 2.0
    """Without the token this long, the first agent in ring order regenerates it."""
    group_size: int | None = None
    """Hierarchical group size (None: about the square root of the worker count)."""
    lease_ms: int = 2000
    """The lease of a star coordinator and of hierarchical group leaders."""
    star_lease: bool = True
    """A star coordinator assigns only while it holds the fleet's star lease."""
    reroute_s: float = 2.0
    """A task routed to a group and still unclaimed after this is routed again."""
    mesh_fetch_timeout_s: float = 0.25
    mesh_ack_wait_s: float = 30.0
    notify_grace_s: float = 1.0
    """A claim seen in the log but not yet notified to its worker after this is run anyway."""


class DispatchContext:
    """What a dispatcher works with: the fleet's name, log, bus, board and workers."""

    def __init__(
        self,
        fleet: str,
        log: EventLog,
        bus: Bus,
        board: LiveBoard,
        workers: Sequence[Worker],
        config: DispatchConfig,
    ) -> None:
        if not workers:
            raise ValueError(f"fleet {fleet!r} has no workers")
        self.fleet = fleet
        self.log = log
        self.bus = bus
        self.board = board
        self.workers = tuple(workers)
        self.config = config
        self._by_id = {w.agent_id: w for w in workers}

    def worker(self, agent_id: str) -> Worker:
        """The worker with that id.

        Raises:
            KeyError: no such worker in this fleet.
        """
        return self._by_id[agent_id]

    def subject(self, *parts: str) -> str:
        """A core subject ``aqe.work.<fleet>.<part>...`` (tokens encoded)."""
        tokens = ".".join(encode_token(p) for p in parts)
        return f"{WORK_PREFIX}.{encode_token(self.fleet)}.{tokens}"

    def agent_subject(self, agent_id: str) -> str:
        """Where a worker is told about claims made for it."""
        return self.subject("agent", agent_id)


# -- workers ------------------------------------------------------------------------------


class Worker:
    """An in-process agent: runs claimed tasks, ``capacity`` at a time.

    Args:
        agent_id: the agent's id (claims name it).
        handler: runs one task.
        log: where outcomes are appended.
        capacity: tasks run at once; dispatchers claim for free slots only.
    """

    def __init__(
        self, agent_id: str, handler: TaskHandler, *, log: EventLog, capacity: int = 1
    ) -> None:
        if capacity < 1:
            raise ValueError(f"worker {agent_id}: capacity must be at least 1, got {capacity}")
        self.agent_id = agent_id
        self.capacity = capacity
        self._handler = handler
        self._log = log
        self._accepted: set[tuple[str, int]] = set()
        self._running: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(capacity)
        self._freed = asyncio.Event()
        self.completed = 0
        self.failed = 0
        self.rejected = 0
        """Completions the log refused (the claim was no longer the task's last message)."""
        self.down = False

    @property
    def load(self) -> int:
        """Accepted tasks not yet finished (running or waiting for a slot)."""
        return len(self._running)

    @property
    def free(self) -> int:
        """Slots not taken by accepted tasks (none once the worker is down)."""
        if self.down:
            return 0
        return max(0, self.capacity - len(self._running))

    def has_accepted(self, task_id: str, attempt: int) -> bool:
        """Whether this worker already took that claim."""
        return (task_id, attempt) in self._accepted

    def accept(self, claim: Claim) -> bool:
        """Run a stored claim of this worker's (once); False if it was taken before."""
        if claim.agent_id != self.agent_id:
            raise ValueError(
                f"claim of {claim.task.task_id} is {claim.agent_id}'s, not {self.agent_id}'s"
            )
        key = (claim.task.task_id, claim.attempt)
        if key in self._accepted or self.down:
            return False
        self._accepted.add(key)
        task = asyncio.get_running_loop().create_task(self._run(claim))
        self._running.add(task)
        task.add_done_callback(self._finished)
        return True

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._freed.set()

    async def wait_free(self, timeout_s: float) -> bool:
        """Wait until a slot is free (or ``timeout_s``); whether one is."""
        if self.free:
            return True
        self._freed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._freed.wait(), timeout_s)
        return self.free > 0

    async def _run(self, claim: Claim) -> None:
        async with self._slots:
            started = time.perf_counter()
            ok, result = True, ""
            try:
                result = await self._handler(claim.task) or ""
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the task's own failure is its outcome, not ours
                ok, result = False, f"{type(exc).__name__}: {exc}"[:500]
            duration = (time.perf_counter() - started) * 1000
            try:
                stored = await complete_task(
                    self._log, claim, ok=ok, result=result, duration_ms=duration
                )
            except LogError as exc:
                _log.warning(
                    "%s: completion of %s not recorded: %s", self.agent_id, claim.task.task_id, exc
                )
                return
            if stored is None:
                self.rejected += 1
            elif ok:
                self.completed += 1
            else:
                self.failed += 1

    async def drain(self) -> None:
        """Wait for every accepted task to finish."""
        while self._running:
            await asyncio.gather(*list(self._running), return_exceptions=True)

    async def crash(self) -> None:
        """Go down at once: running tasks are cancelled unrecorded, nothing new is taken.

        What a killed agent leaves behind: claims without outcomes, for membership to
        declare abandoned (:func:`~aqe.coordination.tasks.abandon_agent`).
        """
        self.down = True
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*list(self._running), return_exceptions=True)


# -- the live board -----------------------------------------------------------------------------


Listener = Callable[[Envelope, Event, TaskEntry | None], None]


class Follower:
    """Follows one subject filter of ``AQE_COORD`` from a sequence, surviving failovers.

    ``handle`` gets every envelope after ``after_seq`` in order. A read that fails is
    resumed after the last handled sequence. A push consumer can also stall silently
    when the stream's leader moves (a killed node): every ``stall_check_s`` without a
    message, the follower asks the log whether the filter has messages past the last
    one handled and, if so, restarts the read from there.
    """

    def __init__(
        self,
        log: EventLog,
        subjects: str,
        handle: Callable[[Envelope], Awaitable[None] | None],
        *,
        after_seq: int = 0,
        stall_check_s: float = 2.0,
    ) -> None:
        self.log = log
        self.subjects = subjects
        self.handle = handle
        self.seq = after_seq
        self.stall_check_s = stall_check_s
        self.restarts = 0
        self._reader: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin following (in background tasks)."""
        if self._reader is None:
            self._reader = asyncio.create_task(self._read())
            self._watchdog = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        """Stop following."""
        for task in (self._watchdog, self._reader):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._reader = self._watchdog = None

    async def _read(self) -> None:
        while True:
            try:
                async for env in self.log.read(
                    COORD_STREAM, after_seq=self.seq, subjects=self.subjects, follow=True
                ):
                    if env.seq <= self.seq:
                        continue
                    result = self.handle(env)
                    if result is not None:
                        await result
                    self.seq = env.seq  # only once handled: a failed handle is redone
            except AqeError as exc:  # resume where we were once the server answers
                _log.info("following %s: interrupted: %s", self.subjects, exc)
                await asyncio.sleep(0.2)

    async def _watch(self) -> None:
        seen = self.seq
        since = time.monotonic()
        patience = self.stall_check_s
        while True:
            await asyncio.sleep(self.stall_check_s)
            if self.seq != seen:
                seen, since, patience = self.seq, time.monotonic(), self.stall_check_s
                continue
            if time.monotonic() - since < patience:
                continue
            try:
                behind = await self.log.last_subject_seq(self.subjects) > seen
            except LogError:
                continue
            if behind and self.seq == seen and self._reader is not None:
                _log.info("following %s: stalled at %d; restarting", self.subjects, seen)
                self.restarts += 1
                self._reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._reader
                self._reader = asyncio.create_task(self._read())
                # A consumer created during a failover can take a while: wait longer
                # before the next restart, so a slow start is not cut short every time.
                since, patience = time.monotonic(), min(patience * 2, 30.0)


class LiveBoard:
    """A :class:`TaskBoard` kept current by following ``aqe.coord.task.>`` (a :class:`Follower`)."""

    def __init__(
        self, log: EventLog, board: TaskBoard | None = None, *, stall_check_s: float = 2.0
    ) -> None:
        self.log = log
        self.board = board if board is not None else TaskBoard()
        self._changed = asyncio.Event()
        self._listeners: list[Listener] = []
        self._follower = Follower(
            log,
            TASK_SUBJECTS,
            self._apply,
            after_seq=self.board.applied_seq,
            stall_check_s=stall_check_s,
        )
        self.decode_errors = 0

    @property
    def restarts(self) -> int:
        """How often a stalled follow was restarted."""
        return self._follower.restarts

    async def start(self) -> None:
        """Start following from after the board's last applied sequence."""
        self._follower.seq = max(self._follower.seq, self.board.applied_seq)
        self._follower.start()

    async def stop(self) -> None:
        """Stop following."""
        await self._follower.stop()

    def _apply(self, env: Envelope) -> None:
        try:
            event = env.decode()
        except EventDecodeError:
            self.decode_errors += 1
            self.board.applied_seq = max(self.board.applied_seq, env.seq)
            return
        self.board.apply(env, event)
        entry = self.board.tasks.get(getattr(event, "task_id", ""))
        for listener in list(self._listeners):
            listener(env, event, entry)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` after each applied event; returns the function that stops it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    async def changed(self, timeout_s: float) -> bool:
        """Wait for the next applied event (or ``timeout_s``); whether one came."""
        waiter = self._changed
        try:
            await asyncio.wait_for(waiter.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def reach(self, seq: int, timeout_s: float = 10.0) -> bool:
        """Wait until the board has applied ``seq``; whether it did in time."""
        deadline = time.monotonic() + timeout_s
        while self.board.applied_seq < seq:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await self.changed(min(left, 0.2))
        return True

    async def catch_up(self, timeout_s: float = 10.0) -> bool:
        """Wait until every task message stored now has been applied."""
        return await self.reach(await self.log.last_subject_seq(TASK_SUBJECTS), timeout_s)


# -- dispatchers --------------------------------------------------------------------------------


class Dispatcher(ABC):
    """One topology's way of turning pending tasks into stored claims.

    Subclasses implement :meth:`_start` (spawn loops with :meth:`spawn`) and may
    override :meth:`_stop` (release what ``_start`` took). Every claim goes through
    :meth:`claim`; :meth:`drain` stops new ones, waits for those in flight (and their
    delivery to the worker), then stops the loops.
    """

    name: ClassVar[Topology]

    def __init__(self, ctx: DispatchContext, epoch: int) -> None:
        self.ctx = ctx
        self.epoch = epoch
        self.stopping = asyncio.Event()
        self.claimed = 0
        self.lost = 0
        self._loops: set[asyncio.Task[Any]] = set()
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._claiming: set[str] = set()
        self._lost_at: dict[str, int] = {}
        self._started = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} fleet={self.ctx.fleet} epoch={self.epoch}>"

    async def start(self) -> None:
        """Begin dispatching under this topology."""
        if self._started:
            return
        self._started = True
        await self._start()

    @abstractmethod
    async def _start(self) -> None: ...

    async def _stop(self) -> None:
        """Release what :meth:`_start` acquired (after the loops ended)."""
        return None

    async def drain(self) -> None:
        """Stop claiming; let claims in flight finish and reach their workers."""
        self.stopping.set()
        while self._in_flight:
            await asyncio.gather(*list(self._in_flight), return_exceptions=True)
        for task in list(self._loops):
            task.cancel()
        await asyncio.gather(*list(self._loops), return_exceptions=True)
        self._loops.clear()
        await self._stop()

    def spawn(self, coro: Coroutine[Any, Any, Any], *, claim: bool = False) -> asyncio.Task[Any]:
        """Run a loop (cancelled by ``drain``) or, with ``claim``, a claim ``drain`` awaits."""
        task = asyncio.get_running_loop().create_task(coro)
        bucket = self._in_flight if claim else self._loops
        bucket.add(task)
        task.add_done_callback(bucket.discard)
        task.add_done_callback(_log_failure)
        return task

    def claimable(self, entries: Iterable[TaskEntry]) -> Iterable[TaskEntry]:
        """Pending entries this dispatcher is not claiming already nor just lost."""
        for entry in entries:
            if (
                entry.task_id in self._claiming
                or self._lost_at.get(entry.task_id) == entry.last_seq
            ):
                continue
            yield entry

    def spawn_claim(
        self,
        entry: TaskEntry,
        *,
        agent_id: str,
        assigned_by: str | None = None,
        deliver: Callable[[Claim], Awaitable[None]] | None = None,
    ) -> asyncio.Task[Any]:
        """Claim a pending entry as it is *now*, in a task ``drain`` waits for.

        The claim's condition is the entry's state read here, synchronously: read later
        (after an await) it could already be another claimer's claim, and a claim
        conditional on that would be stored on top of it.
        """
        if entry.status != "pending":
            raise ValueError(f"task {entry.task_id} is {entry.status}, not pending")
        self._claiming.add(entry.task_id)
        return self.spawn(
            self.claim(
                entry.submitted(),
                after_seq=entry.last_seq,
                attempt=entry.attempt + 1,
                agent_id=agent_id,
                assigned_by=assigned_by,
                deliver=deliver,
            ),
            claim=True,
        )

    async def claim(
        self,
        task: TaskSubmitted,
        *,
        after_seq: int,
        attempt: int,
        agent_id: str,
        assigned_by: str | None = None,
        deliver: Callable[[Claim], Awaitable[None]] | None = None,
    ) -> Claim | None:
        """Claim ``task`` for ``agent_id`` (see :func:`claim_task`) and deliver the claim.

        ``deliver`` tells the worker (default: hand it to the in-process worker). A lost
        claim is remembered so the same pending state is not tried again.
        """
        task_id = task.task_id
        self._claiming.add(task_id)
        try:
            claim = await claim_task(
                self.ctx.log,
                task,
                after_seq=after_seq,
                attempt=attempt,
                agent_id=agent_id,
                topology=self.name,
                epoch=self.epoch,
                assigned_by=assigned_by,
            )
        except LogError as exc:
            _log.warning("%s: claim of %s failed: %s", self, task_id, exc)
            return None
        finally:
            self._claiming.discard(task_id)
        if claim is None:
            self.lost += 1
            self._lost_at[task_id] = after_seq
            return None
        self.claimed += 1
        if deliver is None:
            self.ctx.worker(agent_id).accept(claim)
        else:
            await deliver(claim)
        return claim

    async def notify(self, claim: Claim) -> None:
        """Tell the claim's worker over its core subject (star, hierarchical)."""
        await self.ctx.bus.publish(
            self.ctx.agent_subject(claim.agent_id), msgspec.json.encode(claim)
        )


def decode_claim(message: BusMessage) -> Claim:
    """A claim sent by :meth:`Dispatcher.notify`.

    Raises:
        msgspec.ValidationError: not a claim.
    """
    return msgspec.json.decode(message.data, type=Claim)


async def subscribe_worker(ctx: DispatchContext, worker: Worker) -> Subscription:
    """Run claims notified to ``worker`` on its core subject."""

    async def on_claim(message: BusMessage) -> None:
        try:
            claim = decode_claim(message)
        except msgspec.ValidationError as exc:
            _log.warning("%s: ignoring a malformed claim notice: %s", worker.agent_id, exc)
            return
        if claim.agent_id == worker.agent_id:
            worker.accept(claim)

    return await ctx.bus.subscribe(ctx.agent_subject(worker.agent_id), on_claim)


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        _log.error("dispatch task failed", exc_info=task.exception())
