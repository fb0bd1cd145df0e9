"""Dead letters: events a projection could not decode or apply, parked, never dropped.

A parked message is stored on ``aqe.dlq.<projection>.<stream>`` (stream ``AQE_DLQ``)
with headers that say where it came from and why (see :class:`aqe.events.Headers`):
the original stream, sequence and subject, the reason, the original payload's size
and SHA-256 digest, and how much of it the dead letter kept. Its message id is
derived from projection, stream and sequence, so re-parking the same event after a
crash is deduplicated by the server.

A fold can be stuck by nothing, so parking never sends what the server must refuse:

- The copy is bounded. A message near the server's ``max_payload`` no longer fits
  once dead-letter headers are added (the server would close the connection and the
  park would time out, every run, forever); such a payload is cut to what fits
  (``Aqe-Dlq-Copy: truncated``). The original's own headers are copied within a
  budget, and never its ``Nats-*`` headers, which the server would act on (an
  expected stream, a rollup, a TTL) and could refuse.
- A copy the server refuses for good (a stream ``max_msg_size``, a header limit) is
  replaced by a reference-only dead letter: no payload, only where the original is
  (``Aqe-Dlq-Copy: reference``).
- When the dead-letter stream cannot take even that (it is missing, no stream takes
  the subject, or the user may not publish to ``aqe.dlq.>``: the server's
  "Permissions Violation" reaches the park at once through the same refusal hook as
  the event log's, :mod:`aqe.log._refusals`), :meth:`JetStreamDeadLetters.park`
  returns a letter with
  ``copy == "none"`` and the runner keeps the reference in the projection's snapshot.
  Nothing is lost: the original stays in its stream at that sequence.
- Only an outage (timeouts, a leader election) stops the fold; the park is retried
  for a while with the same message id, then the run ends and resumes at the same
  event next time.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Literal, Protocol

import msgspec

from aqe.errors import LogError, LogUnavailableError, PayloadTooLargeError, PermissionDeniedError
from aqe.events import Envelope, Headers
from aqe.log.retry import while_unavailable
from aqe.log.subjects import SUBJECT_PREFIX, encode_token

if TYPE_CHECKING:
    from nats.aio.client import Client

__all__ = [
    "DeadLetter",
    "DeadLetterSink",
    "JetStreamDeadLetters",
    "MemoryDeadLetters",
    "bounded_letter",
    "dead_letter_subject",
]

Copy = Literal["full", "truncated", "reference", "none"]
"""How much of the original a dead letter kept: all of it, a prefix of its payload,
only where it is (no payload), or nothing on the dead-letter stream at all."""

_MAX_REASON = 1000
_COPIED_HEADERS_MAX = 4096
"""Bytes of the original's own headers copied onto its dead letter (JetStream refuses
headers over 64 KiB, and a poison message may carry nearly that much)."""
_SLACK = 64
"""Bytes kept free below ``max_payload``, so a copy never lands exactly on the limit."""
_HEADER_BLOCK = len(b"NATS/1.0\r\n") + len(b"\r\n")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """One parked message, and how much of it the dead letter kept."""

    projection: str
    stream: str
    seq: int
    subject: str
    reason: str
    data: bytes
    """The payload as kept: whole, a prefix (``truncated``) or empty."""
    size: int = 0
    """The original payload's size in bytes."""
    digest: str = ""
    """``sha256:<hex>`` of the original payload."""
    copy: Copy = "full"
    error: str = ""
    """Why the full copy, or every copy, was refused (empty when it was not)."""


class DeadLetterSink(Protocol):
    """Where the runner parks what it cannot fold."""

    async def park(self, projection: str, envelope: Envelope, reason: str) -> DeadLetter:
        """Keep the message with the reason; idempotent per (projection, seq).

        Returns what was kept; ``copy == "none"`` when the sink could keep nothing and
        retrying would not help (the runner then keeps the reference itself).

        Raises:
            LogUnavailableError: the sink is unreachable for now; parking again later
                may succeed.
        """
        ...


def dead_letter_subject(projection: str, stream: str) -> str:
    """``aqe.dlq.<projection>.<stream>``: one subject per projection and stream."""
    return f"{SUBJECT_PREFIX}.dlq.{encode_token(projection)}.{encode_token(stream)}"


