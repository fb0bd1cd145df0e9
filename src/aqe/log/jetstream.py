"""The EventLog adapter over NATS JetStream (nats-py).

Only this module and :mod:`aqe.log._jsm` import nats; every client exception is
translated in :func:`_translated` so no nats type crosses the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import nats
import nats.errors
import nats.js.errors
from nats.js.api import ConsumerConfig, DeliverPolicy

from aqe.errors import (
    BatchRejectedError,
    ConcurrencyError,
    EventNotFoundError,
    LogError,
    LogUnavailableError,
    PayloadTooLargeError,
)
from aqe.events import Envelope, Event, Headers
from aqe.log._common import chunked, event_headers
from aqe.log.port import MAX_BATCH, AppendResult, BatchResult, NewEvent
from aqe.log.streams import StreamSpec, load_stream_specs, stream_for_subject
from aqe.log.subjects import subject_for

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

    from aqe.config import Settings

__all__ = ["JetStreamEventLog"]

WRONG_LAST_SEQUENCE = 10071
BATCH_WRONG_LAST_SEQUENCE = 10164
BATCH_DUPLICATE_ID = 10201
STREAM_NOT_FOUND = 10059
MESSAGE_NOT_FOUND = 10037
_READ_BUFFER_HIGH = 20_000


@contextlib.contextmanager
def _translated(subject: str, expected: int | None = None) -> Iterator[None]:
    """Map nats-py exceptions onto aqe's error tree."""
    try:
        yield
    except nats.js.errors.APIError as exc:
        code = exc.err_code
        if code == WRONG_LAST_SEQUENCE:
            raise ConcurrencyError(
                subject, expected if expected is not None else -1, _actual_seq(exc.description)
            ) from exc
        if code == STREAM_NOT_FOUND or isinstance(exc, nats.js.errors.NoStreamResponseError):
            raise LogUnavailableError(
                f"no stream found for {subject}; run `aqe streams apply`"
            ) from exc
        raise LogError(f"{subject}: server error {code}: {exc.description}") from exc
    except nats.errors.MaxPayloadError as exc:
        raise PayloadTooLargeError(subject, -1, -1) from exc
    except (TimeoutError, nats.errors.TimeoutError) as exc:
        raise LogUnavailableError(f"timed out waiting for the server ({subject})") from exc
    except nats.errors.NoRespondersError as exc:
        raise LogUnavailableError(
            f"no stream answers for {subject}; run `aqe streams apply`"
        ) from exc
    except (nats.errors.ConnectionClosedError, nats.errors.StaleConnectionError) as exc:
        raise LogUnavailableError(f"connection to the server is closed ({subject})") from exc


def _actual_seq(description: str | None) -> int | None:
    # The server says "wrong last sequence: 42".
    if description and ":" in description:
        tail = description.rsplit(":", 1)[1].strip()
        if tail.isdigit():
            return int(tail)
    return None


def _parse_ack_reply(reply: str) -> tuple[int, int, int]:
    """(stream seq, timestamp ns, pending) from a ``$JS.ACK`` reply subject."""
    tokens = reply.split(".")
    # v1: $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
    # v2: $JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>.<r>
    base = 5 if len(tokens) == 9 else 7
    return int(tokens[base]), int(tokens[base + 2]), int(tokens[base + 3])


