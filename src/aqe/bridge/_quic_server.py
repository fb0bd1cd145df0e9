"""The listening side of the QUIC bridge transport (private to :mod:`aqe.bridge.quic`).

One UDP socket, many peers: :class:`QuicServer` routes datagrams to a
:class:`~aqe.bridge._quic_link.Link` per connection (by connection id), creates a
link for each new client Initial, and runs the stream handler for every stream a
verified peer opens, in its own task. Client certificates are enforced by
:class:`~aqe.bridge._quic_tls.ServerConnection`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import msgspec
from aioquic._buffer import Buffer
from aioquic.quic import events
from aioquic.quic.connection import NetworkAddress
from aioquic.quic.packet import (
    QuicPacketType,
    encode_quic_version_negotiation,
    pull_quic_header,
)

from aqe.bridge._quic_link import Link, QuicFrameStream
from aqe.bridge._quic_tls import (
    ServerConnection,
    ServerPeer,
    TicketStore,
    TlsMaterial,
    server_configuration,
)
from aqe.bridge.certs import TlsFiles
from aqe.bridge.channel import StreamHandler
from aqe.bridge.frames import Error
from aqe.errors import BridgeError, StreamClosedError

__all__ = ["QuicServer", "ServerStats", "format_addr"]

logger = logging.getLogger("aqe.bridge.quic")

_MIN_INITIAL_DATAGRAM = 1200  # RFC 9000 14.1: a client's Initial is padded to this


class ServerStats(msgspec.Struct, frozen=True, kw_only=True):
    """Counters of a :class:`QuicServer` since it started."""

    connections: int
    """Peers that completed the handshake (authenticated), resumed ones included."""
    refused: int
    """Connection attempts that never became authenticated (bad or no certificate, ...)."""
    streams_opened: int
    """Streams handed to the handler."""
    streams_failed: int
    """Streams that ended with a malformed frame or a handler exception."""
    zero_rtt_accepted: int
    """Resumed connections whose 0-RTT data the server accepted."""


class QuicServer:
    """Accepts bridge links from peer clusters and serves their streams with ``handler``."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        tls: TlsFiles,
        handler: StreamHandler,
        idle_timeout_s: float = 30.0,
    ) -> None:
        """Read the certificates now (a bad file fails here, not at the first handshake).

        Raises:
            BridgeError: a TLS file is missing or unusable (the message names it).
        """
        self._host = host
        self._port = port
        self._handler = handler
        self._material = TlsMaterial.load(tls)
        self._config = server_configuration(self._material, idle_timeout=idle_timeout_s)
        self._tickets = TicketStore()
        self._routes: dict[bytes, Link] = {}
        self._links: set[Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._transport: asyncio.DatagramTransport | None = None
        self._endpoint: _ServerEndpoint | None = None
        self._closed = False
        self._connections = 0
        self._refused = 0
        self._streams_opened = 0
        self._streams_failed = 0
        self._zero_rtt_accepted = 0

    async def start(self) -> None:
        """Bind the UDP socket and start accepting.

        Raises:
            BridgeError: the address cannot be bound, or the server already started.
        """
        if self._transport is not None or self._closed:
            raise BridgeError(f"bridge server {self._material.name} already started")
        loop = asyncio.get_running_loop()
        try:
            transport, endpoint = await loop.create_datagram_endpoint(
                lambda: _ServerEndpoint(self), local_addr=(self._host, self._port)
            )
        except OSError as exc:
            raise BridgeError(
                f"cannot listen for bridge peers on {self._host}:{self._port}: "
                f"{exc.strerror or exc}"
            ) from exc
        self._transport, self._endpoint = transport, endpoint
        logger.info(
            "bridge server %s listening on %s:%d", self._material.name, self._host, self.port
        )

    @property
    def port(self) -> int:
        """The bound UDP port (the configured one until :meth:`start`)."""
        if self._transport is None:
            return self._port
        sockname = self._transport.get_extra_info("sockname")
        return int(sockname[1])

    async def close(self) -> None:
        """Close every connection (peers get CONNECTION_CLOSE), stop handlers, unbind."""
        if self._closed:
            return
        self._closed = True
        for link in list(self._links):
            link.close("bridge server shutting down")
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for link in list(self._links):
            link.abort()
        self._links.clear()
        self._routes.clear()
        if self._transport is not None and self._endpoint is not None:
            self._transport.close()
            await self._endpoint.closed  # the port is free once close() returns

    def stats(self) -> ServerStats:
        """The server's counters."""
        return ServerStats(
            connections=self._connections,
            refused=self._refused,
            streams_opened=self._streams_opened,
            streams_failed=self._streams_failed,
            zero_rtt_accepted=self._zero_rtt_accepted,
        )

    # -- datagrams ----------------------------------------------------------------------

    def _datagram(self, data: bytes, addr: NetworkAddress) -> None:
        transport = self._transport
        if transport is None or self._closed:
            return
        try:
            header = pull_quic_header(
                Buffer(data=data), host_cid_length=self._config.connection_id_length
            )
        except ValueError:
            return
        if (
            header.packet_type != QuicPacketType.VERSION_NEGOTIATION
            and header.version is not None
            and header.version not in self._config.supported_versions
        ):
            transport.sendto(
                encode_quic_version_negotiation(
                    source_cid=header.destination_cid,
                    destination_cid=header.source_cid,
                    supported_versions=self._config.supported_versions,
                ),
                addr,
            )
            return
        link = self._routes.get(header.destination_cid)
        if (
            link is None
            and header.packet_type == QuicPacketType.INITIAL
            and len(data) >= _MIN_INITIAL_DATAGRAM
        ):
            link = self._accept(header.destination_cid, addr, transport)
        if link is not None:
            try:
                link.receive(data, addr)
            except Exception:  # a supervisor: one connection's failure stays on it
                logger.exception("bridge connection from %s failed; closing it", link.label)
                link.close("internal error", error_code=0x1)

    def _accept(
        self, original_cid: bytes, addr: NetworkAddress, transport: asyncio.DatagramTransport
    ) -> Link:
        where = format_addr(addr)
        peer = ServerPeer(self._tickets, on_refused=lambda why: self._refuse(peer, where, why))
        quic = ServerConnection(
            configuration=self._config,
            original_destination_connection_id=original_cid,
            peer=peer,
        )
        link = Link(
            quic,
            transport.sendto,
            identify=lambda resumed: peer.name(session_resumed=resumed),
            label=where,
        )
        link.on_stream = self._on_stream
        link.on_handshake = self._on_handshake
        link.on_malformed = self._on_malformed
        link.on_gone = lambda gone: self._on_gone(gone, peer)
        link.on_terminated = self._forget

        def issued(cid: bytes) -> None:
            self._routes[cid] = link

        def retired(cid: bytes) -> None:
            self._routes.pop(cid, None)

        link.on_cid_issued = issued
        link.on_cid_retired = retired
        self._routes[original_cid] = link
        self._routes[quic.host_cid] = link
        self._links.add(link)
        return link

    def _refuse(self, peer: ServerPeer, where: str, why: str) -> None:
        if peer.refused:
            return
        peer.refused = True
        self._refused += 1
        logger.warning(
            "bridge server %s refused a peer from %s: %s", self._material.name, where, why
        )

    def _on_handshake(self, link: Link, event: events.HandshakeCompleted) -> None:
        self._connections += 1
        if event.early_data_accepted:
            self._zero_rtt_accepted += 1
        logger.info(
            "bridge peer %s connected from %s (resumed: %s, 0-RTT: %s)",
            link.peer,
            link.label,
            event.session_resumed,
            event.early_data_accepted,
        )

    def _on_gone(self, link: Link, peer: ServerPeer) -> None:
        if not link.handshake_complete and not peer.refused:
            # Failed for another reason than our verification (the client gave up, did
            # not trust our certificate, timed out): still not a connection.
            peer.refused = True
            self._refused += 1
            logger.info(
                "bridge handshake with a peer from %s did not complete: %s",
                link.label,
                link.close_reason or "unknown reason",
            )
        elif link.handshake_complete:
            logger.info("bridge peer %s disconnected: %s", link.peer, link.close_reason)

    def _forget(self, link: Link) -> None:
        self._links.discard(link)
        for cid in [cid for cid, known in self._routes.items() if known is link]:
            del self._routes[cid]

    # -- streams ------------------------------------------------------------------------

    def _on_stream(self, stream: QuicFrameStream) -> None:
        self._streams_opened += 1
        task = asyncio.get_running_loop().create_task(
            self._serve(stream), name=f"aqe-bridge-stream-{stream.peer}-{stream.stream_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_malformed(self, stream: QuicFrameStream) -> None:
        self._streams_failed += 1

    async def _serve(self, stream: QuicFrameStream) -> None:
        try:
            await self._handler(stream)
        except StreamClosedError as exc:
            logger.debug("bridge stream %r ended in its handler: %s", stream, exc)
        except Exception as exc:  # a supervisor: one stream's failure stays on that stream
            self._streams_failed += 1
            logger.exception("bridge stream handler failed on %r", stream)
            await stream.close(Error(code="internal", message=f"handler failed: {exc!r}"[:500]))
        finally:
            if not self._closed:
                await stream.close()
                stream.stop_receiving()


class _ServerEndpoint(asyncio.DatagramProtocol):
    def __init__(self, server: QuicServer) -> None:
        self._server = server
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def datagram_received(self, data: bytes, addr: NetworkAddress) -> None:
        self._server._datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        logger.debug("bridge server socket error: %s", exc)


def format_addr(addr: NetworkAddress) -> str:
    """``host:port`` of a socket address, for logs and messages."""
    with contextlib.suppress(TypeError, IndexError):
        return f"{addr[0]}:{addr[1]}"
    return str(addr)