def _dead_letter_id(projection: str, envelope: Envelope) -> str:
    return f"dlq:{projection}:{envelope.stream}:{envelope.seq}"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _clean(value: str) -> str:
    # What nats-py would send (stripped, no CR/LF), so the measured size is the sent one.
    return " ".join(value.split())


def _header_size(name: str, value: str) -> int:
    return len(name.encode()) + len(value.encode()) + 4  # "name: value\r\n"


def _letter(
    projection: str, envelope: Envelope, reason: str, data: bytes, copy: Copy, error: str = ""
) -> DeadLetter:
    return DeadLetter(
        projection=projection,
        stream=envelope.stream,
        seq=envelope.seq,
        subject=envelope.subject,
        reason=reason,
        data=data,
        size=len(envelope.data),
        digest=_digest(envelope.data),
        copy=copy,
        error=error,
    )


def bounded_letter(
    projection: str, envelope: Envelope, reason: str, limit: int, *, reference_only: bool = False
) -> tuple[dict[str, str], bytes, DeadLetter]:
    """The headers and payload of a dead letter that fits in ``limit`` bytes.

    ``limit`` is the server's ``max_payload``, which counts headers and payload
    together. The payload is kept whole when it fits, else cut to what fits; with
    ``reference_only``, or when the headers leave no room, it is left out (and so are
    the original's own headers, and as much of the reason as must go).

    Returns:
        The headers to send, the payload to send, and the letter describing both.

    Raises:
        PayloadTooLargeError: not even a reference fits (a ``limit`` of a few hundred
            bytes, or a subject near the server's 4 KiB control line).
    """
    subject = dead_letter_subject(projection, envelope.stream)
    base: dict[str, str] = {
        Headers.MSG_ID: _dead_letter_id(projection, envelope),
        Headers.DLQ_PROJECTION: _clean(projection),
        Headers.DLQ_STREAM: _clean(envelope.stream),
        Headers.DLQ_SEQ: str(envelope.seq),
        Headers.DLQ_SUBJECT: _clean(envelope.subject),
        Headers.DLQ_REASON: _clean(reason)[:_MAX_REASON],
        Headers.DLQ_SIZE: str(len(envelope.data)),
        Headers.DLQ_DIGEST: _digest(envelope.data),
        Headers.DLQ_COPY: "reference",  # as long as any value set below
    }
    if not reference_only:
        headers = dict(base)
        _copy_own_headers(envelope.headers, headers)
        room = limit - _headers_size(headers) - _SLACK
        if room > 0:
            copy: Copy = "full" if len(envelope.data) <= room else "truncated"
            data = envelope.data[:room]
            headers[Headers.DLQ_COPY] = copy
            return headers, data, _letter(projection, envelope, reason, data, copy)
    over = _headers_size(base) + _SLACK - limit
    if over > 0:
        kept = base[Headers.DLQ_REASON].encode()
        base[Headers.DLQ_REASON] = kept[: max(0, len(kept) - over)].decode(errors="ignore")
        size = _headers_size(base) + _SLACK
        if size > limit:
            raise PayloadTooLargeError(subject, size, limit)
    return base, b"", _letter(projection, envelope, reason, b"", "reference")


def _headers_size(headers: Mapping[str, str]) -> int:
    return _HEADER_BLOCK + sum(_header_size(k, v) for k, v in headers.items())


def _copy_own_headers(original: Mapping[str, str], out: dict[str, str]) -> None:
    """Copy the original's headers that are safe to resend, within a byte budget.

    ``Nats-*`` headers are instructions to the server (message id, expected stream or
    sequence, rollup, TTL, batch): resent on a dead letter they would be acted on, and
    may be refused. The original message id is kept as ``Aqe-Dlq-Msg-Id``.
    """
    budget = _COPIED_HEADERS_MAX
    msg_id = original.get(Headers.MSG_ID)
    candidates: list[tuple[str, str]] = []
    if msg_id:
        candidates.append((Headers.DLQ_MSG_ID, msg_id))
    candidates += [
        (name, value)
        for name, value in original.items()
        if not name.lower().startswith(("nats-", "aqe-dlq-"))
    ]
    for name, value in candidates:
        clean_name, clean_value = name.strip(), _clean(value)
        if not _TOKEN.fullmatch(clean_name) or clean_name in out:
            continue
        cost = _header_size(clean_name, clean_value)
        if cost > budget:
            continue
        out[clean_name] = clean_value
        budget -= cost


