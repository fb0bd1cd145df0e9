"""Chain bookkeeping for both sides of a link: names, copies and two small state machines.

A *chain* is the events of one origin cluster's stream that fall into one subject
partition. Everything here is pure (no I/O, no clock) so it can be tested on its own:

* where a chain's ``BridgeApplied`` markers live and how a copy's headers are built;
* :func:`pack_frames`, how a run of a chain's data frames goes on the wire (``Data``
  or ``DataBatch`` frames of bounded size);
* :func:`plan_batch`, the target's decision for a batch of ``Data`` frames: which are
  duplicates, which extend the chain, and whether a frame broke it (a gap);
* :class:`SourceChain`, the source's view of one chain: what it sent, what the target
  acknowledged, the frames in flight, and how ``Resume``/``Ack``/``Gap`` move them.

It also names what replication needs from the event log (:class:`ReplicaLog`), which
:class:`~aqe.log.jetstream.JetStreamEventLog` provides.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import NamedTuple, Protocol

from aqe.bridge.frames import Data, DataBatch, Gap
from aqe.errors import ConfigError
from aqe.events import BridgeApplied, Envelope, Headers
from aqe.log.port import BatchResult
from aqe.log.streams import StreamSpec
from aqe.log.subjects import SUBJECT_PREFIX, encode_token

__all__ = [
    "MARKER_AGGREGATE",
    "ApplyPlan",
    "CopyError",
    "ReplicaLog",
    "SourceChain",
    "copy_headers",
    "copy_msg_id",
    "is_marker",
    "marker_filter",
    "marker_subject",
    "origin_of",
    "pack_frames",
    "plan_batch",
    "stream_domain",
]

MARKER_AGGREGATE = "bridge"
"""The aggregate token of marker subjects: ``aqe.<domain>.bridge.<chain>.applied``."""
_MARKER_ACTION = "applied"
_MARKER_TAG = BridgeApplied.type_tag()
# Headers a copy must not carry: conditions and batch framing belonged to the origin's
# append (they would fail or confuse the target's), the Msg-Id is rebuilt from the
# origin coordinates, and a rollup would purge the target's subject.
_DROPPED_PREFIXES = ("nats-expected-", "nats-batch-")
_DROPPED = frozenset({Headers.MSG_ID.lower(), "nats-rollup"})
_KEEP, _MSG_ID, _DROP = 0, 1, 2
_NAME_KINDS: dict[str, int] = {}
"""Header name -> what a copy does with it (a handful of names recur in every event)."""
_NAME_KINDS_MAX = 4096
PACK_EVENTS = 256
"""Most events :func:`pack_frames` puts in one ``DataBatch``."""
PACK_BYTES = 256 * 1024
"""About the most payload and header bytes :func:`pack_frames` puts in one ``DataBatch``."""


class ReplicaLog(Protocol):
    """What replication needs from an event log (``JetStreamEventLog`` has it all)."""

    @property
    def specs(self) -> tuple[StreamSpec, ...]:
        """The stream definitions."""
        ...

    @property
    def max_payload(self) -> int:
        """The largest message the server accepts."""
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
        """A stream's envelopes in order from ``after_seq + 1``."""
        ...

    async def last(self, subject: str) -> Envelope | None:
        """The last message on a subject, None when there is none."""
        ...

    async def last_seq(self, stream: str) -> int:
        """The stream's last sequence."""
        ...

    async def append_raw_batch(
        self, stream: str, messages: Sequence[tuple[str, bytes, Mapping[str, str]]]
    ) -> BatchResult:
        """One atomic batch of already-encoded messages."""
        ...


class CopyError(ValueError):
    """A data frame that cannot become a copy (its headers contradict its chain)."""


