"""Mutual TLS and session tickets for the QUIC transport (private to :mod:`aqe.bridge.quic`).

aioquic 1.7 has no public switch for client certificates on the server side: its TLS
engine can send a CertificateRequest (``Context._request_client_certificate``, "for
test purposes only"), checks the client's CertificateVerify signature, but never checks
the client's chain, and accepts an empty Certificate. :class:`_MutualTlsContext`
closes that gap by overriding the two server-side handshake steps: an empty
Certificate is refused (alert ``certificate_required``) and a certificate that does not
chain to the deployment CA, lacks the clientAuth usage or names no cluster is refused
(alert ``bad_certificate``) — before the server's handshake completes, so the peer
never gets a session ticket and nothing it sends reaches a stream handler.

A resumed handshake carries no certificate, so the peer's identity must travel with
the ticket: :class:`TicketStore` keeps, for every ticket the server issued, the cluster
name it was issued to. Tickets are single-use (popped when presented), which also
stops a replayed 0-RTT ClientHello from being accepted twice.

These overrides depend on aioquic internals (checked against aioquic 1.7.2); the
integration tests fail loudly if a new release changes them.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from aioquic import tls
from aioquic._buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID

from aqe.bridge.certs import TlsFiles, peer_name
from aqe.errors import BridgeError

__all__ = [
    "ALPN",
    "MAX_STREAMS",
    "ClientConnection",
    "ServerConnection",
    "ServerPeer",
    "TicketStore",
    "TlsMaterial",
    "client_configuration",
    "server_configuration",
]

logger = logging.getLogger("aqe.bridge.quic")

ALPN = "aqe-bridge/1"
"""The application protocol both ends must agree on."""

MAX_STREAMS = 256
"""Concurrent bidirectional streams a peer may open (aioquic's default is 128)."""

_MAX_DATA = 32 * 1024 * 1024  # connection flow-control window (aioquic doubles it as used)
_MAX_STREAM_DATA = 4 * 1024 * 1024  # per-stream window


@dataclass(frozen=True)
class TlsMaterial:
    """:class:`TlsFiles`, read and checked once: the CA bundle, our chain and key."""

    cadata: bytes
    certificate: x509.Certificate
    chain: list[x509.Certificate]
    private_key: PrivateKeyTypes
    name: str
    """The cluster name in our own certificate."""

    @classmethod
    def load(cls, files: TlsFiles) -> TlsMaterial:
        """Read the three files.

        Raises:
            BridgeError: a file is missing, unreadable or not what it should be (named).
        """
        cadata = _read(files.ca)
        try:
            if not x509.load_pem_x509_certificates(cadata):
                raise ValueError("no certificate in the file")
        except ValueError as exc:
            raise BridgeError(f"{files.ca}: not a PEM CA certificate: {exc}") from exc
        try:
            certs = tls.load_pem_x509_certificates(_read(files.cert))
            if not certs:
                raise ValueError("no certificate in the file")
        except ValueError as exc:
            raise BridgeError(f"{files.cert}: not a PEM certificate: {exc}") from exc
        try:
            key = tls.load_pem_private_key(_read(files.key), password=None)
        except (ValueError, TypeError) as exc:
            raise BridgeError(f"{files.key}: not an unencrypted PEM private key: {exc}") from exc
        mine = (
            certs[0]
            .public_key()
            .public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        theirs = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if mine != theirs:
            raise BridgeError(f"{files.key}: does not belong to the certificate in {files.cert}")
        try:
            name = peer_name(certs[0])
        except BridgeError as exc:
            raise BridgeError(f"{files.cert}: {exc}") from exc
        return cls(cadata, certs[0], certs[1:], key, name)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BridgeError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def _configuration(
    material: TlsMaterial, *, is_client: bool, idle_timeout: float
) -> QuicConfiguration:
    config = QuicConfiguration(
        alpn_protocols=[ALPN],
        is_client=is_client,
        idle_timeout=idle_timeout,
        max_data=_MAX_DATA,
        max_stream_data=_MAX_STREAM_DATA,
    )
    config.cadata = material.cadata
    config.certificate = material.certificate
    config.certificate_chain = list(material.chain)
    config.private_key = material.private_key
    return config


def client_configuration(
    material: TlsMaterial,
    *,
    server_name: str,
    idle_timeout: float,
    session_ticket: tls.SessionTicket | None,
) -> QuicConfiguration:
    """A client configuration: verify the server against the CA and ``server_name``."""
    config = _configuration(material, is_client=True, idle_timeout=idle_timeout)
    config.server_name = server_name
    config.session_ticket = session_ticket
    return config


def server_configuration(material: TlsMaterial, *, idle_timeout: float) -> QuicConfiguration:
    """A server configuration (client certificates are enforced by :class:`ServerConnection`)."""
    return _configuration(material, is_client=False, idle_timeout=idle_timeout)


# -- connections --------------------------------------------------------------------------


def _raise_stream_limit(connection: QuicConnection) -> None:
    # The initial MAX_STREAMS a QuicConnection advertises is fixed at 128; it is sent in the
    # transport parameters, so it must be raised before the handshake starts.
    limit = connection._local_max_streams_bidi
    limit.value = limit.sent = MAX_STREAMS


class ClientConnection(QuicConnection):
    """A client-side QuicConnection that allows :data:`MAX_STREAMS` server streams."""

    def __init__(
        self,
        *,
        configuration: QuicConfiguration,
        session_ticket_handler: tls.SessionTicketHandler | None = None,
    ) -> None:
        super().__init__(configuration=configuration, session_ticket_handler=session_ticket_handler)
        _raise_stream_limit(self)

    def peer_certificate(self) -> x509.Certificate | None:
        """The server's certificate after a full handshake (verified by aioquic)."""
        cert: x509.Certificate | None = getattr(self.tls, "_peer_certificate", None)
        return cert


class ServerPeer:
    """Who is on the other end of one server connection, as the handshake proves it."""

    def __init__(self, tickets: TicketStore, on_refused: Callable[[str], None]) -> None:
        self._tickets = tickets
        self.on_refused = on_refused
        self.verified: str | None = None
        """The CN of a client certificate that passed verification (full handshake)."""
        self.resumed: str | None = None
        """The peer a presented session ticket was issued to (resumption)."""
        self.refused = False
        """The server counted this connection as refused."""

    def fetch_ticket(self, label: bytes) -> tls.SessionTicket | None:
        """aioquic's SessionTicketFetcher: single-use lookup that remembers the owner."""
        found = self._tickets.pop(label)
        if found is None:
            return None
        ticket, self.resumed = found
        return ticket

    def issue_ticket(self, ticket: tls.SessionTicket) -> None:
        """aioquic's SessionTicketHandler: keep tickets of authenticated peers only."""
        name = self.resumed if self.resumed is not None else self.verified
        if name is not None:
            self._tickets.add(ticket, name)

    def name(self, *, session_resumed: bool) -> str | None:
        """The authenticated peer once the handshake completed (or while 0-RTT data arrives)."""
        return self.resumed if session_resumed else self.verified


class ServerConnection(QuicConnection):
    """A server-side QuicConnection that requires and verifies a client certificate."""

    def __init__(
        self,
        *,
        configuration: QuicConfiguration,
        original_destination_connection_id: bytes,
        peer: ServerPeer,
    ) -> None:
        super().__init__(
            configuration=configuration,
            original_destination_connection_id=original_destination_connection_id,
            session_ticket_fetcher=peer.fetch_ticket,
            session_ticket_handler=peer.issue_ticket,
        )
        self.peer = peer
        _raise_stream_limit(self)

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        # aioquic builds a plain tls.Context here; give it the mutual-TLS server steps.
        self.tls.__class__ = _MutualTlsContext
        context: _MutualTlsContext = self.tls  # type: ignore[assignment]
        context.aqe_peer = self.peer


class _CertificateRequiredAlert(tls.Alert):
    description = tls.AlertDescription.certificate_required


class _MutualTlsContext(tls.Context):
    """tls.Context with client certificates requested, required and verified (server side)."""

    aqe_peer: ServerPeer | None = None

    @property
    def _request_client_certificate(self) -> bool:
        # A resumed handshake must not expect a certificate: aioquic would otherwise wait
        # for one the client never sends (it sends CertificateRequest only without a PSK).
        return not self._session_resumed

    @_request_client_certificate.setter
    def _request_client_certificate(self, value: bool) -> None:
        pass  # tls.Context.__init__ assigns False; the property decides

    def _server_handle_certificate(self, input_buf: Buffer) -> None:
        super()._server_handle_certificate(input_buf)
        if self._peer_certificate is None:
            self._refuse(_CertificateRequiredAlert("client certificate required"))

    def _server_handle_certificate_verify(self, input_buf: Buffer) -> None:
        super()._server_handle_certificate_verify(input_buf)  # the signature
        cert = self._peer_certificate
        if cert is None:  # set by _server_handle_certificate; never None here
            self._refuse(_CertificateRequiredAlert("client certificate required"))
        try:
            tls.verify_certificate(
                certificate=cert, chain=self._peer_certificate_chain, cadata=self._cadata
            )
        except tls.Alert as exc:
            self._refuse(tls.AlertBadCertificate(f"client certificate rejected: {exc}"))
        try:
            usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            usage = None
        if usage is not None and ExtendedKeyUsageOID.CLIENT_AUTH not in usage:
            self._refuse(tls.AlertBadCertificate("client certificate lacks the clientAuth usage"))
        try:
            name = peer_name(cert)
        except BridgeError as exc:
            self._refuse(tls.AlertBadCertificate(f"client certificate rejected: {exc}"))
        if self.aqe_peer is not None:
            self.aqe_peer.verified = name

    def _refuse(self, alert: tls.Alert) -> NoReturn:
        if self.aqe_peer is not None:
            self.aqe_peer.on_refused(str(alert))
        raise alert


# -- tickets ------------------------------------------------------------------------------


class TicketStore:
    """Session tickets a server issued, keyed by ticket label, with their peer's name."""

    def __init__(self, capacity: int = 4096) -> None:
        self._capacity = capacity
        self._tickets: OrderedDict[bytes, tuple[tls.SessionTicket, str]] = OrderedDict()

    def add(self, ticket: tls.SessionTicket, peer: str) -> None:
        """Remember ``ticket`` as issued to ``peer``; the oldest go past ``capacity``."""
        self._tickets[ticket.ticket] = (ticket, peer)
        while len(self._tickets) > self._capacity:
            self._tickets.popitem(last=False)

    def pop(self, label: bytes) -> tuple[tls.SessionTicket, str] | None:
        """The ticket and its peer, removed (a ticket resumes one connection only)."""
        found = self._tickets.pop(label, None)
        if found is not None and not found[0].is_valid:
            return None
        return found

    def __len__(self) -> int:
        return len(self._tickets)
