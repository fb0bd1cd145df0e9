"""The bridge transport over QUIC (aioquic): mutual TLS, 0-RTT resumption, keepalives.

:class:`QuicServer` listens for peer clusters; every bidirectional stream a verified
peer opens becomes a :class:`~aqe.bridge.channel.FrameStream` handed to the
``handler`` in its own task. :class:`QuicConnector` dials one peer
(:class:`~aqe.bridge.channel.Connector`) and opens streams on that connection.

Security: both sides present certificates issued by the deployment CA
(:mod:`aqe.bridge.certs`). The server requires and verifies the client's certificate
during the handshake and refuses a peer without one or with one from another CA; the
client checks the server's certificate against the CA and ``server_name`` (the peer
cluster's name, a DNS SAN). ``stream.peer`` is the certificate's CN on both ends.

Resumption: the server issues a session ticket to every authenticated peer and keeps
the peer's name with it (a resumed handshake carries no certificate). The connector
keeps the last ticket (in memory) and uses it on the next :meth:`QuicConnector.connect`,
which then returns at once: streams opened with ``early=True`` send as 0-RTT data
before the handshake completes, other streams wait for it. Tickets are single-use.

Liveness: the connector pings every ``keepalive_s`` so an idle link stays up; a dead
peer is noticed within about ``idle_timeout_s``, when ``wait_closed`` returns and every
stream's ``recv``/``send`` raise :class:`~aqe.errors.StreamClosedError`. Reconnecting
(and backing off) is the caller's business: ``connect`` is one attempt.

Only this module (and its private ``_quic_*`` helpers) imports aioquic.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec
from aioquic.quic import events
from aioquic.quic.connection import NetworkAddress
from aioquic.tls import AlertDescription, SessionTicket

from aqe.bridge._quic_link import SEND_BUFFER, Link
from aqe.bridge._quic_server import QuicServer, ServerStats
from aqe.bridge._quic_tls import (
    ALPN,
    MAX_STREAMS,
    ClientConnection,
    TlsMaterial,
    client_configuration,
)
from aqe.bridge.certs import TlsFiles, peer_name
from aqe.bridge.channel import FrameStream
from aqe.errors import BridgeError, LinkDownError

__all__ = [
    "ALPN",
    "MAX_STREAMS",
    "SEND_BUFFER",
    "ConnectorStats",
    "QuicConnector",
    "QuicServer",
    "ServerStats",
]

logger = logging.getLogger("aqe.bridge.quic")

_CERT_ALERTS = frozenset(
    {
        AlertDescription.bad_certificate,
        AlertDescription.unsupported_certificate,
        AlertDescription.certificate_revoked,
        AlertDescription.certificate_expired,
        AlertDescription.certificate_unknown,
        AlertDescription.unknown_ca,
        AlertDescription.access_denied,
        AlertDescription.certificate_required,
    }
)


class ConnectorStats(msgspec.Struct, frozen=True, kw_only=True):
    """Counters of a :class:`QuicConnector` since it was made."""

    handshakes: int
    """Completed handshakes (full and resumed)."""
    full_handshakes: int
    """Handshakes with certificates (no session ticket used)."""
    zero_rtt_attempts: int
    """Connects that offered a session ticket and 0-RTT data."""
    zero_rtt_accepted: int
    """Of those, the ones whose early data the server accepted."""
    last_handshake_ms: float
    """Time from the start of the last connect to its handshake's completion."""
    connected: bool
    rtt_ms: float = 0.0
    """The live connection's smoothed round-trip time (aioquic's estimate); 0 when none."""