def stream_domain(spec: StreamSpec) -> str:
    """The ``<domain>`` of a stream whose subjects are ``aqe.<domain>.>``.

    Raises:
        ConfigError: the stream's first subject does not have that shape.
    """
    tokens = spec.subjects[0].split(".") if spec.subjects else []
    if len(tokens) != 3 or tokens[0] != SUBJECT_PREFIX or tokens[2] != ">":
        raise ConfigError(
            f"stream {spec.name}: the bridge needs subjects of the form "
            f"'{SUBJECT_PREFIX}.<domain>.>', got {list(spec.subjects)}"
        )
    return tokens[1]


def marker_subject(domain: str, key: str) -> str:
    """The subject of a chain's ``BridgeApplied`` markers in the domain's stream."""
    return f"{SUBJECT_PREFIX}.{domain}.{MARKER_AGGREGATE}.{encode_token(key)}.{_MARKER_ACTION}"


def marker_filter(domain: str) -> str:
    """The subject filter that matches every chain's markers in the domain's stream."""
    return f"{SUBJECT_PREFIX}.{domain}.{MARKER_AGGREGATE}.*.{_MARKER_ACTION}"


def is_marker(subject: str, event_type: str = "") -> bool:
    """Whether a message (its subject and ``Aqe-Event-Type``) is a bridge marker.

    Markers are never copied, and comparing two clusters' events leaves them out.
    """
    if event_type == _MARKER_TAG:
        return True
    tokens = subject.split(".")
    return (
        len(tokens) == 5
        and tokens[0] == SUBJECT_PREFIX
        and tokens[2] == MARKER_AGGREGATE
        and tokens[4] == _MARKER_ACTION
    )


def copy_msg_id(origin: str, stream: str, seq: int) -> str:
    """``<origin>:<stream>:<seq>``: the same on every cluster that stores a copy."""
    return f"{origin}:{stream}:{seq}"


def origin_of(env: Envelope, cluster: str) -> tuple[str, str, int]:
    """(origin cluster, origin stream, origin seq) of a stored message.

    A message without ``Aqe-Origin-Cluster`` is local: its origin is ``cluster`` and
    its own stream and sequence.

    Raises:
        CopyError: a copy whose ``Aqe-Origin-Seq`` is not a number.
    """
    origin = env.headers.get(Headers.ORIGIN_CLUSTER)
    if origin is None:
        return cluster, env.stream, env.seq
    raw_seq = env.headers.get(Headers.ORIGIN_SEQ, "")
    if not raw_seq.isdigit():
        raise CopyError(f"{env.stream} seq {env.seq}: bad {Headers.ORIGIN_SEQ} {raw_seq!r}")
    return origin, env.headers.get(Headers.ORIGIN_STREAM, env.stream), int(raw_seq)


def copy_headers(headers: Mapping[str, str], origin: str, stream: str, seq: int) -> dict[str, str]:
    """The headers a bridged copy of an event is stored with.

    Everything the origin stored is kept except conditions, batch framing and the
    Msg-Id, which becomes :func:`copy_msg_id`; the event's own id moves to
    ``Aqe-Event-Id``. A copy of a copy (a relay) keeps its origin headers as they are.

    Raises:
        CopyError: the frame's origin headers name another origin, stream or sequence
            than the chain it travels in.
    """
    out: dict[str, str] = {}
    event_id = ""
    for name, value in headers.items():
        kind = _NAME_KINDS.get(name)
        if kind is None:
            kind = _name_kind(name)
        if kind == _KEEP:
            out[name] = value
        elif kind == _MSG_ID:
            event_id = value
    event_id = headers.get(Headers.EVENT_ID) or event_id
    if event_id:
        out[Headers.EVENT_ID] = event_id
    claimed = headers.get(Headers.ORIGIN_CLUSTER)
    if claimed is None:
        out[Headers.ORIGIN_CLUSTER] = origin
        out[Headers.ORIGIN_STREAM] = stream
        out[Headers.ORIGIN_SEQ] = str(seq)
    else:
        found = (
            claimed,
            headers.get(Headers.ORIGIN_STREAM, ""),
            headers.get(Headers.ORIGIN_SEQ, ""),
        )
        if found != (origin, stream, str(seq)):
            raise CopyError(
                f"frame seq {seq} of chain {origin}/{stream} carries origin headers {found}"
            )
    out[Headers.MSG_ID] = copy_msg_id(origin, stream, seq)
    return out


