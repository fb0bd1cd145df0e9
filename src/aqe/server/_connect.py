"""Opening the one NATS connection an aqe process uses.

This is the only module that connects to NATS. nats-py is imported inside
:func:`open_connection` so that importing :mod:`aqe.server` (for ``aqe server status``,
say) stays light.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import TYPE_CHECKING, Any, Final

from aqe.config import Settings, redact_url
from aqe.errors import ConfigError, LogUnavailableError
from aqe.server._embedded import EmbeddedServer

if TYPE_CHECKING:
    from nats.aio.client import Client

__all__ = ["PENDING_SIZE", "RECONNECT_ATTEMPTS", "build_ssl_context", "open_connection"]

_log = logging.getLogger("aqe.server")

PENDING_SIZE: Final = 64 * 1024 * 1024
"""Client-side publish buffer: room for tens of thousands of in-flight async publishes."""

RECONNECT_ATTEMPTS: Final = 60
"""Reconnect attempts per server once connected (``RECONNECT_WAIT_S`` apart)."""

RECONNECT_WAIT_S: Final = 1.0

# While connecting the first time each server is tried twice, briefly apart, so an
# unreachable URL fails in well under a second instead of nats-py's default 2 minutes.
_INITIAL_ATTEMPTS: Final = 1
_INITIAL_WAIT_S: Final = 0.1


def build_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """Build the TLS context the settings ask for.

    Args:
        settings: Settings with ``tls_ca`` and/or ``tls_cert`` + ``tls_key``.

    Returns:
        A client context verifying the server (against ``tls_ca`` when given) and
        presenting the client certificate when given; ``None`` when no TLS setting is set
        (a ``tls://`` URL then uses nats-py's default context).

    Raises:
        ConfigError: A CA, certificate or key file cannot be loaded.
    """
    if settings.tls_ca is None and settings.tls_cert is None:
        return None
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH,
            cafile=str(settings.tls_ca) if settings.tls_ca is not None else None,
        )
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"AQE_NATS_TLS_CA: cannot load {settings.tls_ca}: {exc}") from exc
    if settings.tls_cert is not None and settings.tls_key is not None:
        try:
            context.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"AQE_NATS_TLS_CERT / AQE_NATS_TLS_KEY: cannot load {settings.tls_cert} with "
                f"{settings.tls_key}: {exc}"
            ) from exc
    return context


async def _on_disconnected() -> None:
    _log.info("nats: disconnected; reconnecting")


async def _on_reconnected() -> None:
    _log.info("nats: reconnected")


async def _on_closed() -> None:
    _log.debug("nats: connection closed")


async def open_connection(settings: Settings, *, name: str = "aqe") -> Client:
    """Connect to the configured NATS server, starting the embedded one if needed.

    With ``settings.nats_url`` unset, the embedded server under ``settings.data_dir`` is
    reused or started, and its generated token presented. Otherwise the URL (or
    comma-separated cluster URLs) is used with the configured user/password, token or
    creds file, and TLS.

    The connection reconnects on its own (bounded attempts); its callbacks log through
    the ``aqe.server`` logger instead of printing.

    Args:
        settings: Where to connect and how to authenticate.
        name: Connection name shown in the server's monitoring.

    Returns:
        A connected nats-py client; close it with ``await nc.close()`` or ``nc.drain()``.

    Raises:
        LogUnavailableError: No server could be reached (or it refused the credentials).
        ConfigError: No nats-server binary for the embedded server, or TLS files that
            cannot be loaded.
        ServerError: The embedded server would not start.
    """
    import nats.errors
    from nats.aio.client import Client as NatsClient

    auth: dict[str, Any] = {}
    if settings.nats_url is None:
        embedded = EmbeddedServer(settings.data_dir, require_token=settings.embedded_token)
        url = await asyncio.to_thread(embedded.ensure_running)
        servers = [url]
        hint = "the embedded server did not answer; see `aqe server status`"
        # The embedded server listens on loopback, without TLS, and takes the token
        # it was started with (AQE_EMBEDDED_TOKEN=off: none).
        auth = {"token": embedded.token()}
    else:
        servers = list(settings.server_urls)
        hint = "check `aqe server status` or AQE_NATS_URL"
        auth = {
            "user": settings.user,
            "password": settings.password,
            "token": settings.token,
            "user_credentials": str(settings.creds_file) if settings.creds_file else None,
            "tls": build_ssl_context(settings),
        }
    # URLs may carry credentials (nats://user:password@host); messages show them hidden.
    shown = redact_url(",".join(servers))

    errors_seen: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        # nats-py reports each failed attempt here; its own default logs at ERROR level.
        errors_seen.append(exc)
        _log.debug("nats: %s", exc)

    nc = NatsClient()
    try:
        await nc.connect(
            servers=servers,
            name=name,
            # nats-py annotates these as int; it passes them to asyncio, which takes floats.
            connect_timeout=settings.connect_timeout,  # type: ignore[arg-type]
            allow_reconnect=True,
            max_reconnect_attempts=_INITIAL_ATTEMPTS,
            reconnect_time_wait=_INITIAL_WAIT_S,  # type: ignore[arg-type]
            pending_size=PENDING_SIZE,
            error_cb=on_error,
            disconnected_cb=_on_disconnected,
            reconnected_cb=_on_reconnected,
            closed_cb=_on_closed,
            **auth,
        )
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        # NoServersError only says that attempts ran out; the last attempt's error says why.
        # A server refusing credentials sends -ERR and closes the socket at once, so one
        # attempt may see the refusal and another only a reset: prefer the refusal.
        refusals = [e for e in errors_seen if "authoriz" in str(e).lower()]
        cause = refusals[-1] if refusals else errors_seen[-1] if errors_seen else exc
        reason = str(cause) or type(cause).__name__
        credentials = any(auth.get(k) for k in ("user", "password", "token", "user_credentials"))
        if not refusals and credentials and isinstance(cause, ConnectionResetError):
            reason += " (the server closed the connection: wrong credentials?)"
        with contextlib.suppress(nats.errors.Error, OSError):
            await nc.close()
        raise LogUnavailableError(f"cannot connect to NATS at {shown}: {reason}; {hint}") from exc

    # Once connected, ride out server restarts and cluster failovers for about a minute.
    # nats-py reads these options on every reconnect.
    nc.options["max_reconnect_attempts"] = RECONNECT_ATTEMPTS
    nc.options["reconnect_time_wait"] = RECONNECT_WAIT_S
    return nc
