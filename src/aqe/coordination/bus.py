"""The messaging port dispatch needs beside the log: core subjects and a work queue.

Dispatch keeps every *fact* in the log (a task, its claim, its outcome) and uses
plain messaging only for what need not be stored:

* **core subjects** (``aqe.work.<fleet>.>``, outside ``aqe.coord.>`` so no stream
  stores them): a star coordinator telling an agent about a claim it made for it, the
  ring's token, a hierarchical root handing a task to a group leader. Losing one of
  these costs latency, never correctness: the claim is in the log anyway;
* a **work queue**: a durable JetStream pull consumer on ``AQE_COORD`` that hands each
  claimable task message to one of the mesh peers pulling from it.

:class:`Bus` is the port; :class:`aqe.coordination.nats_bus.NatsBus` the adapter over
nats-py (the only module of this package that imports nats) and :class:`InMemoryBus`
an in-process implementation for pure unit tests, over an ``InMemoryEventLog``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from typing import Any, Protocol, runtime_checkable

from aqe.events import Envelope
from aqe.log.port import EventLog
from aqe.log.subjects import subject_matches

__all__ = [
    "WORK_PREFIX",
    "Bus",
    "BusMessage",
    "Handler",
    "InMemoryBus",
    "Subscription",
    "WorkItem",
    "WorkQueue",
]

WORK_PREFIX = "aqe.work"
"""Core (unstored) dispatch subjects: ``aqe.work.<fleet>.<...>``."""


class BusMessage:
    """A core message as a subscriber receives it; ``respond`` answers a request."""

    __slots__ = ("_respond", "data", "subject")

    def __init__(
        self,
        subject: str,
        data: bytes,
        respond: Callable[[bytes], Awaitable[None]] | None = None,
    ) -> None:
        self.subject = subject
        self.data = data
        self._respond = respond

    async def respond(self, data: bytes) -> None:
        """Answer the request this message was (no-op for a plain publish)."""
        if self._respond is not None:
            await self._respond(data)


Handler = Callable[[BusMessage], Coroutine[Any, Any, None]]


class Subscription(Protocol):
    """An active subscription; ``unsubscribe`` ends it."""

    async def unsubscribe(self) -> None:
        """Stop receiving messages."""
        ...


class WorkItem(Protocol):
    """One message handed out by a work queue; ack it once handled."""

    @property
    def envelope(self) -> Envelope:
        """The stored message."""
        ...

    async def ack(self) -> None:
        """Handled: the queue will not hand it out again."""
        ...

    async def nak(self) -> None:
        """Not handled: the queue may hand it out again (to anyone)."""
        ...

    @property
    def deliveries(self) -> int:
        """How many times the queue has handed this message out (1 the first time)."""
        ...

    async def in_progress(self) -> None:
        """Still working on it: restart the ack wait, so it is not handed out again."""
        ...


class WorkQueue(Protocol):
    """One puller's handle on a shared work queue."""

    async def fetch(self, batch: int, timeout_s: float) -> list[WorkItem]:
        """Up to ``batch`` items, waiting at most ``timeout_s`` for the first ([] if none)."""
        ...

    async def close(self) -> None:
        """Stop pulling (the queue itself stays)."""
        ...


@runtime_checkable
class Bus(Protocol):
    """Core publish / subscribe / request, and work queues on a stream."""

    async def publish(self, subject: str, data: bytes) -> None:
        """Send a message to whoever subscribes now (at most once)."""
        ...

    async def request(self, subject: str, data: bytes, timeout_s: float) -> bytes | None:
        """Send and wait for one answer; None when nobody answers in time."""
        ...

    async def subscribe(self, subject: str, handler: Handler) -> Subscription:
        """Call ``handler`` for each message on ``subject`` (wildcards allowed)."""
        ...

    async def create_work_queue(
        self,
        stream: str,
        name: str,
        subjects: Sequence[str],
        *,
        start_seq: int,
        ack_wait_s: float = 30.0,
        max_deliver: int = -1,
        expires_s: float | None = 600.0,
    ) -> None:
        """Create (or keep) a durable queue over ``subjects`` of ``stream`` from ``start_seq``.

        ``max_deliver`` bounds how often one message is handed out (-1: no bound);
        ``expires_s`` removes the queue after that long without pullers (None: never).
        """
        ...

    async def open_work_queue(self, stream: str, name: str) -> WorkQueue:
        """A puller's handle on an existing queue; pullers share its messages."""
        ...

    async def delete_work_queue(self, stream: str, name: str) -> None:
        """Remove the queue (a missing queue is fine)."""
        ...

    async def close(self) -> None:
        """Unsubscribe everything this bus subscribed (the connection is the caller's)."""
        ...


# -- in-memory ------------------------------------------------------------------------------


