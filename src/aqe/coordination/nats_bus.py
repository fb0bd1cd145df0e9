"""The :class:`~aqe.coordination.bus.Bus` adapter over nats-py.

The only module of :mod:`aqe.coordination` that imports nats. Client exceptions are
translated here: an unanswered request is ``None`` (the caller tries the next peer), a
fetch that found nothing is ``[]``, and anything that means the server is out of reach
becomes :class:`~aqe.errors.LogUnavailableError`.

The work queue is a durable pull consumer (explicit acks, ``filter_subjects``) on a
stream with limits retention: the JetStream work-queue pattern without a work-queue
stream, so the log keeps every task message while each one is still handed to a
single puller per queue.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from aqe.coordination.bus import BusMessage, Handler, Subscription, WorkItem, WorkQueue
from aqe.events import Envelope, Headers
from aqe.log.jetstream import _translated

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription as NatsSubscription
    from nats.js.client import JetStreamContext

__all__ = ["NatsBus"]

_CONSUMER_NOT_FOUND = 10014


class _Sub:
    def __init__(self, bus: NatsBus, sub: NatsSubscription) -> None:
        self._bus = bus
        self._sub = sub

    async def unsubscribe(self) -> None:
        self._bus._subs.discard(self)
        with contextlib.suppress(nats.errors.Error):
            await self._sub.unsubscribe()


class _Item:
    __slots__ = ("_envelope", "_msg")

    def __init__(self, msg: Msg, envelope: Envelope) -> None:
        self._msg = msg
        self._envelope = envelope

    @property
    def envelope(self) -> Envelope:
        return self._envelope

    async def ack(self) -> None:
        with _translated(f"ack {self._envelope.subject}"):
            await self._msg.ack()

    async def nak(self) -> None:
        with _translated(f"nak {self._envelope.subject}"):
            await self._msg.nak()

    @property
    def deliveries(self) -> int:
        return int(self._msg.metadata.num_delivered)

    async def in_progress(self) -> None:
        with _translated(f"in-progress {self._envelope.subject}"):
            await self._msg.in_progress()


class _Puller:
    def __init__(self, stream: str, psub: JetStreamContext.PullSubscription) -> None:
        self._stream = stream
        self._psub = psub

    async def fetch(self, batch: int, timeout_s: float) -> list[WorkItem]:
        try:
            msgs = await self._psub.fetch(batch, timeout=timeout_s)
        except (TimeoutError, nats.errors.TimeoutError):
            return []
        except nats.js.errors.FetchTimeoutError:  # pragma: no cover - older clients
            return []
        except nats.errors.Error as exc:
            with _translated(f"fetch from {self._stream}"):
                raise exc
            raise  # pragma: no cover
        return [_Item(m, _envelope(self._stream, m)) for m in msgs]

    async def close(self) -> None:
        with contextlib.suppress(nats.errors.Error):
            await self._psub.unsubscribe()


def _envelope(stream: str, msg: Msg) -> Envelope:
    meta = msg.metadata
    headers = dict(msg.headers or {})
    return Envelope(
        stream=stream,
        seq=int(meta.sequence.stream),
        subject=msg.subject,
        event_id=headers.get(Headers.MSG_ID, ""),
        event_type=headers.get(Headers.EVENT_TYPE, ""),
        recorded_at_ns=int(meta.timestamp.timestamp() * 1e9),
        data=msg.data,
        headers=headers,
    )


class NatsBus:
    """Core messaging and work queues over one nats-py connection (not closed by us)."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._subs: set[_Sub] = set()

    async def publish(self, subject: str, data: bytes) -> None:
        """Core publish (not stored)."""
        with _translated(subject):
            await self._nc.publish(subject, data)

    async def request(self, subject: str, data: bytes, timeout_s: float) -> bytes | None:
        """Core request; None when nobody subscribes or answers within ``timeout_s``."""
        try:
            msg = await self._nc.request(subject, data, timeout=timeout_s)
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError, TimeoutError):
            return None
        except nats.errors.Error as exc:
            with _translated(subject):
                raise exc
            raise  # pragma: no cover
        return bytes(msg.data)

    async def subscribe(self, subject: str, handler: Handler) -> Subscription:
        """Subscribe; each message is handed to ``handler`` (answering requests too)."""

        async def on_msg(msg: Msg) -> None:
            respond = msg.respond if msg.reply else None
            await handler(BusMessage(msg.subject, msg.data, respond))

        with _translated(subject):
            sub = await self._nc.subscribe(subject, cb=on_msg)
        handle = _Sub(self, sub)
        self._subs.add(handle)
        return handle

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
        """Add a durable pull consumer (explicit acks) from ``start_seq`` on ``subjects``."""
        config = ConsumerConfig(
            durable_name=name,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=max(1, start_seq),
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ack_wait_s,
            max_deliver=max_deliver,
            max_ack_pending=-1,
            max_waiting=4096,
            inactive_threshold=expires_s,
        )
        if len(subjects) == 1:
            config.filter_subject = subjects[0]
        else:
            config.filter_subjects = list(subjects)
        with _translated(f"work queue {name} on {stream}"):
            await self._js.add_consumer(stream, config)

    async def open_work_queue(self, stream: str, name: str) -> WorkQueue:
        """Bind a pull subscription to the durable consumer."""
        with _translated(f"work queue {name} on {stream}"):
            psub = await self._js.pull_subscribe_bind(durable=name, stream=stream)
        return _Puller(stream, psub)

    async def delete_work_queue(self, stream: str, name: str) -> None:
        """Delete the consumer; a missing one is fine."""
        try:
            await self._js.delete_consumer(stream, name)
        except nats.js.errors.NotFoundError:
            return
        except nats.errors.Error as exc:
            with _translated(f"work queue {name} on {stream}"):
                raise exc

    async def close(self) -> None:
        """Unsubscribe everything subscribed through this bus."""
        for sub in list(self._subs):
            await sub.unsubscribe()
