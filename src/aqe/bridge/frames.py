"""The wire protocol of a bridge link: frames on QUIC streams.

A link carries events from a *source* cluster to a *target* cluster. Each QUIC stream
carries one *chain*: the events of one origin cluster's stream that fall into one
subject partition (``crc32(subject) % partitions``), so a slow subject holds up only
its own partition. Events of a chain are sent in origin order; each carries its origin
sequence and the chain's previous origin sequence, so the target detects a gap or a
reorder instead of storing it.

A data stream goes::

    source -> target   Open             (who: the chain and the sending cluster)
    target -> source   Resume           (the chain's last applied origin sequence,
                                         read back from the target's own stream)
    source -> target   Data | DataBatch, ...  (from the resume point on)
    target -> source   Ack | Gap        (applied up to N | expected prev N: resend)
    either             Error            (then the stream is closed; the link stays up)

The target refuses an ``Open`` whose ``origin`` is not the peer's own cluster (the name
in its verified certificate) unless it trusts that peer as a relay
(:data:`UNTRUSTED_RELAY`).

``DataBatch`` carries consecutive ``Data`` frames of the chain in one frame (what the
source had ready at once: fewer frames to encode, packetise and decode per event); the
target handles its events exactly as the same ``Data`` frames sent one by one. On the
wire a batch whose events take :data:`PACK_AT` bytes or more travels compressed: its
``deflated`` field holds the msgpack array of its ``Data`` frames, zlib-deflated.
Events of one chain repeat field names, header names and much of their payloads, so
this takes a fifth to a tenth of the bytes, and as many fewer QUIC packets to build,
encrypt and acknowledge. :func:`encode_frame` compresses and :class:`FrameDecoder`
expands, so both ends only ever see ``DataBatch(events=...)``.

A source reconnecting with 0-RTT may send ``Open`` and data frames before it has the
``Resume`` answer, from the last ``Ack`` it saw: data frames are idempotent (the
target's chain condition and ``Nats-Msg-Id`` drop what it already has, and a frame
whose ``prev`` does not match gets a ``Gap``).

A control stream (``Hello`` first) carries anti-entropy gossip: ``Marks`` frames, both
ways, with the high-water mark of every chain the sending cluster holds copies of
(chains of other origins; nobody relays a chain to its own origin, so a cluster's own
chains are left out). Control frames are never sent as 0-RTT data.

Framing: each frame is a 4-byte big-endian length, then the frame as msgpack (a tagged
union on the ``k`` field). A frame that does not decode, or is larger than
:data:`MAX_FRAME` (compressed or expanded), is malformed: the receiver answers
``Error`` and closes that stream.
"""

from __future__ import annotations

import zlib

import msgspec

from aqe.errors import FrameError

__all__ = [
    "MAX_FRAME",
    "PACK_AT",
    "UNTRUSTED_RELAY",
    "Ack",
    "Data",
    "DataBatch",
    "Error",
    "Frame",
    "FrameDecoder",
    "Gap",
    "Hello",
    "Marks",
    "Open",
    "Resume",
    "chain_key",
    "encode_frame",
    "partition_of",
]

MAX_FRAME = 4 * 1024 * 1024
"""The largest frame accepted (a NATS message is at most 1 MiB by default, plus headers)."""
PACK_AT = 2048
"""Encoded events of a ``DataBatch`` from which it is sent compressed."""
UNTRUSTED_RELAY = "untrusted-relay"
"""``Error`` code: an ``Open`` for another origin's chain from a peer not trusted to relay."""
_PACK_LEVEL = 1
"""zlib's fastest level: about 1 us an event, and within a fifth of its best ratio."""


class _Frame(msgspec.Struct, frozen=True, tag_field="k", array_like=False):
    pass


class Open(_Frame, frozen=True, tag="open"):
    """Source -> target, first on a data stream: the chain this stream carries."""

    origin: str
    """The cluster the chain's events were first stored in."""
    stream: str
    partition: int
    partitions: int
    source: str
    """The cluster sending (the origin, or a relay repairing a gap)."""


class Resume(_Frame, frozen=True, tag="resume"):
    """Target -> source: the chain is applied up to origin sequence ``applied_seq``."""

    applied_seq: int


class Data(_Frame, frozen=True, tag="data"):
    """One event of the chain, as stored at the origin."""

    seq: int
    """Origin stream sequence."""
    prev: int
    """The chain's previous origin sequence (0 for the chain's first event)."""
    subject: str
    data: bytes
    headers: dict[str, str] = {}
    recorded_at_ns: int = 0
    """When the origin stored it (for lag in ms)."""