class QuicConnector:
    """Dials one peer cluster: one connection at a time, many streams on it."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        tls: TlsFiles,
        server_name: str,
        keepalive_s: float = 5.0,
        idle_timeout_s: float = 30.0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        """Read the certificates now (a bad file fails here, not at connect).

        Args:
            host: the peer's address.
            port: its UDP port.
            tls: this cluster's certificate, key and the deployment CA.
            server_name: the peer's cluster name; its certificate must carry it as a SAN.
            keepalive_s: PING interval while connected.
            idle_timeout_s: a connection that hears nothing this long is dead.
            connect_timeout_s: how long one handshake may take.

        Raises:
            BridgeError: a TLS file is missing or unusable (the message names it), or
                the timings cannot work (``keepalive_s`` must be below ``idle_timeout_s``).
        """
        if not 0 < keepalive_s < idle_timeout_s or connect_timeout_s <= 0:
            raise BridgeError(
                f"bridge link to {server_name}: need 0 < keepalive_s ({keepalive_s:g}) < "
                f"idle_timeout_s ({idle_timeout_s:g}) and connect_timeout_s > 0 "
                f"({connect_timeout_s:g})"
            )
        self._host = host
        self._port = port
        self._server_name = server_name
        self._keepalive_s = keepalive_s
        self._idle_timeout_s = idle_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._material = TlsMaterial.load(tls)
        self._ticket: tuple[SessionTicket, str] | None = None
        self._link: Link | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepted = False
        self._resuming = False
        self._settled = asyncio.Event()
        self._socket_error: Exception | None = None
        self._started_at = 0.0
        self._handshakes = 0
        self._full_handshakes = 0
        self._zero_rtt_attempts = 0
        self._zero_rtt_accepted = 0
        self._last_handshake_ms = 0.0

    @property
    def _where(self) -> str:
        return f"{self._server_name} at {self._host}:{self._port}"

    @property
    def connected(self) -> bool:
        """A connection is up (or, after a 0-RTT connect, still being confirmed)."""
        link = self._link
        return link is not None and not link.gone and (self._accepted or self._resuming)

    async def connect(self) -> None:
        """Open a connection; with a session ticket at hand, 0-RTT and return at once.

        Without a ticket this waits until the server has accepted our certificate. With
        one it returns immediately so that ``early=True`` streams can send 0-RTT data;
        if the handshake then fails or takes longer than ``connect_timeout_s``, the
        connection closes (``wait_closed`` returns, streams raise).

        Raises:
            LinkDownError: refused (nothing listening), timed out, or the handshake
                failed (certificate rejected by either side); the message says which.
        """
        if self.connected:
            return
        self._teardown()
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(self._host, self._port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            raise LinkDownError(f"cannot resolve bridge peer {self._where}: {exc}") from exc
        family, addr = infos[0][0], infos[0][4]
        ticket = self._take_ticket()
        resumed_peer = ticket[1] if ticket is not None else None
        quic = ClientConnection(
            configuration=client_configuration(
                self._material,
                server_name=self._server_name,
                idle_timeout=self._idle_timeout_s,
                session_ticket=ticket[0] if ticket is not None else None,
            ),
            session_ticket_handler=self._on_ticket,
        )

        def identify(session_resumed: bool) -> str | None:
            if session_resumed:
                return resumed_peer
            cert = quic.peer_certificate()
            try:
                return peer_name(cert) if cert is not None else None
            except BridgeError:
                return None

        self._accepted = False
        self._resuming = ticket is not None
        self._settled = asyncio.Event()
        self._socket_error = None
        try:
            transport, endpoint = await loop.create_datagram_endpoint(
                lambda: _ClientEndpoint(self._on_socket_error, addr),
                remote_addr=(str(addr[0]), int(addr[1])),
                family=family,
            )
        except OSError as exc:
            raise LinkDownError(f"cannot open a socket to {self._where}: {exc}") from exc
        link = Link(
            quic,
            lambda data, _addr: transport.sendto(data),
            identify=identify,
            label=self._where,
        )
        link.on_handshake = self._on_handshake
        link.on_gone = self._on_gone
        endpoint.link = link
        self._link, self._transport = link, transport
        self._started_at = loop.time()
        link.connect(addr)
        self._spawn(self._keepalive(link))
        if ticket is not None:
            self._zero_rtt_attempts += 1
            link.transmit_soon()  # after the caller's early writes: one first flight
            self._spawn(self._watchdog(link))
            return
        link.transmit()
        try:
            await self._wait_accepted(link)
        except asyncio.CancelledError:
            link.close("connect cancelled")
            self._teardown()
            raise

    async def open_stream(self, *, early: bool = False) -> FrameStream:
        """A new stream on the current connection.

        Raises:
            LinkDownError: not connected.
        """
        link = self._link
        if link is None or link.gone:
            reason = f": {link.close_reason}" if link is not None and link.close_reason else ""
            raise LinkDownError(f"not connected to bridge peer {self._where}{reason}")
        return link.open_stream(early=early)

    async def wait_closed(self) -> None:
        """Return when the current connection is gone (idle timeout, peer close, error)."""
        link = self._link
        if link is not None:
            await link.wait_gone()

    async def close(self) -> None:
        """Close the connection (the peer gets CONNECTION_CLOSE). Idempotent."""
        link = self._link
        if link is not None and not link.gone:
            link.close("bridge connector closed")
        self._teardown()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stats(self) -> ConnectorStats:
        """The connector's counters."""
        return ConnectorStats(
            handshakes=self._handshakes,
            full_handshakes=self._full_handshakes,
            zero_rtt_attempts=self._zero_rtt_attempts,
            zero_rtt_accepted=self._zero_rtt_accepted,
            last_handshake_ms=self._last_handshake_ms,
            connected=self.connected,
            rtt_ms=_smoothed_rtt_ms(self._link),
        )

    # -- internals ----------------------------------------------------------------------

    def _take_ticket(self) -> tuple[SessionTicket, str] | None:
        # The server honours a ticket once (it pops it), but the client keeps it until a
        # new one replaces it: an attempt that never reached the server (the first retry
        # into a partition) must not waste the next attempt's 0-RTT. A ticket the server
        # already used just gets a full handshake, and a fresh ticket after it.
        ticket = self._ticket
        if ticket is None or not ticket[0].is_valid or ticket[0].server_name != self._server_name:
            self._ticket = None
            return None
        return ticket

    def _on_ticket(self, ticket: SessionTicket) -> None:
        link = self._link
        if link is None or link.peer is None:
            return
        self._ticket = (ticket, link.peer)
        # The server issues tickets only once it has verified us: the link is accepted.
        self._accepted = True
        self._settled.set()

    def _on_handshake(self, link: Link, event: events.HandshakeCompleted) -> None:
        self._handshakes += 1
        if not event.session_resumed:
            self._full_handshakes += 1
        if event.early_data_accepted:
            self._zero_rtt_accepted += 1
        self._last_handshake_ms = (asyncio.get_running_loop().time() - self._started_at) * 1e3
        logger.debug(
            "bridge link to %s up in %.1f ms (resumed: %s, 0-RTT: %s)",
            self._where,
            self._last_handshake_ms,
            event.session_resumed,
            event.early_data_accepted,
        )

    def _on_gone(self, link: Link) -> None:
        if link is self._link:
            self._settled.set()
            if self._accepted:
                logger.info("bridge link to %s lost: %s", self._where, link.close_reason)
            # Nothing more to send or hear: drop the socket now (no draining needed).
            asyncio.get_running_loop().call_soon(self._teardown_link, link)

    def _on_socket_error(self, exc: Exception) -> None:
        link = self._link
        if link is None or self._accepted:
            logger.debug("bridge link to %s: socket error %s", self._where, exc)
            return
        self._socket_error = exc
        # Not from inside the transport's callback: closing sends, which may report again.
        asyncio.get_running_loop().call_soon(link.close, f"socket error: {exc}")

    async def _wait_accepted(self, link: Link) -> None:
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                await self._settled.wait()
        except TimeoutError:
            link.close("handshake timed out")
            self._teardown()
            raise LinkDownError(
                f"no answer from bridge peer {self._where} within "
                f"{self._connect_timeout_s:g} s (timed out)"
            ) from None
        if not self._accepted:
            self._teardown()
            raise LinkDownError(self._failure(link))

    def _failure(self, link: Link) -> str:
        if isinstance(self._socket_error, ConnectionRefusedError):
            return f"bridge peer {self._where} refused the connection (nothing listening?)"
        if self._socket_error is not None:
            return f"cannot reach bridge peer {self._where}: {self._socket_error}"
        code = link.close_error_code
        if code is not None and 0x100 <= code <= 0x1FF:
            try:
                alert = AlertDescription(code - 0x100)
            except ValueError:
                return f"TLS handshake with {self._where} failed: {link.close_reason}"
            what = "certificate rejected" if alert in _CERT_ALERTS else "TLS handshake failed"
            return f"{what} on the link to {self._where}: {link.close_reason} ({alert.name})"
        return f"connection to bridge peer {self._where} failed: {link.close_reason}"

    async def _watchdog(self, link: Link) -> None:
        """After a 0-RTT connect: close the link if the server does not accept it in time."""
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                await self._settled.wait()
        except TimeoutError:
            link.close("handshake timed out")
            return
        if not self._accepted and not link.gone:
            link.close("handshake failed")
        elif not self._accepted:
            logger.warning("0-RTT connect failed: %s", self._failure(link))

    async def _keepalive(self, link: Link) -> None:
        while not link.gone:
            try:
                async with asyncio.timeout(self._keepalive_s):
                    await link.wait_gone()
            except TimeoutError:
                link.ping()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _teardown_link(self, link: Link) -> None:
        if link is self._link:
            self._teardown()

    def _teardown(self) -> None:
        if self._link is not None:
            self._link.abort()
        if self._transport is not None:
            self._transport.close()
            self._transport = None


def _smoothed_rtt_ms(link: Link | None) -> float:
    """The link's smoothed RTT in ms, from aioquic's loss recovery (a private attribute of
    the pinned aioquic 1.7; 0 when absent, so a change there costs the metric only)."""
    if link is None or link.terminated:
        return 0.0
    recovery = getattr(link.quic, "_loss", None)
    return float(getattr(recovery, "_rtt_smoothed", 0.0)) * 1000.0


class _ClientEndpoint(asyncio.DatagramProtocol):
    def __init__(self, on_error: Callable[[Exception], None], peer: NetworkAddress) -> None:
        self._on_error = on_error
        self._peer = peer
        self.link: Link | None = None

    def datagram_received(self, data: bytes, addr: NetworkAddress) -> None:
        # The socket is connected: whatever arrives is from the peer. Passing the address
        # the link dialled keeps aioquic from seeing a new path over a formatting detail.
        if self.link is not None:
            self.link.receive(data, self._peer)

    def error_received(self, exc: Exception) -> None:
        self._on_error(exc)