def _name_kind(name: str) -> int:
    lower = name.lower()
    if lower == Headers.MSG_ID.lower():
        kind = _MSG_ID
    elif lower in _DROPPED or lower.startswith(_DROPPED_PREFIXES):
        kind = _DROP
    else:
        kind = _KEEP
    if len(_NAME_KINDS) < _NAME_KINDS_MAX:
        _NAME_KINDS[name] = kind
    return kind


def pack_frames(
    frames: Sequence[Data], max_events: int = PACK_EVENTS, max_bytes: int = PACK_BYTES
) -> list[Data | DataBatch]:
    """The wire frames for a run of a chain's data frames, in order.

    A lone frame goes as itself; runs go as ``DataBatch`` frames of at most
    ``max_events`` events and about ``max_bytes`` of payload and headers (an event
    bigger than that travels alone).
    """
    if len(frames) == 1:
        return [frames[0]]
    out: list[Data | DataBatch] = []
    run: list[Data] = []
    size = 0
    for frame in frames:
        cost = _frame_bytes(frame)
        if run and (len(run) >= max_events or size + cost > max_bytes):
            out.append(run[0] if len(run) == 1 else DataBatch(events=tuple(run)))
            run, size = [], 0
        run.append(frame)
        size += cost
    if run:
        out.append(run[0] if len(run) == 1 else DataBatch(events=tuple(run)))
    return out


def _frame_bytes(frame: Data) -> int:
    """About what a data frame takes on the wire (payload, subject, headers, framing)."""
    headers = frame.headers
    names, values = sum(map(len, headers)), sum(map(len, headers.values()))
    return len(frame.data) + len(frame.subject) + names + values + 4 * len(headers) + 48


class ApplyPlan(NamedTuple):
    """What the target does with one batch of a chain's data frames."""

    accepted: list[Data]
    """Frames that extend the chain, in order: stored as copies with one marker."""
    duplicates: int
    """Frames at or below the applied sequence (already stored): skipped."""
    gap: tuple[int, int] | None
    """(prev, seq) of the first frame that broke the chain, if a gap began here."""
    in_gap: bool
    """Whether the chain is still waiting for a frame that follows it."""
    cursor: int
    """The applied sequence once ``accepted`` is stored."""


def plan_batch(frames: Sequence[Data], applied: int, in_gap: bool) -> ApplyPlan:
    """Split a batch of data frames for a chain applied up to ``applied``.

    A frame at or below the cursor is a duplicate. A frame whose ``prev`` is not the
    cursor is dropped; the first such frame of a gap is reported (once per gap, so a
    source that already rewound is not told again by the stale frames still on the
    way). A frame whose ``prev`` is the cursor extends the chain and ends any gap.
    """
    cursor = applied
    accepted: list[Data] = []
    duplicates = 0
    gap: tuple[int, int] | None = None
    for frame in frames:
        if frame.seq <= cursor:
            duplicates += 1
        elif frame.prev != cursor:
            if not in_gap:
                gap = (frame.prev, frame.seq)
            in_gap = True
        else:
            in_gap = False
            accepted.append(frame)
            cursor = frame.seq
    return ApplyPlan(accepted, duplicates, gap, in_gap, cursor)


