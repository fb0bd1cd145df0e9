"""One QUIC connection driven on asyncio, and the frame streams on it (private).

:class:`Link` owns an aioquic ``QuicConnection``: it feeds it datagrams and timer ticks,
sends what it wants sent, and turns its events into :class:`QuicFrameStream` state.
It does not own a socket; the server (one socket, many links) and the connector (one
socket, one link) hand it a ``send`` function and pass datagrams in.

A link is *gone* as soon as aioquic starts closing (idle timeout, CONNECTION_CLOSE
from the peer, a handshake failure, or :meth:`Link.close`): streams fail at once
rather than after the RFC's draining period, which aioquic still runs to absorb late
packets before it reports the connection terminated.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable

from aioquic.quic import events
from aioquic.quic.connection import (
    NetworkAddress,
    QuicConnection,
    stream_is_client_initiated,
    stream_is_unidirectional,
)

from aqe.bridge.frames import MAX_FRAME, Error, Frame, FrameDecoder, encode_frame
from aqe.errors import FrameError, StreamClosedError

__all__ = ["SEND_BUFFER", "Link", "QuicFrameStream"]

logger = logging.getLogger("aqe.bridge.quic")

SEND_BUFFER = 1024 * 1024
"""Unsent bytes a stream may hold before ``send`` waits (backpressure)."""

_APP_ERROR_MALFORMED = 0x101  # STOP_SENDING / RESET_STREAM code: malformed frame
_APP_ERROR_UNWANTED = 0x102  # a stream this side does not accept
_APP_ERROR_DONE = 0x103  # the handler finished; stop sending to it
_RETIRED_PRUNE_AT = 256

Closed = tuple[str, str]
"""Why a direction of a stream ended: (reason, code)."""


class QuicFrameStream:
    """A :class:`aqe.bridge.channel.FrameStream` on one bidirectional QUIC stream."""

    def __init__(self, link: Link, stream_id: int, *, early: bool) -> None:
        self._link = link
        self.stream_id = stream_id
        self._early = early
        self._decoder = FrameDecoder(MAX_FRAME)
        self._inbox: asyncio.Queue[Frame | None] = asyncio.Queue()
        self._recv_end: Closed | None = None
        self._send_end: Closed | None = None
        self._closed = False
        self._written = 0
        self._drained = asyncio.Event()

    def __repr__(self) -> str:
        return f"<QuicFrameStream {self.stream_id} peer={self._link.peer!r}>"

    # -- FrameStream ------------------------------------------------------------------

    @property
    def peer(self) -> str:
        """The peer cluster's name, from its verified certificate (or resumed ticket)."""
        return self._link.peer or ""

    async def send(self, frame: Frame) -> None:
        """Queue a frame; waits while more than :data:`SEND_BUFFER` bytes are unsent.

        Raises:
            StreamClosedError: the stream was closed (either way) or the link is gone.
            FrameError: the frame is larger than the wire protocol allows.
        """
        await self._write(encode_frame(frame))

    async def recv(self) -> Frame:
        """The next frame from the peer.

        Raises:
            StreamClosedError: the peer finished or reset the stream, sent a malformed
                frame (``code="malformed"``), or the link dropped (``code="link_down"``).
        """
        item = await self._inbox.get()
        if item is None:
            self._inbox.put_nowait(None)  # every later recv fails the same way
            reason, code = self._recv_end or ("stream ended", "finished")
            raise StreamClosedError(reason, code=code)
        return item

    async def close(self, error: Error | None = None) -> None:
        """Send ``error`` (if any), then finish the stream. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._send_end is None:
            try:
                if not self._early:
                    await self._link.wait_handshake()
                self._write_now(encode_frame(error) if error is not None else b"", end=True)
            except StreamClosedError:
                pass
            if self._send_end is None:
                self._send_end = ("stream closed locally", "closed")
        self._link.forget_if_done(self)

    # -- writing ----------------------------------------------------------------------

    async def _write(self, data: bytes) -> None:
        if self._closed:
            raise StreamClosedError("stream closed locally", code="closed")
        self._check_send()
        if not self._early:
            await self._link.wait_handshake()
        while self.unsent() > SEND_BUFFER:
            self._drained.clear()
            self._link.wait_for_drain(self)
            await self._drained.wait()
            self._check_send()
        self._write_now(data, end=False)

    async def _send_raw(self, data: bytes) -> None:
        """Test hook: put bytes on the stream as they are (garbage included)."""
        await self._write(data)

    def _write_now(self, data: bytes, *, end: bool) -> None:
        self._check_send()
        try:
            self._link.quic.send_stream_data(self.stream_id, data, end_stream=end)
        except (ValueError, RuntimeError) as exc:  # finished, reset, or after FIN
            self._send_end = (f"stream cannot be written: {exc}", "closed")
            raise StreamClosedError(self._send_end[0], code="closed") from exc
        self._written += len(data)
        self._link.transmit_soon()

    def _check_send(self) -> None:
        if self._send_end is not None:
            raise StreamClosedError(self._send_end[0], code=self._send_end[1])

    def unsent(self) -> int:
        """Bytes written to the stream that aioquic has not put on the wire yet."""
        stream = self._link.quic._streams.get(self.stream_id)
        if stream is None:
            return 0
        return max(0, self._written - stream.sender.highest_offset)

    def drained(self) -> None:
        """Wake a writer waiting for the buffer to drain (or to learn it cannot write)."""
        self._drained.set()

    # -- events from the link -----------------------------------------------------------

    def feed(self, data: bytes, end: bool) -> None:
        """Bytes that arrived on the stream (``end``: the peer finished it)."""
        if self._recv_end is not None:
            return
        try:
            frames = self._decoder.feed(data) if data else []
        except FrameError as exc:
            self.malformed(str(exc))
            return
        for frame in frames:
            self._inbox.put_nowait(frame)
        if end:
            if self._decoder.pending:
                self.malformed(f"stream ended inside a frame ({self._decoder.pending} bytes)")
            else:
                self._end_recv("peer finished the stream", "finished")

    def malformed(self, detail: str) -> None:
        """Answer a malformed frame: ``Error(code="malformed")``, FIN, STOP_SENDING."""
        logger.warning(
            "malformed frame from %s on stream %d: %s", self._link.peer, self.stream_id, detail
        )
        self._end_recv(f"malformed frame from {self._link.peer}: {detail}", "malformed")
        if not self._closed and self._send_end is None:
            self._closed = True
            with contextlib.suppress(StreamClosedError):
                self._write_now(
                    encode_frame(Error(code="malformed", message=detail[:500])), end=True
                )
            self._send_end = ("stream closed after a malformed frame", "malformed")
            self._drained.set()
        self._link.stop_receiving(self.stream_id, _APP_ERROR_MALFORMED)
        self._link.on_malformed(self)
        self._link.forget_if_done(self)

    def stop_receiving(self) -> None:
        """Tell the peer to stop sending (a handler finished with the stream)."""
        if self._recv_end is None:
            self._end_recv("stream closed locally", "closed")
            self._link.stop_receiving(self.stream_id, _APP_ERROR_DONE)
        self._link.forget_if_done(self)

    def peer_reset(self, error_code: int) -> None:
        """The peer reset its sending side."""
        self._end_recv(f"{self._link.peer} reset the stream (error 0x{error_code:x})", "reset")

    def peer_stopped(self, error_code: int) -> None:
        """The peer sent STOP_SENDING; aioquic has reset our sending side."""
        if self._send_end is None:
            self._send_end = (
                f"{self._link.peer} stopped reading the stream (error 0x{error_code:x})",
                "stopped",
            )
        self._drained.set()
        self._link.forget_if_done(self)

    def link_lost(self, reason: str) -> None:
        """The connection is gone: every pending and future call fails."""
        self._end_recv(reason, "link_down")
        if self._send_end is None:
            self._send_end = (reason, "link_down")
        self._drained.set()

    def _end_recv(self, reason: str, code: str) -> None:
        if self._recv_end is None:
            self._recv_end = (reason, code)
            self._inbox.put_nowait(None)
            self._link.forget_if_done(self)

    @property
    def done(self) -> bool:
        """Both directions ended: the link may forget the stream."""
        return self._recv_end is not None and (self._closed or self._send_end is not None)


class Link:
    """One QUIC connection: aioquic's state machine on the event loop, plus its streams."""

    def __init__(
        self,
        quic: QuicConnection,
        send: Callable[[bytes, NetworkAddress], None],
        *,
        identify: Callable[[bool], str | None],
        label: str,
    ) -> None:
        self.quic = quic
        self._send = send
        self._identify = identify
        self.label = label
        self._loop = asyncio.get_running_loop()
        self._streams: dict[int, QuicFrameStream] = {}
        self._retired: set[int] = set()
        self._blocked: set[QuicFrameStream] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._transmit_handle: asyncio.Handle | None = None
        self._handshake = asyncio.Event()
        self._gone = asyncio.Event()
        self._pings = itertools.count(1)
        self.peer: str | None = None
        self.handshake_complete = False
        self.terminated = False
        self.close_reason = ""
        self.close_error_code: int | None = None
        # Owner hooks (the server or the connector sets what it needs).
        self.on_stream: Callable[[QuicFrameStream], None] | None = None
        self.on_handshake: Callable[[Link, events.HandshakeCompleted], None] = _ignore
        self.on_gone: Callable[[Link], None] = _ignore
        self.on_terminated: Callable[[Link], None] = _ignore
        self.on_cid_issued: Callable[[bytes], None] = _ignore
        self.on_cid_retired: Callable[[bytes], None] = _ignore
        self.on_malformed: Callable[[QuicFrameStream], None] = _ignore

    # -- state ------------------------------------------------------------------------

    @property
    def gone(self) -> bool:
        """The connection is closing, closed or lost."""
        return self._gone.is_set()

    async def wait_gone(self) -> None:
        """Return once the connection is gone."""
        await self._gone.wait()

    async def wait_handshake(self) -> None:
        """Return once the handshake completed.

        Raises:
            StreamClosedError: the link went away first.
        """
        if not self.handshake_complete:
            await self._handshake.wait()
        if not self.handshake_complete or self.gone:
            raise StreamClosedError(self.close_reason or "link down", code="link_down")

    # -- streams ----------------------------------------------------------------------

    def open_stream(self, *, early: bool) -> QuicFrameStream:
        """A new locally initiated bidirectional stream."""
        stream_id = self.quic.get_next_available_stream_id()
        # Create aioquic's stream now (no bytes yet) so the next id moves on.
        self.quic.send_stream_data(stream_id, b"")
        stream = QuicFrameStream(self, stream_id, early=early)
        self._streams[stream_id] = stream
        return stream

    def forget_if_done(self, stream: QuicFrameStream) -> None:
        """Drop a stream whose directions both ended (its id can never come back)."""
        if stream.done and self._streams.get(stream.stream_id) is stream:
            del self._streams[stream.stream_id]
            self._blocked.discard(stream)
            if stream_is_client_initiated(stream.stream_id) != self.quic.configuration.is_client:
                self._retire(stream.stream_id)

    def wait_for_drain(self, stream: QuicFrameStream) -> None:
        """Wake ``stream`` when its unsent bytes fall to :data:`SEND_BUFFER`."""
        self._blocked.add(stream)

    def stop_receiving(self, stream_id: int, code: int) -> None:
        """Send STOP_SENDING for ``stream_id`` (ignored when aioquic is done with it)."""
        try:
            self.quic.stop_stream(stream_id, code)
        except ValueError:
            return
        self.transmit_soon()

    def _retire(self, stream_id: int) -> None:
        # Peer-initiated ids we forgot: data arriving for them later (reordered, or sent
        # before our STOP_SENDING landed) must not look like a new stream.
        self._retired.add(stream_id)
        if len(self._retired) > _RETIRED_PRUNE_AT:
            live = self.quic._streams
            self._retired = {sid for sid in self._retired if sid in live}

    def _stream_for(self, stream_id: int) -> QuicFrameStream | None:
        stream = self._streams.get(stream_id)
        if stream is not None or stream_id in self._retired or self.gone:
            return stream
        if stream_is_client_initiated(stream_id) == self.quic.configuration.is_client:
            return None  # ours, already forgotten
        peer = None
        if self.on_stream is not None and not stream_is_unidirectional(stream_id):
            peer = self.peer or self._identify(self.quic.tls.session_resumed)
        if self.on_stream is None or peer is None:
            logger.debug("%s: refusing stream %d", self.label, stream_id)
            self._retire(stream_id)
            self.stop_receiving(stream_id, _APP_ERROR_UNWANTED)
            if not stream_is_unidirectional(stream_id):
                with contextlib.suppress(ValueError):
                    self.quic.reset_stream(stream_id, _APP_ERROR_UNWANTED)
            return None
        self.peer = peer
        # The server answers as 0.5-RTT data; the peer is known from its ticket or cert.
        stream = QuicFrameStream(self, stream_id, early=True)
        self._streams[stream_id] = stream
        self.on_stream(stream)
        return stream

    # -- driving aioquic ----------------------------------------------------------------

    def connect(self, addr: NetworkAddress) -> None:
        """Start the client handshake (the first flight goes out on the next transmit)."""
        self.quic.connect(addr, now=self._loop.time())

    def receive(self, data: bytes, addr: NetworkAddress) -> None:
        """A datagram from the network."""
        if self.terminated:
            return
        self.quic.receive_datagram(data, addr, now=self._loop.time())
        self._process_events()
        # Deferred to the end of this loop iteration: readers woken above answer first,
        # so an ACK and the answer leave in one datagram instead of two.
        self.transmit_soon()

    def transmit(self) -> None:
        """Send what aioquic has to send, re-arm its timer, wake drained writers."""
        self._transmit_handle = None
        if self.terminated:
            return
        for data, addr in self.quic.datagrams_to_send(now=self._loop.time()):
            self._send(data, addr)
        timer_at = self.quic.get_timer()
        if self._timer is not None and self._timer_at != timer_at:
            self._timer.cancel()
            self._timer = None
        if self._timer is None and timer_at is not None:
            self._timer = self._loop.call_at(timer_at, self._handle_timer)
        self._timer_at = timer_at
        if self._blocked:
            for stream in list(self._blocked):
                if stream.unsent() <= SEND_BUFFER:
                    self._blocked.discard(stream)
                    stream.drained()
        self._check_closing()

    def transmit_soon(self) -> None:
        """Coalesce writes made in the same loop iteration into one transmit."""
        if self._transmit_handle is None and not self.terminated:
            self._transmit_handle = self._loop.call_soon(self.transmit)

    def ping(self) -> None:
        """Send a PING (keeps the connection from idling out; proves the peer is there)."""
        if not self.gone:
            self.quic.send_ping(next(self._pings))
            self.transmit_soon()

    def close(self, reason: str = "closed", error_code: int = 0) -> None:
        """Close the connection: CONNECTION_CLOSE goes out now, streams fail at once."""
        if self.gone or self.terminated:
            return
        self.quic.close(error_code=error_code, reason_phrase=reason)
        self._go(reason or "closed")
        self.transmit()

    def abort(self) -> None:
        """Stop driving the connection (its socket is going away)."""
        self._go(self.close_reason or "closed")
        self.terminated = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transmit_handle is not None:
            self._transmit_handle.cancel()
            self._transmit_handle = None

    def _handle_timer(self) -> None:
        self._timer = None
        now = max(self._timer_at or 0.0, self._loop.time())
        self._timer_at = None
        if self.terminated:
            return
        self.quic.handle_timer(now=now)
        self._process_events()
        self.transmit()

    def _process_events(self) -> None:
        event = self.quic.next_event()
        while event is not None:
            if isinstance(event, events.StreamDataReceived):
                stream = self._stream_for(event.stream_id)
                if stream is not None:
                    stream.feed(event.data, event.end_stream)
            elif isinstance(event, events.HandshakeCompleted):
                self._handshake_completed(event)
            elif isinstance(event, events.StreamReset):
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream.peer_reset(event.error_code)
            elif isinstance(event, events.StopSendingReceived):
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream.peer_stopped(event.error_code)
            elif isinstance(event, events.ConnectionIdIssued):
                self.on_cid_issued(event.connection_id)
            elif isinstance(event, events.ConnectionIdRetired):
                self.on_cid_retired(event.connection_id)
            elif isinstance(event, events.ConnectionTerminated):
                self._terminated(event)
            event = self.quic.next_event()
        self._check_closing()

    def _handshake_completed(self, event: events.HandshakeCompleted) -> None:
        peer = self._identify(event.session_resumed)
        if peer is None:
            self.close("no authenticated peer", error_code=0x1)
            return
        self.peer = peer
        self.handshake_complete = True
        self._handshake.set()
        self.on_handshake(self, event)

    def _check_closing(self) -> None:
        # aioquic records why as soon as closing starts; ConnectionTerminated comes only
        # after the draining period (three probe timeouts).
        close_event: events.ConnectionTerminated | None = getattr(self.quic, "_close_event", None)
        if close_event is not None and not self.gone:
            self._record(close_event)
            self._go(self.close_reason)

    def _terminated(self, event: events.ConnectionTerminated) -> None:
        if not self.gone:
            self._record(event)
        self._go(self.close_reason)
        self.terminated = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.on_terminated(self)

    def _record(self, event: events.ConnectionTerminated) -> None:
        self.close_error_code = event.error_code
        self.close_reason = (
            event.reason_phrase or f"connection closed (error 0x{event.error_code:x})"
        )

    def _go(self, reason: str) -> None:
        if self.gone:
            return
        self.close_reason = self.close_reason or reason
        self._gone.set()
        self._handshake.set()  # wake waiters; they see the link is gone
        for stream in list(self._streams.values()):
            stream.link_lost(f"link to {self.peer or self.label} lost: {self.close_reason}")
        self._streams.clear()
        self._blocked.clear()
        self.on_gone(self)


def _ignore(*_args: object) -> None:
    return None