class JetStreamEventLog:
    """EventLog over a JetStream connection; streams come from ``streams/*.json``."""

    def __init__(self, nc: Client, specs: Sequence[StreamSpec] | None = None) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._specs = tuple(specs) if specs is not None else load_stream_specs()

    @classmethod
    async def connect(
        cls, settings: Settings, specs: Sequence[StreamSpec] | None = None
    ) -> JetStreamEventLog:
        """Open a connection (embedded server or ``settings.nats_url``) and wrap it."""
        from aqe.server import open_connection

        nc = await open_connection(settings)
        return cls(nc, specs)

    @property
    def connection(self) -> Client:
        """The underlying nats-py client, for adapters that need it (streams, DLQ)."""
        return self._nc

    @property
    def specs(self) -> tuple[StreamSpec, ...]:
        """The stream definitions this log routes subjects with."""
        return self._specs

    @property
    def max_payload(self) -> int:
        """The largest message the connected server accepts."""
        return int(self._nc.max_payload)

    def _stream_of(self, subject: str) -> str:
        spec = stream_for_subject(self._specs, subject)
        if spec is None:
            raise LogUnavailableError(f"no stream stores subject {subject}")
        return spec.name

    def _message(self, item: NewEvent) -> tuple[str, bytes, dict[str, str]]:
        event = item.event
        subject = subject_for(event)
        data = event.to_json()
        headers = event_headers(
            item.resolved_id(), event.type_tag(), item.expected_last_seq, item.headers
        )
        size = len(data) + sum(len(k) + len(v) + 4 for k, v in headers.items()) + 12
        limit = self.max_payload
        if size > limit:
            raise PayloadTooLargeError(subject, size, limit)
        return subject, data, headers

    async def append(
        self,
        event: Event,
        *,
        event_id: str | None = None,
        expected_last_seq: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AppendResult:
        """Append one event (see :mod:`aqe.log.port`)."""
        item = NewEvent(
            event=event, event_id=event_id, expected_last_seq=expected_last_seq, headers=headers
        )
        subject, data, hdrs = self._message(item)
        with _translated(subject, expected_last_seq):
            ack = await self._js.publish(subject, data, headers=hdrs)
        return AppendResult(
            stream=ack.stream,
            seq=ack.seq,
            subject=subject,
            event_id=hdrs[Headers.MSG_ID],
            duplicate=bool(ack.duplicate),
        )

    async def append_many(self, items: Sequence[NewEvent]) -> list[AppendResult]:
        """Append pipelined with ``publish_async``; not atomic, results in input order."""
        prepared = [self._message(i) for i in items]
        futures = []
        for (subject, data, hdrs), item in zip(prepared, items, strict=True):
            with _translated(subject, item.expected_last_seq):
                futures.append(await self._js.publish_async(subject, data, headers=hdrs))
        results: list[AppendResult] = []
        for (subject, _, hdrs), item, fut in zip(prepared, items, futures, strict=True):
            with _translated(subject, item.expected_last_seq):
                ack = await fut
            results.append(
                AppendResult(
                    stream=ack.stream,
                    seq=ack.seq,
                    subject=subject,
                    event_id=hdrs[Headers.MSG_ID],
                    duplicate=bool(ack.duplicate),
                )
            )
        return results

    async def append_batch(self, items: Sequence[NewEvent]) -> BatchResult:
        """Append atomically through JetStream atomic batch publish.

        Each chunk of at most ``MAX_BATCH`` events lands whole or not at all; chunks
        are sent in order and a failing chunk stops the call (earlier ones stay). A
        chunk the server refuses because it repeats stored ids (a retried ingest) is
        re-sent event by event so the stored ones are reported as duplicates.

        Raises:
            ConcurrencyError: a conditional append in the chunk failed.
            BatchRejectedError: the server refused the chunk for another reason.
        """
        if not items:
            raise ValueError("append_batch needs at least one event")
        prepared = [self._message(i) for i in items]
        streams = {self._stream_of(p[0]) for p in prepared}
        if len(streams) != 1:
            raise ValueError(f"an atomic batch must stay in one stream, got {sorted(streams)}")
        stream = streams.pop()
        first_seq = last_seq = duplicates = chunks = 0
        for offset, chunk in enumerate(chunked(items, MAX_BATCH)):
            base = offset * MAX_BATCH
            msgs = prepared[base : base + len(chunk)]
            try:
                seq, count = await self._commit_chunk(msgs, chunk)
            except BatchRejectedError as exc:
                if exc.code != BATCH_DUPLICATE_ID:
                    raise
                results = await self.append_many(chunk)
                duplicates += sum(r.duplicate for r in results)
                fresh = [r.seq for r in results if not r.duplicate]
                if fresh:
                    first_seq = first_seq or min(fresh)
                    last_seq = max(fresh)
            else:
                first_seq = first_seq or seq - count + 1
                last_seq = seq
            chunks += 1
        return BatchResult(
            stream=stream,
            first_seq=first_seq,
            last_seq=last_seq,
            count=len(items),
            chunks=chunks,
            duplicates=duplicates,
        )

    async def _commit_chunk(
        self, msgs: Sequence[tuple[str, bytes, dict[str, str]]], items: Sequence[NewEvent]
    ) -> tuple[int, int]:
        batch_id = uuid.uuid4().hex
        n = len(msgs)
        nc = self._nc
        reply: Msg | None = None
        first_subject = msgs[0][0]
        with _translated(first_subject):
            for i, (subject, data, hdrs) in enumerate(msgs, start=1):
                headers = dict(hdrs)
                headers["Nats-Batch-Id"] = batch_id
                headers["Nats-Batch-Sequence"] = str(i)
                if i == n:
                    headers["Nats-Batch-Commit"] = "1"
                if i == 1 or i == n:
                    # The first message opens the batch (an error answers at once);
                    # the commit answers with the ack for the whole batch.
                    reply = await nc.request(subject, data, headers=headers, timeout=10.0)
                    if i == 1 and n > 1 and reply.data:
                        self._raise_batch_error(batch_id, reply.data, msgs, items)
                else:
                    await nc.publish(subject, data, headers=headers)
        if reply is None:  # pragma: no cover - n >= 1 always sends a request
            raise BatchRejectedError(batch_id, None, "no reply to the commit")
        body = self._raise_batch_error(batch_id, reply.data, msgs, items)
        return int(body["seq"]), int(body.get("count", n))

    def _raise_batch_error(
        self,
        batch_id: str,
        data: bytes,
        msgs: Sequence[tuple[str, bytes, dict[str, str]]],
        items: Sequence[NewEvent],
    ) -> dict[str, Any]:
        try:
            body: dict[str, Any] = json.loads(data)
        except ValueError as exc:
            raise BatchRejectedError(batch_id, None, f"unreadable reply {data[:80]!r}") from exc
        error = body.get("error")
        if not error:
            return body
        code = error.get("err_code")
        detail = str(error.get("description", ""))
        if code in (WRONG_LAST_SEQUENCE, BATCH_WRONG_LAST_SEQUENCE):
            conditional = [
                (subject, item.expected_last_seq)
                for (subject, _, _), item in zip(msgs, items, strict=True)
                if item.expected_last_seq is not None
            ]
            subject, expected = (
                conditional[0] if len(conditional) == 1 else (f"batch {batch_id}", -1)
            )
            raise ConcurrencyError(
                subject, expected if expected is not None else -1, _actual_seq(detail)
            )
        raise BatchRejectedError(batch_id, code, detail)

    async def read(
        self,
        stream: str,
        *,
        after_seq: int = 0,
        until_seq: int | None = None,
        subjects: str | None = None,
        follow: bool = False,
    ) -> AsyncIterator[Envelope]:
        """Yield envelopes from an ordered consumer starting at ``after_seq + 1``."""
        if not follow:
            last = await self.last_seq(stream)
            if last <= after_seq or (until_seq is not None and until_seq <= after_seq):
                return
        spec = next((s for s in self._specs if s.name == stream), None)
        filters = [subjects] if subjects else list(spec.subjects if spec else ())
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=after_seq + 1,
        )
        if len(filters) > 1:
            config.filter_subjects = filters
        buffer: deque[Msg] = deque()
        arrived = asyncio.Event()
        drained = asyncio.Event()

        async def on_msg(msg: Msg) -> None:
            buffer.append(msg)
            arrived.set()
            if len(buffer) > _READ_BUFFER_HIGH:
                drained.clear()
                await drained.wait()

        with _translated(filters[0] if filters else stream):
            sub = await self._js.subscribe(
                filters[0] if filters else ">",
                stream=stream,
                cb=on_msg,
                ordered_consumer=True,
                config=config,
                pending_msgs_limit=-1,
                pending_bytes_limit=-1,
            )
        try:
            if not follow:
                with _translated(stream):
                    info = await sub.consumer_info()
                if info.num_pending == 0 and not buffer:
                    return
            while True:
                while buffer:
                    msg = buffer.popleft()
                    if not buffer:
                        drained.set()
                    env = _envelope(stream, msg)
                    seq, _, pending = _parse_ack_reply(msg.reply)
                    if until_seq is not None and seq > until_seq:
                        return
                    yield env
                    if until_seq is not None and seq >= until_seq:
                        return
                    if not follow and pending == 0:
                        return
                arrived.clear()
                drained.set()
                await arrived.wait()
        finally:
            drained.set()
            with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
                await sub.unsubscribe()

    async def get(self, stream: str, seq: int) -> Envelope:
        """The envelope stored at ``seq``."""
        with _translated(stream):
            try:
                raw = await self._js.get_msg(stream, seq)
            except nats.js.errors.NotFoundError as exc:
                if exc.err_code == MESSAGE_NOT_FOUND:
                    raise EventNotFoundError(stream, seq) from exc
                raise
        headers = {str(k): str(v) for k, v in (raw.headers or {}).items()}
        return Envelope(
            stream=stream,
            seq=int(raw.seq or seq),
            subject=str(raw.subject),
            event_id=headers.get(Headers.MSG_ID, ""),
            event_type=headers.get(Headers.EVENT_TYPE, ""),
            recorded_at_ns=int(raw.time.timestamp() * 1e9) if raw.time else 0,
            data=raw.data or b"",
            headers=headers,
        )

    async def last_seq(self, stream: str) -> int:
        """The stream's last sequence (0 when empty)."""
        with _translated(stream):
            info = await self._js.stream_info(stream)
        return int(info.state.last_seq)

    async def last_subject_seq(self, subject: str) -> int:
        """The subject's last stream sequence (0 when the subject is empty)."""
        stream = self._stream_of(subject)
        with _translated(subject):
            try:
                raw = await self._js.get_last_msg(stream, subject)
            except nats.js.errors.NotFoundError as exc:
                if exc.err_code == MESSAGE_NOT_FOUND:
                    return 0
                raise
        return int(raw.seq or 0)

    async def close(self) -> None:
        """Flush pending publishes and close the connection."""
        with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
            await self._nc.drain()


def _envelope(stream: str, msg: Msg) -> Envelope:
    seq, ts, _ = _parse_ack_reply(msg.reply)
    headers = msg.headers or {}
    return Envelope(
        stream=stream,
        seq=seq,
        subject=msg.subject,
        event_id=headers.get(Headers.MSG_ID, ""),
        event_type=headers.get(Headers.EVENT_TYPE, ""),
        recorded_at_ns=ts,
        data=msg.data,
        headers=headers,
    )
