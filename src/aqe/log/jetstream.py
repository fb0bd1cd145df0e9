"""The EventLog adapter over NATS JetStream (nats-py).

Only this module and :mod:`aqe.log._jsm` import nats; every client exception is
translated in :func:`_translated` so no nats type crosses the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import re
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.js.api import ConsumerConfig, DeliverPolicy, RawStreamMsg

from aqe.errors import (
    BatchRejectedError,
    ConcurrencyError,
    EventNotFoundError,
    LimitExceededError,
    LogError,
    LogUnavailableError,
    MessageInProcessError,
    PayloadTooLargeError,
)
from aqe.events import Envelope, Event, Headers
from aqe.log._common import event_headers, header_lines, subject_router
from aqe.log._refusals import refusals_for
from aqe.log.port import MAX_BATCH, AppendResult, BatchResult, NewEvent
from aqe.log.streams import StreamSpec, load_stream_specs, with_replicas
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
DUPLICATE_IN_PROCESS = 10158
STORE_FAILED = 10077
LIMIT_CODES = frozenset(
    {
        10023,  # insufficient resources
        10026,  # maximum consumers limit reached
        10027,  # maximum number of streams reached
        10028,  # insufficient memory resources available
        10047,  # insufficient storage resources available
        10054,  # message size exceeds maximum allowed
    }
)
"""Server errors that are a limit's answer: retrying the same request cannot help."""
_READ_BUFFER_HIGH = 20_000
_READ_IDLE_S = 0.5
"""Seconds without progress after which a bounded read asks the server whether any
message is left to deliver (a record the server cannot read is counted but never sent)."""

BATCH_PIPELINE = 2
"""Atomic-batch chunks one ``append_batch`` call keeps in flight (unconditional batches).

With a second chunk in flight the server stores one while the client encodes and
sends the next: about a third more events/s than one at a time on a 2-core machine;
4 measured the same as 2. The server allows 50 open batches per stream."""
ACK_TIMEOUT_S = 10.0
"""Default seconds a sent message (or an atomic batch's commit) waits for the server's
answer. Past it the append is :class:`~aqe.errors.LogUnavailableError`: it may or may
not be stored, and a retry with the same id settles which (a duplicate if it was)."""
_PIPELINE_BLOCK = 1000
"""Pipelined messages encoded and written to the connection in one go."""
_PIPELINE_DEPTH = 4
"""Blocks in flight before the oldest one's acks are awaited (4,000 messages, nats-py's
``publish_async`` default): bounds the client's buffer and reply bookkeeping."""
# The batch headers (id, sequence, commit) that a chunk's messages carry on top of
# their own; the size check keeps room for them because the server closes the
# connection of a client that sends a message over max_payload.
_BATCH_HEADER_RESERVE = 128
_OWN_HEADERS_MAX = 256
_NO_RESPONDERS = "503"
_NATS_ERRORS = (nats.errors.Error, TimeoutError)
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_SUBJECT = re.compile(r"[ \t\r\n]")
_HEADER_NAMES: dict[str, str] = {}
"""Raw header names of raw batches already checked -> the name as sent."""
_HEADER_NAMES_MAX = 4096

_Message = tuple[str, bytes, dict[str, str]]
"""Subject, payload and headers of one event message."""


@contextlib.contextmanager
def _translated(subject: str, expected: int | None = None) -> Iterator[None]:
    """Map nats-py exceptions onto aqe's error tree."""
    try:
        yield
    except nats.js.errors.APIError as exc:
        code = exc.err_code
        # 10164 is the same failed condition without the actual sequence in the text; a
        # cluster answers it for a single publish too (a filter condition, R3 stream).
        if code in (WRONG_LAST_SEQUENCE, BATCH_WRONG_LAST_SEQUENCE):
            raise ConcurrencyError(
                subject, expected if expected is not None else -1, _actual_seq(exc.description)
            ) from exc
        if code == STREAM_NOT_FOUND:
            raise LogUnavailableError(
                f"no stream found for {subject}; run `aqe streams apply`"
            ) from exc
        answer = _server_answer(subject, code, exc.description)
        if answer is not None:
            raise answer from exc
        if isinstance(exc, nats.js.errors.ServiceUnavailableError) or exc.code == 503:
            # "JetStream system temporarily unavailable" (10008): a stream or meta
            # leader election is under way; the same append can be retried.
            raise LogUnavailableError(
                f"{subject}: JetStream temporarily unavailable ({exc.description})"
            ) from exc
        raise LogError(f"{subject}: server error {code}: {exc.description}") from exc
    except nats.js.errors.NoStreamResponseError as exc:
        # Not an APIError: no stream leader answered (during a failover, for one).
        raise LogUnavailableError(
            f"no stream answered for {subject} (stream missing or electing a leader)"
        ) from exc
    except nats.errors.MaxPayloadError as exc:
        raise PayloadTooLargeError(subject, -1, -1) from exc
    except (TimeoutError, nats.errors.TimeoutError) as exc:
        raise LogUnavailableError(f"timed out waiting for the server ({subject})") from exc
    except nats.errors.NoRespondersError as exc:
        raise LogUnavailableError(
            f"no stream answers for {subject}; run `aqe streams apply`"
        ) from exc
    except (
        nats.errors.ConnectionClosedError,
        nats.errors.StaleConnectionError,
        nats.errors.ConnectionDrainingError,
        nats.errors.OutboundBufferLimitError,
    ) as exc:
        raise LogUnavailableError(f"connection to the server is unusable ({subject})") from exc
    except nats.errors.Error as exc:
        raise LogError(f"{subject}: {type(exc).__name__}: {exc}") from exc


