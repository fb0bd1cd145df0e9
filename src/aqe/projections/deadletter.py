"""Dead letters: events a projection could not decode or apply, parked, never dropped.

A parked message keeps its original bytes and headers and gains four headers that
say where it came from and why (see :class:`aqe.events.Headers`). Its message id is
derived from projection, stream and sequence, so re-parking the same event after a
crash is deduplicated by the server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import msgspec

from aqe.events import Envelope, Headers
from aqe.log.subjects import SUBJECT_PREFIX, encode_token

if TYPE_CHECKING:
    from nats.aio.client import Client

__all__ = [
    "DeadLetter",
    "DeadLetterSink",
    "JetStreamDeadLetters",
    "MemoryDeadLetters",
    "dead_letter_subject",
]

_MAX_REASON = 1000


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """One parked message."""

    projection: str
    stream: str
    seq: int
    subject: str
    reason: str
    data: bytes


class DeadLetterSink(Protocol):
    """Where the runner parks what it cannot fold."""

    async def park(self, projection: str, envelope: Envelope, reason: str) -> None:
        """Keep the message with the reason; must be idempotent per (projection, seq)."""
        ...


def dead_letter_subject(projection: str, stream: str) -> str:
    """``aqe.dlq.<projection>.<stream>``: one subject per projection and stream."""
    return f"{SUBJECT_PREFIX}.dlq.{encode_token(projection)}.{encode_token(stream)}"


def _dead_letter_id(projection: str, envelope: Envelope) -> str:
    return f"dlq:{projection}:{envelope.stream}:{envelope.seq}"


class MemoryDeadLetters:
    """Dead letters kept in a list (tests, verify runs)."""

    def __init__(self) -> None:
        self.parked: list[DeadLetter] = []

    async def park(self, projection: str, envelope: Envelope, reason: str) -> None:
        """Keep the message unless it is already parked."""
        if any(
            d.projection == projection and d.stream == envelope.stream and d.seq == envelope.seq
            for d in self.parked
        ):
            return
        self.parked.append(
            DeadLetter(
                projection=projection,
                stream=envelope.stream,
                seq=envelope.seq,
                subject=envelope.subject,
                reason=reason,
                data=envelope.data,
            )
        )


class JetStreamDeadLetters:
    """Parks messages on ``aqe.dlq.<projection>.<stream>`` (stream AQE_DLQ)."""

    def __init__(self, nc: Client, on_park: Callable[[DeadLetter], None] | None = None) -> None:
        self._js = nc.jetstream()
        self._on_park = on_park

    async def park(self, projection: str, envelope: Envelope, reason: str) -> None:
        """Publish the original bytes with where-from and why headers; wait for the ack."""
        from aqe.log.jetstream import _translated

        headers = {str(k): str(v) for k, v in envelope.headers.items()}
        headers.pop(Headers.EXPECTED_LAST_SUBJECT_SEQ, None)
        headers[Headers.MSG_ID] = _dead_letter_id(projection, envelope)
        headers[Headers.DLQ_PROJECTION] = projection
        headers[Headers.DLQ_STREAM] = envelope.stream
        headers[Headers.DLQ_SEQ] = str(envelope.seq)
        headers[Headers.DLQ_SUBJECT] = envelope.subject
        headers[Headers.DLQ_REASON] = " ".join(reason.split())[:_MAX_REASON]
        subject = dead_letter_subject(projection, envelope.stream)
        with _translated(subject):
            await self._js.publish(subject, envelope.data, headers=headers)
        if self._on_park is not None:
            self._on_park(
                DeadLetter(
                    projection=projection,
                    stream=envelope.stream,
                    seq=envelope.seq,
                    subject=envelope.subject,
                    reason=reason,
                    data=envelope.data,
                )
            )
