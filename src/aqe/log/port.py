"""The EventLog port: what every event log (JetStream, in-memory) promises.

Contract (checked by ``tests/contract/test_event_log.py`` for every adapter):

* ``append`` stores one event under the subject derived from it. The event id is
  sent as ``Nats-Msg-Id``; a repeat within the duplicate window stores nothing and
  answers ``duplicate=True`` with the sequence of the first copy.
* ``expected_last_seq`` makes the append conditional on the subject's last stream
  sequence (0 = the subject must be empty); a mismatch raises ``ConcurrencyError``.
  With ``expected_subject`` the condition is on the last sequence of that subject
  filter instead (wildcards allowed), so one aggregate's events on several subjects,
  or a lease guarding writes elsewhere (a fencing token), can be checked at once.
* ``append_batch`` is atomic per chunk of at most ``MAX_BATCH`` events: a chunk lands
  whole or not at all. Inputs longer than ``MAX_BATCH`` are split into consecutive
  chunks that commit in order, and the result says how many; chunks before a failing
  one stay stored. An adapter may pipeline chunks when no event is conditional; then
  chunks it already sent after the failing one may be stored too, each whole (the
  JetStream adapter: at most one).
* ``append_many`` pipelines single appends (fast, not atomic), returning one result
  per event in input order.
* ``last`` is the envelope of the last message on a subject or subject filter.
* ``read`` yields envelopes of one stream in sequence order from ``after_seq + 1``; it
  ends at the stream's end (or ``until_seq``) unless ``follow`` is set.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Protocol, runtime_checkable

import msgspec

from aqe.events import Envelope, Event

__all__ = ["MAX_BATCH", "AppendResult", "BatchResult", "EventLog", "NewEvent"]

MAX_BATCH = 1000
"""The server's limit on messages in one atomic batch (error 10199 above it)."""


class NewEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event about to be appended, with its append options."""

    event: Event
    event_id: str | None = None
    expected_last_seq: int | None = None
    expected_subject: str | None = None
    headers: Mapping[str, str] | None = None

    def resolved_id(self) -> str:
        """The explicit id, else the event's deterministic default id."""
        return self.event_id or self.event.default_id()


class AppendResult(msgspec.Struct, frozen=True, kw_only=True):
    """Where an appended event landed."""

    stream: str
    seq: int
    subject: str
    event_id: str
    duplicate: bool = False


class BatchResult(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of ``append_batch``: one atomic chunk per ``MAX_BATCH`` events."""

    stream: str
    first_seq: int
    last_seq: int
    count: int
    chunks: int
    duplicates: int = 0


@runtime_checkable
class EventLog(Protocol):
    """An append-only, sequenced, deduplicating log of events."""

    async def append(
        self,
        event: Event,
        *,
        event_id: str | None = None,
        expected_last_seq: int | None = None,
        expected_subject: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AppendResult:
        """Append one event; see the module docstring for the contract."""
        ...

    async def append_many(self, items: Sequence[NewEvent]) -> list[AppendResult]:
        """Append events pipelined, not atomically; results in input order."""
        ...

    async def append_batch(self, items: Sequence[NewEvent]) -> BatchResult:
        """Append events atomically in chunks of at most ``MAX_BATCH``, one stream."""
        ...

    def read(
        self,
        stream: str,
        *,
        after_seq: int = 0,
        until_seq: int | None = None,
        subjects: str | None = None,
        follow: bool = False,
    ) -> AsyncIterator[Envelope]:
        """Yield a stream's envelopes in order from ``after_seq + 1``."""
        ...

    async def get(self, stream: str, seq: int) -> Envelope:
        """The envelope at one stream sequence; ``EventNotFoundError`` if none."""
        ...

    async def last_seq(self, stream: str) -> int:
        """The stream's last sequence (0 when empty)."""
        ...

    async def last_subject_seq(self, subject: str) -> int:
        """The stream sequence of the subject's (or filter's) last message (0 when none)."""
        ...

    async def last(self, subject: str) -> Envelope | None:
        """The last message on a subject or subject filter, None when there is none."""
        ...

    async def close(self) -> None:
        """Release connections; the log is unusable afterwards."""
        ...