class DataBatch(_Frame, frozen=True, tag="batch"):
    """Consecutive events of the chain, each as its ``Data`` frame, in origin order."""

    events: tuple[Data, ...] = ()
    deflated: bytes = b""
    """On the wire only, instead of ``events``: their msgpack array, zlib-deflated."""


class Ack(_Frame, frozen=True, tag="ack"):
    """Target -> source: the chain is applied (stored and acknowledged) up to ``applied_seq``."""

    applied_seq: int


class Gap(_Frame, frozen=True, tag="gap"):
    """Target -> source: a frame did not follow the chain; resend after ``applied_seq``."""

    applied_seq: int
    got_prev: int
    got_seq: int


class Error(_Frame, frozen=True, tag="error"):
    """Either side, before closing the stream: why."""

    code: str
    message: str


class Hello(_Frame, frozen=True, tag="hello"):
    """First frame on a control stream: the sending cluster's name."""

    cluster: str


class Marks(_Frame, frozen=True, tag="marks"):
    """Anti-entropy gossip: chain key -> highest origin sequence ``cluster`` holds copies of."""

    cluster: str
    marks: dict[str, int]


Frame = Open | Resume | Data | DataBatch | Ack | Gap | Error | Hello | Marks

_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(Frame)
_EVENTS_DECODER = msgspec.msgpack.Decoder(tuple[Data, ...])


def encode_frame(frame: Frame) -> bytes:
    """The frame with its 4-byte length prefix (a large ``DataBatch`` compressed).

    Raises:
        FrameError: the frame (a batch: its events, expanded) exceeds :data:`MAX_FRAME`.
    """
    if isinstance(frame, DataBatch) and not frame.deflated:
        events = _ENCODER.encode(frame.events)
        if len(events) > MAX_FRAME:
            raise FrameError(
                f"batch of {len(events)} bytes exceeds the {MAX_FRAME}-byte frame limit"
            )
        if len(events) >= PACK_AT:
            frame = DataBatch(deflated=zlib.compress(events, _PACK_LEVEL))
    body = _ENCODER.encode(frame)
    if len(body) > MAX_FRAME:
        raise FrameError(f"frame of {len(body)} bytes exceeds the {MAX_FRAME}-byte limit")
    return len(body).to_bytes(4, "big") + body


class FrameDecoder:
    """Reassembles frames from the byte chunks a QUIC stream delivers."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self._max = max_frame

    def feed(self, chunk: bytes) -> list[Frame]:
        """The complete frames in the bytes so far.

        Raises:
            FrameError: a length over the limit or a body that is not a frame.
        """
        self._buf.extend(chunk)
        frames: list[Frame] = []
        while len(self._buf) >= 4:
            size = int.from_bytes(self._buf[:4], "big")
            if size > self._max:
                raise FrameError(f"frame length {size} exceeds the {self._max}-byte limit")
            if len(self._buf) < 4 + size:
                break
            body = bytes(self._buf[4 : 4 + size])
            del self._buf[: 4 + size]
            try:
                frame = _DECODER.decode(body)
                if isinstance(frame, DataBatch) and frame.deflated:
                    frame = DataBatch(events=self._expand(frame))
            except msgspec.DecodeError as exc:  # ValidationError is a subclass
                raise FrameError(f"malformed frame: {exc}") from exc
            frames.append(frame)
        return frames

    def _expand(self, batch: DataBatch) -> tuple[Data, ...]:
        """The events of a compressed batch, expanded to at most the frame limit."""
        if batch.events:
            raise FrameError("malformed frame: a batch with both events and deflated")
        inflater = zlib.decompressobj()
        try:
            events = inflater.decompress(batch.deflated, self._max)
        except zlib.error as exc:
            raise FrameError(f"malformed frame: batch does not inflate: {exc}") from exc
        if inflater.unconsumed_tail:
            raise FrameError(f"batch expands past the {self._max}-byte limit")
        if not inflater.eof:
            raise FrameError("malformed frame: batch is cut short")
        return _EVENTS_DECODER.decode(events)

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame still buffered."""
        return len(self._buf)


def partition_of(subject: str, partitions: int) -> int:
    """The partition a subject's events travel in (stable across processes and hosts)."""
    return zlib.crc32(subject.encode()) % partitions


def chain_key(origin: str, stream: str, partition: int) -> str:
    """``<origin>/<stream>/<partition>``: the name of a chain in marks and markers."""
    return f"{origin}/{stream}/{partition}"
