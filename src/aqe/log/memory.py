"""An in-memory EventLog with the same contract as the JetStream adapter.

For unit tests and pure command-handler tests: it sequences, deduplicates within
the duplicate window, checks expected subject sequences and makes batches atomic
exactly as the server does (a conditional check runs before the duplicate check).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence

from aqe.errors import (
    BatchRejectedError,
    ConcurrencyError,
    EventNotFoundError,
    LogUnavailableError,
    PayloadTooLargeError,
)
from aqe.events import Envelope, Event, Headers
from aqe.log._common import DEFAULT_MAX_PAYLOAD, chunked, event_headers
from aqe.log.port import MAX_BATCH, AppendResult, BatchResult, NewEvent
from aqe.log.streams import StreamSpec, load_stream_specs, stream_for_subject
from aqe.log.subjects import subject_for, subject_matches

__all__ = ["InMemoryEventLog"]

_BATCH_DUPLICATE_ID = 10201


class _Stream:
    def __init__(self, spec: StreamSpec) -> None:
        self.spec = spec
        self.messages: list[Envelope] = []
        self.msg_ids: dict[str, tuple[int, float]] = {}
        self.last_by_subject: dict[str, int] = {}

    def duplicate_of(self, msg_id: str, now: float) -> int | None:
        hit = self.msg_ids.get(msg_id)
        if hit is None or now - hit[1] > self.spec.duplicate_window_s:
            return None
        return hit[0]


class InMemoryEventLog:
    """EventLog kept in process memory; lost when the process ends."""

    def __init__(
        self,
        specs: Sequence[StreamSpec] | None = None,
        *,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
    ) -> None:
        self._specs = tuple(specs) if specs is not None else load_stream_specs()
        self._streams = {spec.name: _Stream(spec) for spec in self._specs}
        self._max_payload = max_payload
        self._changed = asyncio.Event()
        self._closed = False

    def _stream_for(self, subject: str) -> _Stream:
        spec = stream_for_subject(self._specs, subject)
        if spec is None:
            raise LogUnavailableError(f"no stream stores subject {subject}")
        return self._streams[spec.name]

    def _stream_named(self, name: str) -> _Stream:
        self._check_open()
        try:
            return self._streams[name]
        except KeyError:
            raise LogUnavailableError(f"stream {name} not found") from None

    def _check_open(self) -> None:
        if self._closed:
            raise LogUnavailableError("event log is closed")

    def _prepare(self, item: NewEvent) -> tuple[_Stream, str, bytes, dict[str, str]]:
        event = item.event
        subject = subject_for(event)
        data = event.to_json()
        event_id = item.resolved_id()
        headers = event_headers(
            event_id, event.type_tag(), item.expected_last_seq, item.headers, item.expected_subject
        )
        size = len(data) + sum(len(k) + len(v) + 4 for k, v in headers.items())
        if size > self._max_payload:
            raise PayloadTooLargeError(subject, size, self._max_payload)
        return self._stream_for(subject), subject, data, headers

    def _store(self, stream: _Stream, subject: str, data: bytes, headers: dict[str, str]) -> int:
        seq = len(stream.messages) + 1
        now_ns = time.time_ns()
        event_id = headers[Headers.MSG_ID]
        stream.messages.append(
            Envelope(
                stream=stream.spec.name,
                seq=seq,
                subject=subject,
                # A bridged copy's Msg-Id is built from its origin coordinates; the
                # event's own id travels in Aqe-Event-Id.
                event_id=headers.get(Headers.EVENT_ID) or event_id,
                event_type=headers.get(Headers.EVENT_TYPE, ""),
                recorded_at_ns=now_ns,
                data=data,
                headers=headers,
            )
        )
        stream.msg_ids[event_id] = (seq, time.monotonic())
        stream.last_by_subject[subject] = seq
        self._changed.set()
        return seq

    async def append(
        self,
        event: Event,
        *,
        event_id: str | None = None,
        expected_last_seq: int | None = None,
        expected_subject: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AppendResult:
        """Append one event (see :mod:`aqe.log.port`)."""
        self._check_open()
        item = NewEvent(
            event=event,
            event_id=event_id,
            expected_last_seq=expected_last_seq,
            expected_subject=expected_subject,
            headers=headers,
        )
        stream, subject, data, hdrs = self._prepare(item)
        if expected_last_seq is not None:
            checked = expected_subject or subject
            actual = _last_matching(stream.last_by_subject, checked)
            if actual != expected_last_seq:
                raise ConcurrencyError(checked, expected_last_seq, actual)
        msg_id = hdrs[Headers.MSG_ID]
        first = stream.duplicate_of(msg_id, time.monotonic())
        if first is not None:
            return AppendResult(
                stream=stream.spec.name,
                seq=first,
                subject=subject,
                event_id=msg_id,
                duplicate=True,
            )
        seq = self._store(stream, subject, data, hdrs)
        return AppendResult(stream=stream.spec.name, seq=seq, subject=subject, event_id=msg_id)

    async def append_raw(
        self, subject: str, data: bytes, headers: Mapping[str, str] | None = None
    ) -> int:
        """Store arbitrary bytes on a subject, as a foreign or buggy writer would.

        Not part of the EventLog port: tests use it to put corrupt messages in a
        stream and check that projections park them.
        """
        self._check_open()
        stream = self._stream_for(subject)
        hdrs = dict(headers or {})
        hdrs.setdefault(Headers.MSG_ID, f"raw-{len(stream.messages) + 1}")
        return self._store(stream, subject, data, hdrs)

    async def append_many(self, items: Sequence[NewEvent]) -> list[AppendResult]:
        """Append events one after another (not atomically)."""
        return [
            await self.append(
                i.event,
                event_id=i.event_id,
                expected_last_seq=i.expected_last_seq,
                expected_subject=i.expected_subject,
                headers=i.headers,
            )
            for i in items
        ]

    async def append_batch(self, items: Sequence[NewEvent]) -> BatchResult:
        """Append atomically in chunks of at most ``MAX_BATCH``, like the server."""
        self._check_open()
        if not items:
            raise ValueError("append_batch needs at least one event")
        prepared = [self._prepare(i) for i in items]
        names = {p[0].spec.name for p in prepared}
        if len(names) != 1:
            raise ValueError(f"an atomic batch must stay in one stream, got {sorted(names)}")
        stream = prepared[0][0]
        if not stream.spec.allow_atomic:
            raise BatchRejectedError("-", 10174, f"stream {stream.spec.name} disallows atomic")
        first_seq = last_seq = duplicates = chunks = 0
        for offset, chunk in enumerate(chunked(prepared, MAX_BATCH)):
            base = offset * MAX_BATCH
            chunk_items = items[base : base + len(chunk)]
            try:
                self._check_chunk(stream, chunk, chunk_items)
            except BatchRejectedError as exc:
                if exc.code != _BATCH_DUPLICATE_ID:
                    raise
                # Same fallback as the JetStream adapter: resend one by one.
                results = await self.append_many(chunk_items)
                duplicates += sum(r.duplicate for r in results)
                fresh = [r.seq for r in results if not r.duplicate]
                if fresh:
                    first_seq = first_seq or min(fresh)
                    last_seq = max(fresh)
            else:
                for _, subject, data, hdrs in chunk:
                    last_seq = self._store(stream, subject, data, hdrs)
                    first_seq = first_seq or last_seq
            chunks += 1
        return BatchResult(
            stream=stream.spec.name,
            first_seq=first_seq,
            last_seq=last_seq,
            count=len(items),
            chunks=chunks,
            duplicates=duplicates,
        )

    def _check_chunk(
        self,
        stream: _Stream,
        chunk: Sequence[tuple[_Stream, str, bytes, dict[str, str]]],
        items: Sequence[NewEvent],
    ) -> None:
        # Simulate the chunk in order: conditions see earlier messages of the same chunk.
        last = dict(stream.last_by_subject)
        ids: set[str] = set()
        next_seq = len(stream.messages) + 1
        now = time.monotonic()
        for (_, subject, _, hdrs), item in zip(chunk, items, strict=True):
            if item.expected_last_seq is not None:
                # As nats-server 2.15 does: a condition on the message's own subject sees
                # earlier messages of the batch, one on a filter only what was stored.
                checked = item.expected_subject or subject
                seen = stream.last_by_subject if item.expected_subject else last
                actual = _last_matching(seen, checked)
                if actual != item.expected_last_seq:
                    raise ConcurrencyError(checked, item.expected_last_seq, actual)
            msg_id = hdrs[Headers.MSG_ID]
            if msg_id in ids or stream.duplicate_of(msg_id, now) is not None:
                raise BatchRejectedError(
                    "-", _BATCH_DUPLICATE_ID, "atomic publish batch contains duplicate message id"
                )
            ids.add(msg_id)
            last[subject] = next_seq
            next_seq += 1

    async def read(
        self,
        stream: str,
        *,
        after_seq: int = 0,
        until_seq: int | None = None,
        subjects: str | None = None,
        follow: bool = False,
    ) -> AsyncIterator[Envelope]:
        """Yield envelopes in sequence order from ``after_seq + 1``."""
        target = self._stream_named(stream)
        pos = after_seq
        while True:
            while pos < len(target.messages):
                env = target.messages[pos]
                pos += 1
                if until_seq is not None and env.seq > until_seq:
                    return
                if subjects is None or subject_matches(subjects, env.subject):
                    yield env
            if until_seq is not None and pos >= until_seq:
                return
            if not follow:
                return
            self._changed.clear()
            await self._changed.wait()
            self._check_open()

    async def get(self, stream: str, seq: int) -> Envelope:
        """The envelope at ``seq``."""
        target = self._stream_named(stream)
        if seq < 1 or seq > len(target.messages):
            raise EventNotFoundError(stream, seq)
        return target.messages[seq - 1]

    async def last_seq(self, stream: str) -> int:
        """The stream's last sequence."""
        return len(self._stream_named(stream).messages)

    async def last_subject_seq(self, subject: str) -> int:
        """The subject's (or filter's) last stream sequence, 0 when there is none."""
        self._check_open()
        return _last_matching(self._stream_for(subject).last_by_subject, subject)

    async def last(self, subject: str) -> Envelope | None:
        """The last message on a subject or subject filter, None when there is none."""
        self._check_open()
        stream = self._stream_for(subject)
        seq = _last_matching(stream.last_by_subject, subject)
        return stream.messages[seq - 1] if seq else None

    async def close(self) -> None:
        """Mark the log closed and wake followers."""
        self._closed = True
        self._changed.set()


def _last_matching(last_by_subject: Mapping[str, int], subject: str) -> int:
    """The last sequence of ``subject``, or of every subject a wildcard filter matches."""
    if "*" not in subject and ">" not in subject:
        return last_by_subject.get(subject, 0)
    matching = (seq for s, seq in last_by_subject.items() if subject_matches(subject, s))
    return max(matching, default=0)