def _server_answer(subject: str, code: int | None, description: str | None) -> LogError | None:
    """The typed error for a server error code that is not a failed condition, if any.

    Limits are answers, not outages: a stream at its ``max_msgs`` answers 503 with
    10077 ("maximum messages exceeded"), which would otherwise be retried as an
    unavailable leader. 10077 is the store's generic failure, so only its "exceeded"
    answers count as limits. "In process" states (10158) are retried like outages.
    """
    detail = description or ""
    if code in LIMIT_CODES or (code == STORE_FAILED and "exceeded" in detail):
        return LimitExceededError(subject, code, detail)
    if code == DUPLICATE_IN_PROCESS or "in process" in detail:
        return MessageInProcessError(subject, code, detail)
    return None


def _raise_translated(exc: BaseException, subject: str, expected: int | None = None) -> NoReturn:
    """Re-raise a caught client exception as aqe's (the hot loops catch, not wrap)."""
    with _translated(subject, expected):
        raise exc
    raise exc  # pragma: no cover - _translated never swallows


async def _write_raw(nc: Client, data: bytes) -> bool:
    """Queue pre-encoded protocol bytes on the connection; False when not possible.

    nats-py has no public call that takes a message whose header block is already
    encoded: ``Client.publish`` validates and re-encodes every header of every
    message, which for an atomic batch costs the client more CPU than the server
    spends storing the event. This calls the two private methods ``publish`` itself
    ends with (nats-py 2.x). When they are missing, or the client is not plainly
    connected (so that ``publish``'s own reconnect-buffering rules must apply), it
    returns False and the caller publishes message by message instead.
    """
    send = getattr(nc, "_send_command", None)
    flush = getattr(nc, "_flush_pending", None)
    if send is None or flush is None or not nc.is_connected or nc.is_draining_pubs:
        return False
    await send(data)
    await flush()
    return True


def _encode_chunk(msgs: Sequence[_Message], batch_id: str, reply: str) -> bytes:
    """HPUB commands for one atomic batch; only the commit (last) carries a reply."""
    opening = f"Nats-Batch-Id: {batch_id}\r\nNats-Batch-Sequence: ".encode()
    last = len(msgs)
    out: list[bytes] = []
    for i, (subject, data, headers) in enumerate(msgs, start=1):
        if i < last:
            head = b"NATS/1.0\r\n%s%s%d\r\n\r\n" % (header_lines(headers), opening, i)
            out.append(b"HPUB %s %d %d\r\n" % (subject.encode(), len(head), len(head) + len(data)))
        else:
            head = b"NATS/1.0\r\n%s%s%d\r\nNats-Batch-Commit: 1\r\n\r\n" % (
                header_lines(headers),
                opening,
                i,
            )
            out.append(
                b"HPUB %s %s %d %d\r\n"
                % (subject.encode(), reply.encode(), len(head), len(head) + len(data))
            )
        out += (head, data, b"\r\n")
    return b"".join(out)


class _Chunk(NamedTuple):
    """One atomic batch sent and waiting for its commit reply."""

    batch_id: str
    reply: str
    answer: asyncio.Future[Msg]
    msgs: Sequence[_Message]
    items: Sequence[NewEvent]


