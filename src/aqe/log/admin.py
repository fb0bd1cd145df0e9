"""Make a server's streams match ``streams/*.json``; list and inspect them.

An adapter module: it talks to JetStream's management API through nats-py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import msgspec
import nats.js.errors
from nats.js.api import (
    ClusterInfo,
    RetentionPolicy,
    StorageType,
    StoreCompression,
    StreamConfig,
)

from aqe.errors import ConfigError
from aqe.log._refusals import refusals_for
from aqe.log.jetstream import _translated
from aqe.log.streams import StreamSpec, diff_specs, replicas_for

if TYPE_CHECKING:
    from nats.aio.client import Client

__all__ = [
    "ReplicaState",
    "StreamChange",
    "StreamState",
    "apply_streams",
    "create_missing_streams",
    "describe_streams",
    "fit_to_server",
]

_NS = 1_000_000_000


class StreamChange(msgspec.Struct, frozen=True, kw_only=True):
    """What ``apply`` did (or would do) to one stream."""

    name: str
    action: Literal["create", "update", "unchanged"]
    diff: dict[str, tuple[Any, Any]]


class ReplicaState(msgspec.Struct, frozen=True, kw_only=True):
    """One replica of a stream on a cluster, as its leader sees it.

    ``lag`` counts the operations the replica is behind the leader; ``current`` says
    whether it has caught up; ``active_s`` is how long ago the leader last heard from
    it. A replica left behind after a partition heals shows here as not current.
    """

    name: str
    leader: bool = False
    current: bool = True
    offline: bool = False
    lag: int = 0
    active_s: float | None = None


class StreamState(msgspec.Struct, frozen=True, kw_only=True):
    """A stream as the server reports it, beside its file definition."""

    name: str
    declared: bool
    exists: bool
    messages: int = 0
    bytes: int = 0
    first_seq: int = 0
    last_seq: int = 0
    consumers: int = 0
    config: dict[str, Any] = msgspec.field(default_factory=dict)
    drift: dict[str, tuple[Any, Any]] = msgspec.field(default_factory=dict)
    replicas: tuple[ReplicaState, ...] = ()
    """Leader first, then its peers; empty on a single server."""


def _to_config(spec: StreamSpec) -> StreamConfig:
    if not isinstance(spec.replicas, int):  # pragma: no cover - fit_to_server resolves it
        raise ValueError(f"stream {spec.name}: replicas not resolved for a server")
    return StreamConfig(
        name=spec.name,
        description=spec.description or None,
        subjects=list(spec.subjects),
        retention=RetentionPolicy(spec.retention),
        storage=StorageType(spec.storage),
        num_replicas=spec.replicas,
        duplicate_window=spec.duplicate_window_s,
        compression=StoreCompression(spec.compression),
        max_age=spec.max_age_s,
        max_bytes=spec.max_bytes,
        max_msg_size=spec.max_msg_size,
        deny_delete=spec.deny_delete,
        deny_purge=spec.deny_purge,
        allow_atomic=spec.allow_atomic,
        allow_msg_ttl=spec.allow_msg_ttl,
        allow_direct=True,
    )


def _comparable(cfg: StreamConfig) -> dict[str, Any]:
    """The live config in StreamSpec's vocabulary, for :func:`diff_specs`."""

    def enum_value(value: Any, default: str) -> str:
        return str(getattr(value, "value", value) or default)

    return {
        "name": cfg.name,
        "subjects": sorted(cfg.subjects or []),
        "description": cfg.description or "",
        "retention": enum_value(cfg.retention, "limits"),
        "storage": enum_value(cfg.storage, "file"),
        "replicas": cfg.num_replicas or 1,
        "duplicate_window_s": float(cfg.duplicate_window or 0),
        "compression": enum_value(cfg.compression, "none"),
        "max_age_s": float(cfg.max_age or 0),
        "max_bytes": cfg.max_bytes if cfg.max_bytes is not None else -1,
        "max_msg_size": cfg.max_msg_size if cfg.max_msg_size is not None else -1,
        "deny_delete": bool(cfg.deny_delete),
        "deny_purge": bool(cfg.deny_purge),
        "allow_atomic": bool(cfg.allow_atomic),
        "allow_msg_ttl": bool(cfg.allow_msg_ttl),
    }