class SourceChain:
    """The source's view of one chain on one link.

    ``sent`` is the origin sequence of the last frame sent (the next frame's ``prev``),
    ``acked`` what the target confirmed stored; the frames between them stay in
    ``in_flight`` until acknowledged, so a new connection can resend them at once.

    ``floor`` is a stream sequence at or above ``sent`` up to which the chain has no
    unsent event (the reader went past it), so a reader restarted for this chain can
    start there rather than at ``sent``: a chain whose subjects are rare would
    otherwise send the reader back over much of the stream. ``generation`` changes
    whenever the chain is reset, which tells a reader run that its progress no longer
    raises this chain's floor.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        self.sent = 0
        self.acked = 0
        self.floor = 0
        self.generation = 0
        self.high_water = 0
        self.in_flight: deque[Data] = deque()
        self.frames_sent = 0
        self.events_acked = 0
        self.rewinds = 0
        self._expect_gap: int | None = None

    def push(self, env: Envelope, seq: int | None = None) -> Data:
        """The data frame for the chain's next event, recorded as sent and in flight.

        ``seq`` is the event's origin sequence (its stream sequence by default).
        """
        origin_seq = env.seq if seq is None else seq
        frame = Data(
            seq=origin_seq,
            prev=self.sent,
            subject=env.subject,
            data=env.data,
            headers=dict(env.headers),
            recorded_at_ns=env.recorded_at_ns,
        )
        self.sent = origin_seq
        self.floor = max(self.floor, env.seq)
        self.in_flight.append(frame)
        self.frames_sent += 1
        return frame

    def _retire(self, applied: int) -> int:
        retired = 0
        while self.in_flight and self.in_flight[0].seq <= applied:
            self.in_flight.popleft()
            retired += 1
        self.events_acked += retired
        return retired

    def _drop_in_flight(self) -> int:
        dropped = len(self.in_flight)
        self.in_flight.clear()
        return dropped

    def on_ack(self, applied: int) -> int:
        """The target stored the chain up to ``applied``; returns frames retired."""
        retired = self._retire(applied)
        self.acked = max(self.acked, applied)
        if applied > self.sent:  # another link applied more than this one sent
            self.sent = applied
            self.floor = max(self.floor, applied)
        if self._expect_gap is not None and applied > self._expect_gap:
            self._expect_gap = None
        return retired

    def on_resume(self, applied: int) -> int:
        """A (re)opened stream's ``Resume``; returns frames retired or dropped.

        Frames resent before the answer (0-RTT) that still continue the chain from
        ``applied`` stay in flight. If they do not (the target holds less than was
        acknowledged, or more than was sent), they are dropped and ``sent`` goes back
        to ``applied`` so the reader resends from there; the target answers those
        early frames with one ``Gap``, which is then expected and ignored.
        """
        released = self._retire(applied)
        self.acked = applied
        self._expect_gap = None
        self.generation += 1
        if self.in_flight and self.in_flight[0].prev != applied:
            released += self._drop_in_flight()
            self._rewind(applied)
            self._expect_gap = applied
        elif not self.in_flight:
            if applied < self.sent:  # the target holds less than it acknowledged
                self._rewind(applied)
            else:
                self.sent = applied
                self.floor = max(self.floor, applied)
        return released

    def _rewind(self, seq: int) -> None:
        self.sent = self.floor = seq
        self.generation += 1
        self.rewinds += 1

    def down(self) -> None:
        """The chain's stream is gone: its floor stops following the reader."""
        self.generation += 1

    def advance(self, scanned: int, generation: int) -> None:
        """A reader run that began at ``generation`` went through ``scanned``."""
        if generation == self.generation:
            self.floor = max(self.floor, scanned)

    def on_gap(self, gap: Gap) -> tuple[int, bool]:
        """The target could not follow the chain: (frames released, rewind needed).

        Everything after ``gap.applied_seq`` is dropped from flight and ``sent`` goes
        back to it; the caller re-reads the stream from there.
        """
        if self._expect_gap is not None and gap.applied_seq == self._expect_gap:
            self._expect_gap = None
            return 0, False
        released = self._retire(gap.applied_seq)
        self.acked = max(self.acked, gap.applied_seq)
        released += self._drop_in_flight()
        self._rewind(gap.applied_seq)
        return released, True

    def oldest_unacked_ns(self) -> int:
        """When the oldest un-acknowledged event was stored at the origin (0: none)."""
        return self.in_flight[0].recorded_at_ns if self.in_flight else 0
