"""A bridge node's configuration: one TOML file per cluster (``ops/bridge/*.toml``).

::

    cluster = "a"                          # this cluster's name ([A-Za-z0-9_-]+)
    nats_url = "nats://127.0.0.1:4251"     # its NATS server(s), comma-separated
    data_dir = "../../.aqe/bridge/a"       # status.json lives here
    streams = ["AQE_TESTS", "AQE_PATTERNS", "AQE_LEARNING"]
    partitions = 8                         # chains per stream and origin (1..256)
    apply_streams = true                   # make the server's streams match streams/*.json
    status_interval_s = 0.5                # how often status.json is rewritten

    [listen]                               # the QUIC (UDP) address peers dial
    host = "127.0.0.1"
    port = 7451

    [tls]                                  # mutual TLS: one CA for the whole mesh
    ca = "certs/ca.pem"
    cert = "certs/a.pem"
    key = "certs/a.key"

    [[peers]]                              # clusters this one sends its events to
    name = "b"
    address = "127.0.0.1:7452"
    trusted_relay = true                   # b may relay third clusters' chains here

    [link]                                 # tuning shared by every outgoing link
    max_in_flight = 4096
    keepalive_s = 2.0

Relative paths (``data_dir``, the ``tls`` files) are resolved against the directory of
the config file, so a config works from any working directory. Unknown keys are errors:
a misspelt option must not be silently ignored. Every error is a :class:`BridgeConfigError`
(a :class:`~aqe.errors.ConfigError`) whose message starts with the file and the field,
e.g. ``ops/bridge/a.toml: peers[1].address: expected host:port, got '127.0.0.1'``.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from aqe.bridge._nats import redact_urls
from aqe.errors import BridgeConfigError

if TYPE_CHECKING:
    from aqe.log.streams import StreamSpec

__all__ = [
    "DEFAULT_STREAMS",
    "BridgeConfig",
    "LinkTuning",
    "ListenConfig",
    "PeerConfig",
    "TlsConfig",
    "load_config",
    "parse_config",
]

DEFAULT_STREAMS: Final = ("AQE_TESTS", "AQE_PATTERNS", "AQE_LEARNING")
"""The streams a bridge replicates when its config names none."""

STATUS_FILE: Final = "status.json"

_NAME_RE: Final = re.compile(r"[A-Za-z0-9_-]+")
_NATS_SCHEMES: Final = frozenset({"nats", "tls", "ws", "wss"})
_MAX_PARTITIONS: Final = 256
# JetStream takes at most 1,000 messages in one atomic batch; one is the chain's marker.
_MAX_BATCH: Final = 999


@dataclass(frozen=True)
class ListenConfig:
    """Where this node's QUIC server listens (UDP). Port 0 picks a free port."""

    host: str
    port: int


