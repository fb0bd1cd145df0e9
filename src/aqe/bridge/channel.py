"""What replication needs from a transport: streams of frames between two clusters.

:mod:`aqe.bridge.quic` implements these over aioquic (mutual TLS, 0-RTT, keepalives).
:func:`memory_pair` implements a stream over two asyncio queues, for unit tests of the
replication logic that need no network.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from aqe.bridge.frames import MAX_FRAME, Error, Frame, encode_frame
from aqe.errors import LinkDownError, StreamClosedError

__all__ = [
    "Connector",
    "FrameStream",
    "LinkDownError",
    "StreamClosedError",
    "StreamHandler",
    "memory_pair",
]


class FrameStream(Protocol):
    """One bidirectional stream of frames with an authenticated peer."""

    @property
    def peer(self) -> str:
        """The peer cluster's name, taken from its verified certificate."""
        ...

    async def send(self, frame: Frame) -> None:
        """Queue a frame; waits while the stream's send budget is used up (backpressure).

        Raises:
            StreamClosedError: the stream or the link is gone.
        """
        ...

    async def recv(self) -> Frame:
        """The next frame from the peer.

        Raises:
            StreamClosedError: the peer finished or reset the stream, sent a malformed frame
                (the stream is then closed with an ``Error`` frame), or the link dropped.
        """
        ...

    async def close(self, error: Error | None = None) -> None:
        """Send ``error`` (if any), then finish the stream. Idempotent."""
        ...


StreamHandler = Callable[[FrameStream], Awaitable[None]]
"""The server side's callback: one call (in its own task) per stream a peer opens."""


class Connector(Protocol):
    """The dialling side of a link: one connection to one peer at a time."""

    async def connect(self) -> None:
        """Open a connection (0-RTT when a session ticket is at hand).

        Raises:
            LinkDownError: the peer could not be reached or was refused.
        """
        ...

    async def open_stream(self, *, early: bool = False) -> FrameStream:
        """A new stream on the current connection.

        ``early=True`` lets frames go out as 0-RTT data before the handshake completes
        (only for idempotent data frames); otherwise sending waits for the handshake.

        Raises:
            LinkDownError: not connected.
        """
        ...

    async def wait_closed(self) -> None:
        """Return when the current connection is gone (idle timeout, peer close, error)."""
        ...

    async def close(self) -> None:
        """Close the connection."""
        ...


class _MemoryStream:
    """One end of an in-memory stream; frames are encoded and decoded as on the wire."""

    def __init__(
        self,
        peer: str,
        inbox: asyncio.Queue[bytes | None],
        outbox: asyncio.Queue[bytes | None],
    ) -> None:
        self._peer = peer
        self._inbox = inbox
        self._outbox = outbox
        self._closed = False
        self._peer_closed = False

    @property
    def peer(self) -> str:
        return self._peer

    async def send(self, frame: Frame) -> None:
        if self._closed or self._peer_closed:
            raise StreamClosedError("stream closed")
        await self._outbox.put(encode_frame(frame))

    async def recv(self) -> Frame:
        from aqe.bridge.frames import FrameDecoder

        if self._peer_closed:
            raise StreamClosedError("peer finished the stream")
        item = await self._inbox.get()
        if item is None:
            self._peer_closed = True
            raise StreamClosedError("peer finished the stream")
        [frame] = FrameDecoder(MAX_FRAME).feed(item)
        return frame

    async def close(self, error: Error | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        if error is not None:
            await self._outbox.put(encode_frame(error))
        await self._outbox.put(None)


def memory_pair(a: str, b: str, *, budget: int = 256) -> tuple[FrameStream, FrameStream]:
    """Two connected stream ends: the first's peer is ``b``, the second's is ``a``.

    ``budget`` frames may be in flight one way before ``send`` waits.
    """
    a_to_b: asyncio.Queue[bytes | None] = asyncio.Queue(budget)
    b_to_a: asyncio.Queue[bytes | None] = asyncio.Queue(budget)
    return _MemoryStream(b, b_to_a, a_to_b), _MemoryStream(a, a_to_b, b_to_a)