class _ApiErrorBody(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _PubAck(msgspec.Struct):
    """The server's JSON answer to one published message: an ack or an error."""

    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: _ApiErrorBody | None = None


_decode_pub_ack = msgspec.json.Decoder(_PubAck).decode
_API_ERRORS: dict[int, type[nats.js.errors.APIError]] = {
    400: nats.js.errors.BadRequestError,
    404: nats.js.errors.NotFoundError,
    500: nats.js.errors.ServerError,
    503: nats.js.errors.ServiceUnavailableError,
}


def _pub_ack(reply: Msg) -> _PubAck:
    """The ack in a publish reply.

    Raises:
        nats.js.errors.APIError: the server's error answer, as nats-py would have
            built it (constructed here; nats-py's ``from_error`` raises instead of
            returning, which is what left ``publish_async`` futures unresolved), for
            :func:`_translated` to map.
        nats.js.errors.NoStreamResponseError: no stream took the subject (status 503).
        LogError: a reply that is not an ack.
    """
    if reply.headers and reply.headers.get("Status") == _NO_RESPONDERS:
        raise nats.js.errors.NoStreamResponseError
    try:
        ack = _decode_pub_ack(reply.data)
    except msgspec.DecodeError as exc:
        raise LogError(f"{reply.subject}: unreadable publish ack {reply.data[:80]!r}") from exc
    error = ack.error
    if error is not None:
        kind = _API_ERRORS.get(error.code, nats.js.errors.APIError)
        raise kind(code=error.code, err_code=error.err_code, description=error.description)
    return ack


def _encode_requests(msgs: Sequence[_Message], replies: Sequence[str]) -> bytes:
    """HPUB commands for messages that each want their ack on their own reply subject."""
    out: list[bytes] = []
    for (subject, data, headers), reply in zip(msgs, replies, strict=True):
        head = b"NATS/1.0\r\n%s\r\n" % header_lines(headers)
        out.append(
            b"HPUB %s %s %d %d\r\n"
            % (subject.encode(), reply.encode(), len(head), len(head) + len(data))
        )
        out += (head, data, b"\r\n")
    return b"".join(out)


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

    def __init__(
        self,
        nc: Client,
        specs: Sequence[StreamSpec] | None = None,
        *,
        ack_timeout_s: float = ACK_TIMEOUT_S,
    ) -> None:
        """Wrap a connection.

        Args:
            nc: A connected nats-py client.
            specs: The stream definitions (default: ``streams/*.json``).
            ack_timeout_s: How long a pipelined append or an atomic batch waits for
                the server's answer before it is reported unavailable (stored or not;
                a retry with the same ids tells).
        """
        if not (math.isfinite(ack_timeout_s) and ack_timeout_s > 0):
            raise ValueError(f"ack_timeout_s must be a positive number, not {ack_timeout_s}")
        self._nc = nc
        self._ack_timeout_s = ack_timeout_s
        self._js = nc.jetstream()
        self._specs = tuple(specs) if specs is not None else load_stream_specs()
        # A server refusal (permissions, a limit that closes the connection) fails the
        # operation it concerns at once instead of leaving it to time out.
        self._refusals = refusals_for(nc)
        self._route = subject_router(self._specs)
        # Commit replies of atomic batches and acks of pipelined appends arrive on one
        # wildcard inbox, opened on first use; each waiting chunk or message has a
        # future under its reply subject.
        self._commit_prefix: str | None = None
        self._commit_lock = asyncio.Lock()
        self._commits: dict[str, asyncio.Future[Msg]] = {}
        self._tokens = itertools.count()

    @classmethod
    async def connect(
        cls, settings: Settings, specs: Sequence[StreamSpec] | None = None
    ) -> JetStreamEventLog:
        """Open a connection (embedded server or ``settings.nats_url``) and wrap it.

        ``settings.replicas`` (``AQE_REPLICAS``), when set, overrides every stream's
        declared replicas.
        """
        from aqe.server import open_connection

        chosen = specs if specs is not None else load_stream_specs()
        nc = await open_connection(settings)
        return cls(nc, with_replicas(chosen, settings.replicas))

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
        name = self._route(subject)
        if name is None:
            raise LogUnavailableError(f"no stream stores subject {subject}")
        return name

    def _message(self, item: NewEvent, limit: int, reserve: int = 0) -> _Message:
        """One event's subject, payload and headers, checked against ``limit`` bytes.

        ``reserve`` counts header bytes added when sending (an atomic batch's own).
        """
        event = item.event
        subject = subject_for(event)
        data = event.to_json()
        event_id = item.event_id or event.default_id()
        event_type = event.type_tag()
        headers = event_headers(
            event_id, event_type, item.expected_last_seq, item.headers, item.expected_subject
        )
        # aqe's own header names, framing and a sequence number take under
        # _OWN_HEADERS_MAX bytes, so only a message near the limit (or with extra
        # headers) needs the exact sum; this runs once per appended event.
        fixed = len(data) + reserve + 12
        if item.headers or fixed + len(event_id) + len(event_type) + _OWN_HEADERS_MAX > limit:
            size = fixed + sum(len(k) + len(v) + 4 for k, v in headers.items())
            if size > limit:
                raise PayloadTooLargeError(subject, size, limit)
        return subject, data, headers

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
        item = NewEvent(
            event=event,
            event_id=event_id,
            expected_last_seq=expected_last_seq,
            expected_subject=expected_subject,
            headers=headers,
        )
        subject, data, hdrs = self._message(item, self.max_payload)
        with (
            self._refusals.guard(subject, subjects=lambda: (subject,)),
            _translated(expected_subject or subject, expected_last_seq),
        ):
            ack = await self._js.publish(subject, data, headers=hdrs)
        return AppendResult(
            stream=ack.stream,
            seq=ack.seq,
            subject=subject,
            event_id=hdrs[Headers.MSG_ID],
            duplicate=bool(ack.duplicate),
        )

    async def append_many(self, items: Sequence[NewEvent]) -> list[AppendResult]:
        """Append pipelined (not atomic); results in input order.

        Every event is sent at once (up to 4,000 awaiting their acks) and each ack,
        error or silence is the answer of its own event.

        Raises:
            ConcurrencyError: the first event (in input order) whose condition failed;
                the others were still sent and may be stored.
            LimitExceededError: the first event a stream or server limit refused.
            PermissionDeniedError: the server refused a subject (at once).
            LogUnavailableError: no stream answered, the connection is unusable, or
                no ack came within the ack timeout. That event and the ones after it
                may or may not be stored: append the same ids again (duplicates are
                reported as such).
        """
        limit = self.max_payload
        prepared = [self._message(i, limit) for i in items]
        if not prepared:
            return []

        def where(n: int) -> tuple[str, int | None]:
            item = items[n]
            return item.expected_subject or prepared[n][0], item.expected_last_seq

        with self._refusals.guard(
            prepared[0][0], subjects=lambda: [subject for subject, _, _ in prepared]
        ):
            acks = await self._publish_pipelined(prepared, where)
        return [
            AppendResult(
                stream=ack.stream,
                seq=ack.seq,
                subject=subject,
                event_id=hdrs[Headers.MSG_ID],
                duplicate=ack.duplicate,
            )
            for (subject, _, hdrs), ack in zip(prepared, acks, strict=True)
        ]

    async def _publish_pipelined(
        self, msgs: Sequence[_Message], where: Callable[[int], tuple[str, int | None]]
    ) -> list[_PubAck]:
        """Publish messages in order without waiting for each ack; their acks in order.

        Each message gets its own reply subject on the connection's reply inbox, so an
        error answer resolves that message's future like an ack does, and the wait for
        it is bounded by the ack timeout. Runs inside the caller's refusal guard.

        Args:
            msgs: Checked messages (subject, payload, headers).
            where: For message ``n``, the subject and expected sequence to name in its
                error (called on failure only).

        Raises:
            LogError: the translated error of the first message (in order) that failed;
                later ones were sent and may be stored.
        """
        prefix = await self._commit_inbox()
        loop = asyncio.get_running_loop()
        pending = self._commits
        tokens = self._tokens
        timeout = self._ack_timeout_s
        replies: list[str] = []
        futures: list[asyncio.Future[Msg]] = []
        sent_at: list[float] = []  # per block: the ack deadline counts from here
        acks: list[_PubAck] = []

        async def settle(upto: int) -> None:
            for n in range(len(acks), upto):
                future = futures[n]
                if not future.done():
                    remaining = sent_at[n // _PIPELINE_BLOCK] + timeout - time.monotonic()
                    try:
                        await asyncio.wait_for(future, max(remaining, 0.0))
                    except TimeoutError:
                        subject = where(n)[0]
                        raise LogUnavailableError(
                            f"no ack for {subject} in {timeout:g} s; it may or may not be "
                            "stored (append the same id again to find out)"
                        ) from None
                try:
                    acks.append(_pub_ack(future.result()))
                except _NATS_ERRORS as exc:
                    _raise_translated(exc, *where(n))

        try:
            for start in range(0, len(msgs), _PIPELINE_BLOCK):
                await settle(start - (_PIPELINE_DEPTH - 1) * _PIPELINE_BLOCK)
                block = msgs[start : start + _PIPELINE_BLOCK]
                names = [f"{prefix}p{next(tokens)}" for _ in block]
                for name in names:
                    future = loop.create_future()
                    pending[name] = future
                    futures.append(future)
                replies += names
                sent_at.append(time.monotonic())
                try:
                    if not await _write_raw(self._nc, _encode_requests(block, names)):
                        for (subject, data, headers), name in zip(block, names, strict=True):
                            await self._nc.publish(subject, data, reply=name, headers=headers)
                except _NATS_ERRORS as exc:
                    _raise_translated(exc, *where(start))
            await settle(len(msgs))
        finally:
            for name in replies[len(acks) :]:  # only left on error: late acks are dropped
                pending.pop(name, None)
        return acks

    async def append_batch(self, items: Sequence[NewEvent]) -> BatchResult:
        """Append atomically through JetStream atomic batch publish.

        Each chunk of at most ``MAX_BATCH`` events lands whole or not at all, and
        chunks commit in input order. A chunk the server refuses because it repeats
        stored ids (a retried ingest) is re-sent event by event so the stored ones are
        reported as duplicates.

        Events are encoded and checked chunk by chunk, each chunk while the ones
        before it are in flight. An event that cannot be sent (over max_payload,
        routed to another stream, a bad header name) therefore fails its chunk just
        as a server refusal does.

        When a chunk fails, the error is raised after every chunk before it is
        confirmed stored, and no later chunk is sent. Unless an event of the call
        carries ``expected_last_seq``, chunks are pipelined (``BATCH_PIPELINE`` = 2
        in flight), so the one chunk sent right after a chunk the server refused
        may also have been stored, whole. Calls with conditional events send one
        chunk at a time: nothing after the failing chunk is stored.

        Raises:
            ConcurrencyError: a conditional append in a chunk failed.
            BatchRejectedError: the server refused a chunk for another reason.
            LogUnavailableError: no stream, no connection, or no commit reply in
                time (that chunk may or may not have been stored).
            PayloadTooLargeError: an event is over the server's max_payload (its
                chunk and later ones were not sent).
            ValueError: no events, events for more than one stream, or a bad
                header name (that chunk and later ones were not sent).
        """
        if not items:
            raise ValueError("append_batch needs at least one event")
        limit = self.max_payload
        conditional = any(i.expected_last_seq is not None for i in items)
        depth = 1 if conditional else BATCH_PIPELINE
        prefix = await self._commit_inbox()
        stream = ""
        in_flight: deque[_Chunk] = deque()
        first_seq = last_seq = duplicates = chunks = 0

        async def settle_oldest() -> None:
            nonlocal first_seq, last_seq, duplicates
            lo, hi, dups = await self._settle(in_flight.popleft())
            first_seq, last_seq = _widen(first_seq, last_seq, lo, hi)
            duplicates += dups

        with self._refusals.guard(
            subject_for(items[0].event),
            subjects=lambda: [subject_for(i.event) for i in items],
        ):
            try:
                for start in range(0, len(items), MAX_BATCH):
                    chunk_items = items[start : start + MAX_BATCH]
                    # Encoding a chunk while the ones before it are in flight overlaps the
                    # client's work with the server's: +20% events/s over encoding all first.
                    try:
                        msgs = [self._message(i, limit, _BATCH_HEADER_RESERVE) for i in chunk_items]
                        stream = self._chunk_stream(msgs, stream)
                    except (ValueError, LogError):
                        while in_flight:  # an earlier chunk's failure is reported first
                            await settle_oldest()
                        raise
                    if len(in_flight) >= depth:
                        await settle_oldest()
                    in_flight.append(await self._send_chunk(msgs, chunk_items, prefix))
                    chunks += 1
                while in_flight:
                    await settle_oldest()
            finally:
                for chunk in in_flight:  # only left on error: late replies are dropped
                    self._commits.pop(chunk.reply, None)
        return BatchResult(
            stream=stream,
            first_seq=first_seq,
            last_seq=last_seq,
            count=len(items),
            chunks=chunks,
            duplicates=duplicates,
        )

    async def append_raw_batch(
        self, stream: str, messages: Sequence[tuple[str, bytes, Mapping[str, str]]]
    ) -> BatchResult:
        """Append already-encoded messages (subject, data, headers) as ONE atomic batch.

        For writers that store messages they did not build from an :class:`Event`, such
        as the bridge storing copies of another cluster's events together with their
        ``BridgeApplied`` marker. Headers are sent as given (names checked, values
        trimmed, CR/LF made spaces, as nats-py would send them), so a message may carry
        its own ``Nats-Msg-Id`` and ``Nats-Expected-Last-Subject-Sequence``
        (``-Subject``) condition. When the server refuses the batch because it repeats
        stored message ids, it is re-sent message by message, in order, so the stored
        ones are reported as duplicates. That re-send is not atomic; it checks the
        batch's conditions before it stores anything.

        Args:
            stream: The stream every subject must route to.
            messages: At most ``MAX_BATCH`` messages, stored in this order.

        Raises:
            ConcurrencyError: a message's condition failed; nothing was stored.
            BatchRejectedError: the server refused the batch for another reason.
            LogUnavailableError: no stream, no connection, or no commit reply in time
                (the batch may or may not have been stored).
            PayloadTooLargeError: a message is over the server's max_payload.
            ValueError: no messages, more than ``MAX_BATCH``, a subject of another
                stream or with whitespace, or a bad header name.
        """
        if not messages:
            raise ValueError("append_raw_batch needs at least one message")
        if len(messages) > MAX_BATCH:
            raise ValueError(
                f"an atomic batch holds at most {MAX_BATCH} messages, got {len(messages)}"
            )
        limit = self.max_payload
        msgs = [_raw_message(s, d, h, limit - _BATCH_HEADER_RESERVE) for s, d, h in messages]
        if self._chunk_stream(msgs, stream) != stream:  # pragma: no cover - checked inside
            raise ValueError(f"messages do not belong to stream {stream}")
        prefix = await self._commit_inbox()
        with self._refusals.guard(msgs[0][0], subjects=lambda: [m[0] for m in msgs]):
            chunk = await self._send_chunk(msgs, (), prefix)
            first_seq, last_seq, duplicates = await self._settle_raw(chunk)
        return BatchResult(
            stream=stream,
            first_seq=first_seq,
            last_seq=last_seq,
            count=len(msgs),
            chunks=1,
            duplicates=duplicates,
        )

    async def _commit_reply(self, chunk: _Chunk) -> Msg:
        """The server's answer to a chunk's commit (an ack or an error, still unread).

        Raises:
            LogUnavailableError: no answer in time, or no stream took the subject.
        """
        subject = chunk.msgs[0][0]
        try:
            reply = await asyncio.wait_for(chunk.answer, self._ack_timeout_s)
        except TimeoutError as exc:
            raise LogUnavailableError(
                f"no commit reply for atomic batch {chunk.batch_id} ({subject}) in "
                f"{self._ack_timeout_s:g} s; it may or may not be stored"
            ) from exc
        finally:
            self._commits.pop(chunk.reply, None)
        if reply.headers and reply.headers.get("Status") == _NO_RESPONDERS:
            raise LogUnavailableError(f"no stream answers for {subject}; run `aqe streams apply`")
        return reply

    async def _settle_raw(self, chunk: _Chunk) -> tuple[int, int, int]:
        """:meth:`_settle` for a raw batch: conditions are read from the headers."""
        reply = await self._commit_reply(chunk)
        try:
            body: dict[str, Any] = json.loads(reply.data)
        except ValueError as exc:
            raise BatchRejectedError(
                chunk.batch_id, None, f"unreadable reply {reply.data[:80]!r}"
            ) from exc
        error = body.get("error")
        if not error:
            seq = int(body["seq"])
            count = int(body.get("count", len(chunk.msgs)))
            return seq - count + 1, seq, 0
        code = error.get("err_code")
        detail = str(error.get("description", ""))
        if code in (WRONG_LAST_SEQUENCE, BATCH_WRONG_LAST_SEQUENCE):
            conditions = [_condition(s, h) for s, _, h in chunk.msgs]
            known = [c for c in conditions if c is not None]
            where, expected = known[0] if len(known) == 1 else (f"batch {chunk.batch_id}", -1)
            raise ConcurrencyError(where, expected, _actual_seq(detail))
        if code == BATCH_DUPLICATE_ID:
            return await self._publish_each(chunk.msgs)
        answer = _server_answer(chunk.msgs[0][0], code, detail)
        if answer is not None:
            raise answer
        raise BatchRejectedError(chunk.batch_id, code, detail)

    async def _publish_each(self, msgs: Sequence[_Message]) -> tuple[int, int, int]:
        """Publish messages pipelined, in order: (first fresh, last fresh, duplicates).

        For a batch the server refused because it repeats stored ids: each message is
        sent on its own, so the stored ones come back as duplicates. The conditions are
        checked first, so a batch whose condition already fails stores nothing here
        either (the server reports repeated ids before failed conditions); each is
        checked again by the server when its message is stored.
        """
        earlier: set[str] = set()
        for subject, _, headers in msgs:
            condition = _condition(subject, headers)
            # A condition on a subject the batch wrote before depends on that write.
            if condition is not None and condition[0] not in earlier:
                actual = await self.last_subject_seq(condition[0])
                if actual != condition[1]:
                    raise ConcurrencyError(condition[0], condition[1], actual)
            earlier.add(subject)

        def where(n: int) -> tuple[str, int | None]:
            subject, _, headers = msgs[n]
            return _condition(subject, headers) or (subject, None)

        first_seq = last_seq = duplicates = 0
        for ack in await self._publish_pipelined(msgs, where):
            if ack.duplicate:
                duplicates += 1
            else:
                first_seq, last_seq = _widen(first_seq, last_seq, ack.seq, ack.seq)
        return first_seq, last_seq, duplicates

    def _chunk_stream(self, msgs: Sequence[_Message], stream: str) -> str:
        """The one stream a chunk's subjects go to, which must be ``stream`` if set."""
        names = {self._stream_of(subject) for subject in {subject for subject, _, _ in msgs}}
        if stream:
            names.add(stream)
        if len(names) != 1:
            raise ValueError(f"an atomic batch must stay in one stream, got {sorted(names)}")
        return names.pop()

    async def _commit_inbox(self) -> str:
        """The prefix of commit reply subjects, subscribing on first use."""
        if self._commit_prefix is None:
            async with self._commit_lock:
                if self._commit_prefix is None:
                    inbox = self._nc.new_inbox()
                    with _translated(inbox):
                        await self._nc.subscribe(f"{inbox}.*", cb=self._on_commit_reply)
                    self._commit_prefix = f"{inbox}."
        return self._commit_prefix

    async def _on_commit_reply(self, msg: Msg) -> None:
        future = self._commits.pop(msg.subject, None)
        if future is not None and not future.done():
            future.set_result(msg)

    async def _send_chunk(
        self, msgs: Sequence[_Message], items: Sequence[NewEvent], prefix: str
    ) -> _Chunk:
        """Send one atomic batch without waiting for its commit reply."""
        batch_id = uuid.uuid4().hex
        reply = prefix + batch_id
        answer: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._commits[reply] = answer
        try:
            with _translated(msgs[0][0]):
                if not await _write_raw(self._nc, _encode_chunk(msgs, batch_id, reply)):
                    await self._publish_chunk(msgs, batch_id, reply)
        except BaseException:
            self._commits.pop(reply, None)
            raise
        return _Chunk(batch_id, reply, answer, msgs, items)

    async def _publish_chunk(self, msgs: Sequence[_Message], batch_id: str, reply: str) -> None:
        """The public-API way to send what :func:`_encode_chunk` encodes."""
        last = len(msgs)
        for i, (subject, data, hdrs) in enumerate(msgs, start=1):
            headers = {**hdrs, "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(i)}
            if i == last:
                headers["Nats-Batch-Commit"] = "1"
            await self._nc.publish(subject, data, reply=reply if i == last else "", headers=headers)

    async def _settle(self, chunk: _Chunk) -> tuple[int, int, int]:
        """Wait for a chunk's commit: (first fresh seq, last fresh seq, duplicates)."""
        reply = await self._commit_reply(chunk)
        try:
            body = self._raise_batch_error(chunk.batch_id, reply.data, chunk.msgs, chunk.items)
        except BatchRejectedError as exc:
            if exc.code != BATCH_DUPLICATE_ID:
                raise
            return await self._publish_each(chunk.msgs)
        seq = int(body["seq"])
        count = int(body.get("count", len(chunk.msgs)))
        return seq - count + 1, seq, 0

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
                (item.expected_subject or subject, item.expected_last_seq)
                for (subject, _, _), item in zip(msgs, items, strict=True)
                if item.expected_last_seq is not None
            ]
            subject, expected = (
                conditional[0] if len(conditional) == 1 else (f"batch {batch_id}", -1)
            )
            raise ConcurrencyError(
                subject, expected if expected is not None else -1, _actual_seq(detail)
            )
        answer = _server_answer(msgs[0][0], code, detail)
        if answer is not None:
            raise answer
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
        """Yield envelopes from an ordered consumer starting at ``after_seq + 1``.

        A bounded read (``follow=False``) ends at ``until_seq``, or when a message's ack
        reply says none is pending, or when it has read nothing for :data:`_READ_IDLE_S`
        (to twice that) and the stream holds no readable message past the last one read
        (up to ``until_seq``). The last check ends reads that would otherwise wait
        forever: the server counts a record it cannot read (its checksum fails) in the
        stream's state and in the pending counts, but skips it, so the pending count
        never reaches 0.
        """
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

        where = filters[0] if filters else stream
        with self._refusals.guard(where, api=True), _translated(where):
            sub = await self._js.subscribe(
                filters[0] if filters else ">",
                stream=stream,
                cb=on_msg,
                ordered_consumer=True,
                config=config,
                pending_msgs_limit=-1,
                pending_bytes_limit=-1,
            )
        # Once reading, a refusal (of the deliver subscription, of a consumer reset)
        # wakes the loop below instead of cancelling whoever iterates.
        watch = self._refusals.guard(where, api=True, wake=arrived.set)
        watch.__enter__()
        # The stream's subjects are the consumer's filters: one filter, or all of them.
        remaining = filters[0] if len(filters) == 1 else ">"
        read_seq = after_seq

        async def nothing_left() -> bool:
            """Whether no message the read has still to yield is stored and readable."""
            try:
                with self._refusals.guard(stream, api=True), _translated(stream):
                    try:
                        raw = await self._js.get_msg(
                            stream, read_seq + 1, subject=remaining, next=True
                        )
                    except nats.js.errors.NotFoundError as exc:
                        if exc.err_code == MESSAGE_NOT_FOUND:
                            return True
                        raise
            except LogUnavailableError:
                return False  # ask again when idle again
            return until_seq is not None and int(raw.seq or 0) > until_seq

        # A bounded read is idle when a tick finds no progress since the tick before: one
        # repeating timer, not a timeout per wait (which cost replay about 3%).
        loop = asyncio.get_running_loop()
        idle = False
        seen = after_seq
        timer: asyncio.TimerHandle | None = None

        def tick() -> None:
            nonlocal idle, seen, timer
            if read_seq == seen and not buffer:
                idle = True
                arrived.set()
            seen = read_seq
            timer = loop.call_later(_READ_IDLE_S, tick)

        if not follow:
            timer = loop.call_later(_READ_IDLE_S, tick)
        try:
            if not follow:
                with self._refusals.guard(stream, api=True), _translated(stream):
                    info = await sub.consumer_info()
                # Nothing pending and nothing delivered yet: the range is empty. (Messages
                # already pushed may still be on their way to on_msg.)
                delivered = info.delivered.consumer_seq if info.delivered else 0
                if info.num_pending == 0 and delivered == 0 and not buffer:
                    return
            while True:
                while buffer:
                    msg = buffer.popleft()
                    if not buffer:
                        drained.set()
                    seq, ts, pending = _parse_ack_reply(msg.reply)
                    env = _envelope(stream, msg, seq, ts)
                    if until_seq is not None and seq > until_seq:
                        return
                    read_seq = seq
                    yield env
                    if until_seq is not None and seq >= until_seq:
                        return
                    if not follow and pending == 0:
                        return
                watch.raise_if_refused()
                if idle:
                    idle = False
                    if await nothing_left():
                        return
                    continue  # what arrived meanwhile
                arrived.clear()
                drained.set()
                await arrived.wait()
        finally:
            if timer is not None:
                timer.cancel()
            watch.__exit__(None, None, None)
            drained.set()
            with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
                await sub.unsubscribe()

    async def get(self, stream: str, seq: int) -> Envelope:
        """The envelope stored at ``seq``."""
        with self._refusals.guard(stream, api=True), _translated(stream):
            try:
                raw = await self._js.get_msg(stream, seq)
            except nats.js.errors.NotFoundError as exc:
                if exc.err_code == MESSAGE_NOT_FOUND:
                    raise EventNotFoundError(stream, seq) from exc
                raise
        return _raw_envelope(stream, raw, seq)

    async def last_seq(self, stream: str) -> int:
        """The stream's last sequence (0 when empty)."""
        with self._refusals.guard(stream, api=True), _translated(stream):
            info = await self._js.stream_info(stream)
        return int(info.state.last_seq)

    async def last_subject_seq(self, subject: str) -> int:
        """The subject's (or filter's) last stream sequence (0 when there is none)."""
        last = await self.last(subject)
        return last.seq if last is not None else 0

    async def last(self, subject: str) -> Envelope | None:
        """The last message on a subject or subject filter, None when there is none."""
        stream = self._stream_of(subject)
        with self._refusals.guard(subject, api=True), _translated(subject):
            try:
                raw = await self._js.get_last_msg(stream, subject)
            except nats.js.errors.NotFoundError as exc:
                if exc.err_code == MESSAGE_NOT_FOUND:
                    return None
                raise
        return _raw_envelope(stream, raw)

    async def close(self) -> None:
        """Flush pending publishes and close the connection."""
        with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
            await self._nc.drain()


def _raw_message(subject: str, data: bytes, headers: Mapping[str, str], limit: int) -> _Message:
    """A raw message checked and cleaned as nats-py's ``publish`` would send it."""
    if not subject or _BAD_SUBJECT.search(subject):
        raise ValueError(f"invalid subject {subject!r}")
    cleaned: dict[str, str] = {}
    size = len(data) + 12
    for raw_name, value in headers.items():
        # The bridge stores batches of copies whose few header names recur: each
        # name is checked once, not once per message (half of this function's time).
        name = _HEADER_NAMES.get(raw_name)
        if name is None:
            name = _header_name(raw_name, subject)
        if not name:
            continue
        value = value.strip()
        if "\r" in value or "\n" in value:
            value = value.replace("\r", " ").replace("\n", " ")
        cleaned[name] = value
        size += len(name) + len(value) + 4
    if size > limit:
        raise PayloadTooLargeError(subject, size, limit)
    return subject, data, cleaned


def _header_name(raw: str, subject: str) -> str:
    """A header name as sent (stripped; empty: dropped), remembered once checked.

    Raises:
        ValueError: a name that is not an HTTP token.
    """
    name = raw.strip()
    if name and not _HEADER_NAME.fullmatch(name):
        raise ValueError(f"invalid header name {name!r} on {subject}")
    if len(_HEADER_NAMES) < _HEADER_NAMES_MAX:
        _HEADER_NAMES[raw] = name
    return name


def _condition(subject: str, headers: Mapping[str, str]) -> tuple[str, int] | None:
    """(checked subject, expected sequence) of a message's condition, if it has one."""
    expected = headers.get(Headers.EXPECTED_LAST_SUBJECT_SEQ)
    if expected is None or not expected.isdigit():
        return None
    return headers.get(Headers.EXPECTED_LAST_SUBJECT_SEQ_SUBJECT) or subject, int(expected)


def _event_id(headers: Mapping[str, str]) -> str:
    """The event's own id: ``Aqe-Event-Id`` on a bridged copy (whose ``Nats-Msg-Id`` is
    built from its origin coordinates), else ``Nats-Msg-Id``."""
    return headers.get(Headers.EVENT_ID) or headers.get(Headers.MSG_ID, "")


def _raw_envelope(stream: str, raw: RawStreamMsg, seq: int = 0) -> Envelope:
    headers = {str(k): str(v) for k, v in (raw.headers or {}).items()}
    return Envelope(
        stream=stream,
        seq=int(raw.seq or seq),
        subject=str(raw.subject),
        event_id=_event_id(headers),
        event_type=headers.get(Headers.EVENT_TYPE, ""),
        recorded_at_ns=int(raw.time.timestamp() * 1e9) if raw.time else 0,
        data=raw.data or b"",
        headers=headers,
    )


def _envelope(stream: str, msg: Msg, seq: int, ts: int) -> Envelope:
    headers = msg.headers or {}
    return Envelope(
        stream=stream,
        seq=seq,
        subject=msg.subject,
        event_id=_event_id(headers),
        event_type=headers.get(Headers.EVENT_TYPE, ""),
        recorded_at_ns=ts,
        data=msg.data,
        headers=headers,
    )


def _widen(first: int, last: int, lo: int, hi: int) -> tuple[int, int]:
    """Extend a (first, last) sequence range, 0 meaning empty, by another range."""
    if not lo:
        return first, last
    return (min(first, lo) if first else lo), max(last, hi)