@dataclass(frozen=True)
class TlsConfig:
    """Mutual TLS files (absolute paths): the mesh's CA, this cluster's cert and key."""

    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class PeerConfig:
    """A cluster this node sends its streams to.

    Attributes:
        name: The peer's cluster name; its certificate must be issued to this name.
        host: Address to dial.
        port: UDP port of the peer's QUIC server.
        server_name: Name the peer's certificate must carry (SNI and host name check);
            the peer's cluster name unless set, which every certificate from
            ``aqe bridge certs`` carries as a DNS name.
        trusted_relay: Whether this cluster stores chains of *other* origins that the
            peer relays (anti-entropy). Without it the peer may only send chains of its
            own origin: its certificate proves who it is, not what others stored.
    """

    name: str
    host: str
    port: int
    server_name: str
    trusted_relay: bool = False

    @property
    def address(self) -> str:
        """``host:port`` (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class LinkTuning:
    """Settings shared by every outgoing link and the inbound side.

    Attributes:
        max_in_flight: Events sent but not yet acknowledged, per link.
        max_batch: Events the target stores per atomic batch, with one marker (1..999).
        keepalive_s: QUIC keepalive (PING) period.
        idle_timeout_s: A connection silent this long is dead (longer than keepalive_s).
        connect_timeout_s: Time allowed for one connection attempt.
        reconnect_min_s: First reconnect delay; doubles per failure ...
        reconnect_max_s: ... up to this.
        gossip_s: Anti-entropy: how often high-water marks are exchanged.
        repair_after_s: How long a chain may lag a peer's marks before it is repaired
            through a relay.
        relay: Whether this node forwards other origins' events to repair a peer's gap.
    """

    max_in_flight: int = 4096
    max_batch: int = 500
    keepalive_s: float = 5.0
    idle_timeout_s: float = 30.0
    connect_timeout_s: float = 5.0
    reconnect_min_s: float = 0.05
    reconnect_max_s: float = 2.0
    gossip_s: float = 1.0
    repair_after_s: float = 3.0
    relay: bool = True


@dataclass(frozen=True)
class BridgeConfig:
    """One bridge node: its cluster, what it listens on, whom it sends to.

    Attributes:
        path: The file this was read from.
        cluster: This cluster's name.
        nats_url: The cluster's NATS server URL(s), comma-separated. Authentication
            and TLS come from the ``AQE_NATS_*`` variables, as for every command
            (credentials written into the URL are moved there; never shown).
        data_dir: Directory for ``status.json`` (absolute).
        streams: Streams replicated in both directions.
        partitions: Chains per (origin, stream): events of one subject stay in order.
        apply_streams: Make the server's streams match ``streams/*.json`` at start
            (otherwise only missing streams are created).
        status_interval_s: Period of the status snapshot.
        listen: The QUIC server's address.
        tls: Certificate files.
        peers: Clusters to send to.
        link: Link tuning.
    """

    path: Path
    cluster: str
    nats_url: str = field(repr=False)  # it may carry credentials
    data_dir: Path
    listen: ListenConfig
    tls: TlsConfig
    streams: tuple[str, ...] = DEFAULT_STREAMS
    partitions: int = 8
    apply_streams: bool = False
    status_interval_s: float = 1.0
    peers: tuple[PeerConfig, ...] = ()
    link: LinkTuning = field(default_factory=LinkTuning)

    @property
    def status_path(self) -> Path:
        """Where the node writes its status snapshot."""
        return self.data_dir / STATUS_FILE

    def peer(self, name: str) -> PeerConfig:
        """The peer called ``name``.

        Raises:
            KeyError: no such peer.
        """
        for peer in self.peers:
            if peer.name == name:
                return peer
        raise KeyError(name)

    @property
    def trusted_relays(self) -> tuple[str, ...]:
        """Peers whose relays of other origins' chains this node stores."""
        return tuple(peer.name for peer in self.peers if peer.trusted_relay)

    def check_files(self) -> None:
        """Check that the TLS files exist (not done by :func:`load_config`, so that
        ``aqe bridge status`` works before certificates are made).

        Raises:
            BridgeConfigError: a file is missing, naming its field.
        """
        for name in ("ca", "cert", "key"):
            file = getattr(self.tls, name)
            if not file.is_file():
                raise BridgeConfigError(self.path, f"tls.{name}", f"no such file: {file}")