class MemoryDeadLetters:
    """Dead letters kept in a list (tests, verify runs)."""

    def __init__(self) -> None:
        self.parked: list[DeadLetter] = []

    async def park(self, projection: str, envelope: Envelope, reason: str) -> DeadLetter:
        """Keep the whole message unless it is already parked."""
        for letter in self.parked:
            if (letter.projection, letter.stream, letter.seq) == (
                projection,
                envelope.stream,
                envelope.seq,
            ):
                return letter
        letter = _letter(projection, envelope, reason, envelope.data, "full")
        self.parked.append(letter)
        return letter


class JetStreamDeadLetters:
    """Parks messages on ``aqe.dlq.<projection>.<stream>`` (stream AQE_DLQ).

    Args:
        nc: A connected nats-py client.
        on_park: Called with each letter once it is kept (or found unkeepable).
        unavailable_s: How long an outage is ridden out before ``park`` gives up.
    """

    def __init__(
        self,
        nc: Client,
        on_park: Callable[[DeadLetter], None] | None = None,
        *,
        unavailable_s: float = 15.0,
    ) -> None:
        from aqe.log._refusals import refusals_for

        self._nc = nc
        self._js = nc.jetstream()
        self._on_park = on_park
        self._unavailable_s = unavailable_s
        # The same hook the event log uses: a "Permissions Violation" on the dead-letter
        # subject is a refusal at once, not a publish left to time out as an outage.
        self._refusals = refusals_for(nc)

    async def park(self, projection: str, envelope: Envelope, reason: str) -> DeadLetter:
        """Store a bounded copy, else a reference, else report that nothing was kept.

        Raises:
            LogUnavailableError: the dead-letter stream exists but did not answer
                within ``unavailable_s`` (an outage: the fold stops and resumes here).
        """
        subject = dead_letter_subject(projection, envelope.stream)
        limit = int(self._nc.max_payload)
        refusals: list[str] = []
        letter: DeadLetter | None = None
        for reference_only in (False, True):
            try:
                headers, data, attempt = bounded_letter(
                    projection, envelope, reason, limit, reference_only=reference_only
                )
            except PayloadTooLargeError as exc:
                refusals.append(str(exc))
                break
            refused, hopeless = await self._publish(subject, headers, data)
            if not refused:
                letter = msgspec.structs.replace(attempt, error="; ".join(refusals))
                break
            refusals.append(refused)
            if hopeless or attempt.copy == "reference":
                break  # a reference was refused already, or would be
        if letter is None:
            letter = _letter(projection, envelope, reason, b"", "none", "; ".join(refusals))
        if self._on_park is not None:
            self._on_park(letter)
        return letter

    async def _publish(
        self, subject: str, headers: dict[str, str], data: bytes
    ) -> tuple[str, bool]:
        """Publish one dead letter: ("", False) when stored, else (why not, hopeless).

        Hopeless: no copy at all can be stored there (no stream takes the subject, or
        the user may not publish to it).
        """
        from aqe.log.jetstream import _translated

        async def publish() -> None:
            with (
                self._refusals.guard(subject, subjects=lambda: (subject,)),
                _translated(subject),
            ):
                await self._js.publish(subject, data, headers=headers)

        try:
            try:
                await publish()
            except LogUnavailableError:
                if not await self._stream_takes(subject):
                    return f"no stream takes {subject}", True
                await while_unavailable(publish, within_s=self._unavailable_s)
        except PermissionDeniedError as exc:  # the subject is refused, whatever is sent
            return str(exc), True
        except LogUnavailableError:
            raise
        except (LogError, ValueError) as exc:  # refused: sending the same again cannot help
            return str(exc), False
        return "", False

    async def _stream_takes(self, subject: str) -> bool:
        """Whether a stream on the server stores ``subject`` (True when it cannot tell)."""
        from aqe.log.jetstream import _translated

        try:
            with self._refusals.guard(subject, api=True), _translated(subject):
                reply = await self._nc.request(
                    "$JS.API.STREAM.NAMES", msgspec.json.encode({"subject": subject}), timeout=5
                )
            answer = msgspec.json.decode(reply.data)
        except (LogError, msgspec.DecodeError):
            return True  # cannot tell: treat it as an outage and let the retries decide
        if not isinstance(answer, dict) or "error" in answer:
            return True
        return bool(answer.get("streams"))