class _MemorySubscription:
    def __init__(self, bus: InMemoryBus, subject: str, handler: Handler) -> None:
        self._bus = bus
        self.subject = subject
        self.handler = handler

    async def unsubscribe(self) -> None:
        with contextlib.suppress(ValueError):
            self._bus._subs.remove(self)


class _MemoryItem:
    def __init__(self, queue: _MemoryQueue, envelope: Envelope) -> None:
        self._queue = queue
        self._envelope = envelope

    @property
    def envelope(self) -> Envelope:
        return self._envelope

    async def ack(self) -> None:
        self._queue.unacked.pop(self._envelope.seq, None)

    async def nak(self) -> None:
        if self._queue.unacked.pop(self._envelope.seq, None) is not None:
            self._queue.ready.appendleft(self._envelope)
            self._queue.arrived.set()

    @property
    def deliveries(self) -> int:
        return 1

    async def in_progress(self) -> None:
        return None


class _MemoryQueue:
    """A queue fed by a follower over the in-memory log; each envelope to one fetcher."""

    def __init__(self, log: EventLog, stream: str, subjects: Sequence[str], start_seq: int) -> None:
        self.ready: deque[Envelope] = deque()
        self.unacked: dict[int, Envelope] = {}
        self.arrived = asyncio.Event()
        self._feeder = asyncio.create_task(self._feed(log, stream, tuple(subjects), start_seq))

    async def _feed(
        self, log: EventLog, stream: str, subjects: tuple[str, ...], start_seq: int
    ) -> None:
        reader: AsyncIterator[Envelope] = log.read(
            stream, after_seq=max(0, start_seq - 1), follow=True
        )
        async for env in reader:
            if any(subject_matches(s, env.subject) for s in subjects):
                self.ready.append(env)
                self.arrived.set()

    async def fetch(self, batch: int, timeout_s: float) -> list[WorkItem]:
        if not self.ready:
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), timeout_s)
        out: list[WorkItem] = []
        while self.ready and len(out) < batch:
            env = self.ready.popleft()
            self.unacked[env.seq] = env
            out.append(_MemoryItem(self, env))
        return out

    async def stop(self) -> None:
        self._feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._feeder


class _MemoryPuller:
    def __init__(self, queue: _MemoryQueue) -> None:
        self._queue = queue

    async def fetch(self, batch: int, timeout_s: float) -> list[WorkItem]:
        return await self._queue.fetch(batch, timeout_s)

    async def close(self) -> None:
        return None


class InMemoryBus:
    """A :class:`Bus` inside one process, for unit tests (no redelivery on ack timeout)."""

    def __init__(self, log: EventLog) -> None:
        self._log = log
        self._subs: list[_MemorySubscription] = []
        self._queues: dict[tuple[str, str], _MemoryQueue] = {}

    async def publish(self, subject: str, data: bytes) -> None:
        """Deliver to every matching subscriber (each in its own task, like a client)."""
        for sub in list(self._subs):
            if subject_matches(sub.subject, subject):
                asyncio.get_running_loop().create_task(sub.handler(BusMessage(subject, data)))

    async def request(self, subject: str, data: bytes, timeout_s: float) -> bytes | None:
        """Deliver to one matching subscriber and wait for its answer."""
        for sub in list(self._subs):
            if subject_matches(sub.subject, subject):
                answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

                async def respond(reply: bytes, answer: asyncio.Future[bytes] = answer) -> None:
                    if not answer.done():
                        answer.set_result(reply)

                asyncio.get_running_loop().create_task(
                    sub.handler(BusMessage(subject, data, respond))
                )
                try:
                    return await asyncio.wait_for(answer, timeout_s)
                except TimeoutError:
                    return None
        return None

    async def subscribe(self, subject: str, handler: Handler) -> Subscription:
        """Register ``handler`` for ``subject``."""
        sub = _MemorySubscription(self, subject, handler)
        self._subs.append(sub)
        return sub

    async def create_work_queue(
        self,
        stream: str,
        name: str,
        subjects: Sequence[str],
        *,
        start_seq: int,
        ack_wait_s: float = 30.0,
        max_deliver: int = -1,
        expires_s: float | None = 600.0,
    ) -> None:
        """Start feeding a queue from the log (idempotent per name)."""
        if (stream, name) not in self._queues:
            self._queues[(stream, name)] = _MemoryQueue(self._log, stream, subjects, start_seq)

    async def open_work_queue(self, stream: str, name: str) -> WorkQueue:
        """A puller on an existing queue.

        Raises:
            KeyError: no queue of that name.
        """
        return _MemoryPuller(self._queues[(stream, name)])

    async def delete_work_queue(self, stream: str, name: str) -> None:
        """Stop and forget a queue."""
        queue = self._queues.pop((stream, name), None)
        if queue is not None:
            await queue.stop()

    async def close(self) -> None:
        """Stop every queue."""
        for key in list(self._queues):
            await self.delete_work_queue(*key)