class _Table:
    """Typed access to one TOML table that remembers which keys were read."""

    def __init__(self, path: Path, prefix: str, data: Mapping[str, Any]) -> None:
        self.path = path
        self.prefix = prefix
        self.data = data
        self.seen: set[str] = set()

    def where(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def fail(self, key: str, reason: str) -> BridgeConfigError:
        return BridgeConfigError(self.path, self.where(key), reason)

    def raw(self, key: str, default: Any = None, *, required: bool = False) -> Any:
        self.seen.add(key)
        if key not in self.data:
            if required:
                raise self.fail(key, "missing (required)")
            return default
        return self.data[key]

    def string(self, key: str, default: str | None = None, *, required: bool = False) -> str:
        value = self.raw(key, default, required=required)
        if not isinstance(value, str):
            raise self.fail(key, f"expected a string, got {_shown(value)}")
        if not value.strip():
            raise self.fail(key, "must not be empty")
        return value

    def name(self, key: str, *, required: bool = True) -> str:
        value = self.string(key, required=required)
        if not _NAME_RE.fullmatch(value):
            raise self.fail(key, f"{value!r} is not a valid name (letters, digits, '_', '-')")
        if value.lower() == "ca":
            raise self.fail(key, "'ca' is reserved (the CA's files are ca.pem and ca.key)")
        return value

    def integer(
        self, key: str, default: int, low: int, high: int | None = None, *, required: bool = False
    ) -> int:
        value = self.raw(key, default, required=required)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"expected an integer, got {_shown(value)}")
        if value < low or (high is not None and value > high):
            span = f"{low}..{high}" if high is not None else f">= {low}"
            raise self.fail(key, f"must be {span}, got {value}")
        return value

    def seconds(self, key: str, default: float) -> float:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"expected a number of seconds, got {_shown(value)}")
        if not math.isfinite(value) or value <= 0:
            raise self.fail(key, f"must be a positive number of seconds, got {value}")
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {_shown(value)}")
        return value

    def path_value(self, key: str, *, required: bool = True) -> Path:
        value = Path(self.string(key, required=required)).expanduser()
        if not value.is_absolute():
            value = self.path.resolve().parent / value
        return Path(_normalised(value))

    def table(self, key: str, *, required: bool = False) -> _Table:
        value = self.raw(key, {}, required=required)
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a table ([{self.where(key)}]), got {_shown(value)}")
        return _Table(self.path, self.where(key), value)

    def tables(self, key: str) -> list[_Table]:
        value = self.raw(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.fail(key, f"expected an array of tables ([[{key}]]), got {_shown(value)}")
        return [_Table(self.path, f"{self.where(key)}[{i}]", v) for i, v in enumerate(value)]

    def done(self) -> None:
        """Fail on the first key nobody asked for."""
        for key in self.data:
            if key not in self.seen:
                hint = difflib.get_close_matches(key, sorted(self.seen), n=1)
                more = f"; did you mean {hint[0]!r}?" if hint else ""
                known = ", ".join(sorted(self.seen))
                raise self.fail(key, f"unknown key (known: {known}){more}")


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"{type(value).__name__} {value!r}"


def _normalised(path: Path) -> str:
    """``path`` with ``..`` folded (without touching the file system)."""
    return os.path.normpath(path)


def _parse_address(table: _Table, key: str) -> tuple[str, int]:
    text = table.string(key, required=True)
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or (":" in host and "[" not in text):
        raise table.fail(key, f"expected host:port, got {text!r}")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise table.fail(key, f"port must be 1..65535, got {port}")
    return host, port


def _check_nats_url(table: _Table, value: str) -> None:
    urls = [u.strip() for u in value.split(",") if u.strip()]
    if not urls:
        raise table.fail("nats_url", "names no server")
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in _NATS_SCHEMES or not parts.hostname:
            shown = redact_urls(url)
            raise table.fail(
                "nats_url", f"expected nats://host:port (or tls://, ws://, wss://), got {shown!r}"
            )


def _streams(table: _Table, specs: Sequence[StreamSpec] | None) -> tuple[str, ...]:
    value = table.raw("streams", list(DEFAULT_STREAMS))
    if not isinstance(value, list):
        raise table.fail("streams", f"expected an array of stream names, got {_shown(value)}")
    if not value:
        raise table.fail("streams", "names no stream")
    if specs is None:
        from aqe.log.streams import load_stream_specs

        specs = load_stream_specs()
    by_name = {spec.name: spec for spec in specs}
    seen: set[str] = set()
    for i, name in enumerate(value):
        where = f"streams[{i}]"
        if not isinstance(name, str):
            raise table.fail(where, f"expected a stream name, got {_shown(name)}")
        if name in seen:
            raise table.fail(where, f"{name!r} is listed twice")
        spec = by_name.get(name)
        if spec is None:
            raise table.fail(
                where, f"unknown stream {name!r} (streams/*.json define: {', '.join(by_name)})"
            )
        if not spec.allow_atomic:
            raise table.fail(
                where, f"stream {name!r} does not allow atomic publish, which the bridge needs"
            )
        seen.add(name)
    return tuple(value)


def _listen(root: _Table) -> ListenConfig:
    table = root.table("listen", required=True)
    host = table.string("host", required=True)
    port = table.integer("port", 0, 0, 65535, required=True)
    table.done()
    return ListenConfig(host=host.strip("[]"), port=port)


def _tls(root: _Table) -> TlsConfig:
    table = root.table("tls", required=True)
    tls = TlsConfig(
        ca=table.path_value("ca"), cert=table.path_value("cert"), key=table.path_value("key")
    )
    table.done()
    return tls


def _peers(root: _Table, cluster: str) -> tuple[PeerConfig, ...]:
    peers: list[PeerConfig] = []
    first_index: dict[str, int] = {}
    for i, table in enumerate(root.tables("peers")):
        name = table.name("name")
        if name == cluster:
            raise table.fail("name", f"{name!r} is this cluster's own name")
        if name in first_index:
            raise table.fail("name", f"peer {name!r} is already peers[{first_index[name]}]")
        first_index[name] = i
        host, port = _parse_address(table, "address")
        server_name = table.string("server_name", name)
        trusted_relay = table.boolean("trusted_relay", False)
        table.done()
        peers.append(
            PeerConfig(
                name=name,
                host=host,
                port=port,
                server_name=server_name,
                trusted_relay=trusted_relay,
            )
        )
    return tuple(peers)


def _link(root: _Table) -> LinkTuning:
    table = root.table("link")
    d = LinkTuning()
    link = LinkTuning(
        max_in_flight=table.integer("max_in_flight", d.max_in_flight, 1),
        max_batch=table.integer("max_batch", d.max_batch, 1, _MAX_BATCH),
        keepalive_s=table.seconds("keepalive_s", d.keepalive_s),
        idle_timeout_s=table.seconds("idle_timeout_s", d.idle_timeout_s),
        connect_timeout_s=table.seconds("connect_timeout_s", d.connect_timeout_s),
        reconnect_min_s=table.seconds("reconnect_min_s", d.reconnect_min_s),
        reconnect_max_s=table.seconds("reconnect_max_s", d.reconnect_max_s),
        gossip_s=table.seconds("gossip_s", d.gossip_s),
        repair_after_s=table.seconds("repair_after_s", d.repair_after_s),
        relay=table.boolean("relay", d.relay),
    )
    table.done()
    if link.keepalive_s >= link.idle_timeout_s:
        raise table.fail(
            "keepalive_s",
            f"must be shorter than idle_timeout_s ({link.idle_timeout_s}), got {link.keepalive_s}",
        )
    if link.reconnect_max_s < link.reconnect_min_s:
        raise table.fail(
            "reconnect_max_s",
            f"must be at least reconnect_min_s ({link.reconnect_min_s}), "
            f"got {link.reconnect_max_s}",
        )
    return link


def parse_config(
    path: Path, data: Mapping[str, Any], *, specs: Sequence[StreamSpec] | None = None
) -> BridgeConfig:
    """Validate an already parsed TOML document (see :func:`load_config`)."""
    root = _Table(path, "", data)
    cluster = root.name("cluster")
    nats_url = root.string("nats_url", required=True)
    _check_nats_url(root, nats_url)
    config = BridgeConfig(
        path=path,
        cluster=cluster,
        nats_url=nats_url,
        data_dir=root.path_value("data_dir"),
        streams=_streams(root, specs),
        partitions=root.integer("partitions", 8, 1, _MAX_PARTITIONS),
        apply_streams=root.boolean("apply_streams", False),
        status_interval_s=root.seconds("status_interval_s", 1.0),
        listen=_listen(root),
        tls=_tls(root),
        peers=_peers(root, cluster),
        link=_link(root),
    )
    root.done()
    return config


def load_config(path: Path, *, specs: Sequence[StreamSpec] | None = None) -> BridgeConfig:
    """Read and validate a bridge node's TOML config.

    Args:
        path: The config file; relative paths inside it are resolved against its folder.
        specs: Stream definitions to check ``streams`` against; ``streams/*.json`` (via
            :func:`aqe.log.load_stream_specs`) when omitted.

    Returns:
        The validated configuration (TLS files are not checked yet: see
        :meth:`BridgeConfig.check_files`).

    Raises:
        BridgeConfigError: the file cannot be read, is not TOML, or a field is missing,
            of the wrong type, out of range or unknown; the message names file and field.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BridgeConfigError(path, "", "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BridgeConfigError(path, "", f"cannot read: {exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BridgeConfigError(path, "", f"not valid TOML: {exc}") from exc
    return parse_config(path, data, specs=specs)