def fit_to_server(nc: Client, specs: Sequence[StreamSpec]) -> list[StreamSpec]:
    """The definitions with replicas resolved for this server (:func:`replicas_for`).

    On a cluster every ``auto`` stream is R3, so losing one node stalls no stream; a
    single server, the embedded one included, gets the same streams at R1.
    """
    # nats-py keeps the server's INFO in a private attribute; "cluster" is set only
    # when the server has a cluster block.
    info: dict[str, Any] = getattr(nc, "_server_info", None) or {}
    clustered = bool(info.get("cluster"))
    return [
        msgspec.structs.replace(s, replicas=replicas_for(s, clustered=clustered)) for s in specs
    ]


async def _live_config(nc: Client, name: str) -> StreamConfig | None:
    js = nc.jetstream()
    with refusals_for(nc).guard(name, api=True), _translated(name):
        try:
            info = await js.stream_info(name)
        except nats.js.errors.NotFoundError:
            return None
    return info.config


async def _put(nc: Client, spec: StreamSpec, *, create: bool) -> None:
    js = nc.jetstream()
    with refusals_for(nc).guard(spec.name, api=True), _translated(spec.name):
        try:
            if create:
                await js.add_stream(_to_config(spec))
            else:
                await js.update_stream(_to_config(spec))
        except nats.js.errors.BadRequestError as exc:
            raise ConfigError(f"server refused stream {spec.name}: {exc.description}") from exc


async def apply_streams(
    nc: Client, specs: Sequence[StreamSpec], *, dry_run: bool = False
) -> list[StreamChange]:
    """Create missing streams and update drifted ones; report every stream.

    Raises:
        ConfigError: the server refused a definition (for example a change of
            storage type, which JetStream cannot apply in place).
    """
    changes: list[StreamChange] = []
    for spec in fit_to_server(nc, specs):
        live = await _live_config(nc, spec.name)
        diff = diff_specs(spec, None if live is None else _comparable(live))
        action: Literal["create", "update", "unchanged"]
        action = "create" if live is None else ("update" if diff else "unchanged")
        if not dry_run and action != "unchanged":
            await _put(nc, spec, create=action == "create")
        changes.append(StreamChange(name=spec.name, action=action, diff=diff))
    return changes


async def create_missing_streams(nc: Client, specs: Sequence[StreamSpec]) -> list[str]:
    """Create declared streams that do not exist yet; never touch existing ones.

    Returns:
        The names of the streams created.
    """
    created: list[str] = []
    for spec in fit_to_server(nc, specs):
        if await _live_config(nc, spec.name) is None:
            await _put(nc, spec, create=True)
            created.append(spec.name)
    return created


async def describe_streams(nc: Client, specs: Sequence[StreamSpec]) -> list[StreamState]:
    """Every declared stream plus any other stream on the server, with state and drift."""
    js = nc.jetstream()
    declared = {s.name: s for s in fit_to_server(nc, specs)}
    with refusals_for(nc).guard("streams", api=True), _translated("$JS.API.STREAM.LIST"):
        infos = await js.streams_info()
    live = {str(i.config.name): i for i in infos}
    out: list[StreamState] = []
    for name in sorted(set(declared) | set(live)):
        info = live.get(name)
        spec = declared.get(name)
        if info is None:
            out.append(StreamState(name=name, declared=True, exists=False))
            continue
        comparable = _comparable(info.config)
        drift = diff_specs(spec, comparable) if spec else {}
        state = info.state
        out.append(
            StreamState(
                name=name,
                declared=spec is not None,
                exists=True,
                messages=state.messages,
                bytes=state.bytes,
                first_seq=state.first_seq,
                last_seq=state.last_seq,
                consumers=state.consumer_count,
                config=comparable,
                drift=drift,
                replicas=_replicas(info.cluster),
            )
        )
    return out


def _replicas(cluster: ClusterInfo | None) -> tuple[ReplicaState, ...]:
    """The leader and its peers from a stream's cluster info (empty off a cluster)."""
    if cluster is None or not cluster.leader:
        return ()
    leader = ReplicaState(name=cluster.leader, leader=True, active_s=0.0)
    peers = [
        ReplicaState(
            name=peer.name or "?",
            current=bool(peer.current),
            offline=bool(peer.offline),
            lag=int(peer.lag or 0),
            active_s=peer.active / _NS if peer.active is not None else None,
        )
        for peer in cluster.replicas or []
    ]
    return (leader, *sorted(peers, key=lambda r: r.name))
