"""Reading a bridge node's status snapshot, judging it, and rendering it for people.

A running node (:mod:`aqe.bridge.node`) replaces ``<data_dir>/status.json`` every
``status_interval_s``. This module reads it back and adds what a reader wants to know:

* health: ``running``; ``stale`` (no update for :data:`STALE_INTERVALS` intervals
  plus a second: the process hangs or starves); ``dead`` (the process is gone without
  a clean stop: killed or crashed); ``stopped`` (a clean exit) or ``failed`` (it gave
  up, with the error);
* per outgoing link: connected, lag in events and in ms (age of the oldest
  unacknowledged event), in flight, last sent and acknowledged origin sequence per
  stream, reconnects, 0-RTT resumptions offered and accepted, the last error;
* inbound: per origin and stream, events applied, duplicates skipped, gaps, conflicts
  (and, with ``--json``, commit retries).

:func:`describe` returns all of it as one JSON-able dict (the snapshot plus a
``derived`` section), which ``aqe bridge status --json`` prints and
:func:`render_status` draws as rich tables.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import msgspec

from aqe.errors import BridgeError
from aqe.server._pids import pid_alive as _pid_alive

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

__all__ = [
    "SNAPSHOT_VERSION",
    "STALE_INTERVALS",
    "Health",
    "InboundView",
    "LinkView",
    "assess",
    "describe",
    "inbound_views",
    "link_views",
    "pid_alive",
    "read_snapshot",
    "render_status",
    "stale_after_s",
    "write_snapshot",
]

SNAPSHOT_VERSION: Final = 1
"""Version of the ``status.json`` layout written by :class:`aqe.bridge.node.BridgeNode`."""

STALE_INTERVALS: Final = 3
"""Missed status intervals after which a running node counts as stale."""
_STALE_SLACK_S: Final = 1.0  # a busy machine delays a write now and then


def stale_after_s(interval_s: float) -> float:
    """Seconds without an update after which a node with this interval is stale."""
    return STALE_INTERVALS * interval_s + _STALE_SLACK_S


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (a zombie counts as dead).

    The node is not our child, so nothing is reaped: this is the server package's
    check with ``reap=False``.
    """
    return _pid_alive(pid, reap=False)


def write_snapshot(path: Path, snapshot: Mapping[str, Any]) -> None:
    """Replace ``path`` with ``snapshot`` as JSON: a temporary file, then :func:`os.replace`,
    so a reader sees the previous snapshot or the new one, never a part of one.

    Raises:
        BridgeError: the file cannot be written (the message names it).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(msgspec.json.format(msgspec.json.encode(snapshot)) + b"\n")
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise BridgeError(f"{path}: cannot write the bridge status: {exc}") from exc


def read_snapshot(path: Path) -> dict[str, Any]:
    """The snapshot in ``path``.

    Raises:
        BridgeError: there is none (the node never ran with this data_dir), or it is
            not a status snapshot; the message names the file.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BridgeError(
            f"{path}: no bridge status yet (has `aqe bridge run` been started with this config?)"
        ) from None
    except OSError as exc:
        raise BridgeError(f"{path}: cannot read the bridge status: {exc}") from exc
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise BridgeError(f"{path}: not a bridge status snapshot: {exc}") from exc
    if not isinstance(value, dict) or not {"cluster", "pid", "updated_at"} <= value.keys():
        raise BridgeError(f"{path}: not a bridge status snapshot (cluster, pid, updated_at)")
    return value


@dataclass(frozen=True)
class Health:
    """Whether the node that wrote a snapshot is alive and current.

    Attributes:
        state: ``running``, ``stale``, ``dead``, ``stopped`` or ``failed``.
        age_s: Seconds since the snapshot was written.
        reason: One sentence for people.
    """

    state: str
    age_s: float
    reason: str

    @property
    def ok(self) -> bool:
        """The node runs and reports on time."""
        return self.state == "running"


def assess(
    snapshot: Mapping[str, Any],
    *,
    now: float,
    alive: Callable[[int], bool] = pid_alive,
    hostname: str | None = None,
) -> Health:
    """Judge a snapshot: is its node running, stale, dead, stopped or failed?

    Args:
        snapshot: A status snapshot.
        now: The current time (seconds since the epoch).
        alive: Tells whether a pid runs (only asked when the snapshot was written on
            this host).
        hostname: This host's name; :func:`socket.gethostname` when omitted.
    """
    updated = float(snapshot["updated_at"])
    age = max(0.0, now - updated)
    interval = float(snapshot.get("status_interval_s") or 1.0)
    pid = int(snapshot["pid"])
    state = snapshot.get("state", "running")
    when = _clock_time(updated)
    if state == "stopped":
        return Health("stopped", age, f"stopped cleanly at {when}")
    if state == "failed":
        return Health(
            "failed", age, f"failed at {when}: {snapshot.get('error') or 'unknown error'}"
        )
    here = hostname if hostname is not None else socket.gethostname()
    written_here = snapshot.get("host") in (None, here)
    if written_here and not alive(pid):
        return Health(
            "dead", age, f"process {pid} is gone without a clean stop (last update at {when})"
        )
    limit = stale_after_s(interval)
    if age > limit:
        return Health(
            "stale",
            age,
            f"no update for {age:.1f} s (written every {interval:g} s): "
            f"process {pid} hangs or is starved",
        )
    where = "" if written_here else f" on {snapshot.get('host')}"
    return Health("running", age, f"process {pid}{where} updated {age:.1f} s ago")


@dataclass(frozen=True)
class LinkView:
    """One outgoing link, summarised from its :meth:`SourceLink.stats` dict."""

    peer: str
    address: str
    connected: bool
    lag_events: int
    lag_ms: float
    in_flight: int
    events_acked: int
    reconnects: int
    zero_rtt_attempts: int
    zero_rtt_accepted: int
    relays_active: int
    last_error: str
    sent_seq: dict[str, int] = field(default_factory=dict)
    """Per stream: the highest origin sequence sent."""
    acked_seq: dict[str, int] = field(default_factory=dict)
    """Per stream: the highest origin sequence the peer acknowledged."""


def _chain_parts(key: str) -> tuple[str, str]:
    """``(origin, stream)`` of a chain key ``origin/stream/partition``."""
    parts = key.split("/")
    return (parts[0], parts[1]) if len(parts) >= 2 else (key, "")


def link_views(snapshot: Mapping[str, Any]) -> list[LinkView]:
    """Every outgoing link of the snapshot, sorted by peer."""
    views: list[LinkView] = []
    for peer, stats in sorted((snapshot.get("links") or {}).items()):
        totals = stats.get("totals") or {}
        transport = stats.get("transport") or {}
        sent: dict[str, int] = {}
        acked: dict[str, int] = {}
        for key, chain in (stats.get("chains") or {}).items():
            _, stream = _chain_parts(key)
            sent[stream] = max(sent.get(stream, 0), int(chain.get("sent_seq", 0)))
            acked[stream] = max(acked.get(stream, 0), int(chain.get("acked_seq", 0)))
        views.append(
            LinkView(
                peer=peer,
                address=str(stats.get("address", "")),
                connected=bool(stats.get("connected")),
                lag_events=int(totals.get("lag_events", 0)),
                lag_ms=float(totals.get("lag_ms", 0.0)),
                in_flight=int(totals.get("in_flight", 0)),
                events_acked=int(totals.get("events_acked", 0)),
                reconnects=int(stats.get("reconnects", 0)),
                zero_rtt_attempts=int(transport.get("zero_rtt_attempts", 0)),
                zero_rtt_accepted=int(transport.get("zero_rtt_accepted", 0)),
                relays_active=len((stats.get("relays") or {}).get("active") or ()),
                last_error=str(stats.get("last_error") or ""),
                sent_seq=dict(sorted(sent.items())),
                acked_seq=dict(sorted(acked.items())),
            )
        )
    return views


@dataclass(frozen=True)
class InboundView:
    """What this node applied of one origin's stream (all partitions)."""

    origin: str
    stream: str
    applied_seq: int
    events: int
    duplicates_skipped: int
    gaps: int
    conflicts: int
    commit_retries: int
    """Batches sent again after no commit reply came in time (not duplicates)."""
    last_applied_at: float | None
    """Seconds since the epoch; ``None`` when nothing was applied since the start."""
    via: tuple[str, ...]
    """Peers the copies came from."""


def inbound_views(snapshot: Mapping[str, Any]) -> list[InboundView]:
    """The inbound side grouped by (origin, stream), sorted."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for key, chain in ((snapshot.get("inbound") or {}).get("chains") or {}).items():
        groups.setdefault(_chain_parts(key), []).append(chain)
    views: list[InboundView] = []
    for (origin, stream), chains in sorted(groups.items()):
        last_ns = max(int(c.get("last_applied_at_ns", 0)) for c in chains)
        views.append(
            InboundView(
                origin=origin,
                stream=stream,
                applied_seq=max(int(c.get("applied_seq", 0)) for c in chains),
                events=sum(int(c.get("events", 0)) for c in chains),
                duplicates_skipped=sum(int(c.get("duplicates_skipped", 0)) for c in chains),
                gaps=sum(int(c.get("gaps", 0)) for c in chains),
                conflicts=sum(int(c.get("conflicts", 0)) for c in chains),
                commit_retries=sum(int(c.get("commit_retries", 0)) for c in chains),
                last_applied_at=last_ns / 1e9 if last_ns else None,
                via=tuple(sorted({str(c["peer"]) for c in chains if c.get("peer")})),
            )
        )
    return views


def describe(
    snapshot: Mapping[str, Any],
    *,
    now: float,
    alive: Callable[[int], bool] = pid_alive,
    hostname: str | None = None,
) -> dict[str, Any]:
    """The snapshot plus ``derived``: health and the per-link and inbound summaries."""
    health = assess(snapshot, now=now, alive=alive, hostname=hostname)
    links = link_views(snapshot)
    return {
        **snapshot,
        "derived": {
            "health": {**asdict(health), "ok": health.ok},
            "links": {view.peer: asdict(view) for view in links},
            "links_connected": sum(view.connected for view in links),
            "links_total": len(links),
            "inbound": [asdict(view) for view in inbound_views(snapshot)],
        },
    }


def _clock_time(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s).astimezone().isoformat(timespec="seconds")


def _ago(epoch_s: float | None, now: float) -> str:
    if epoch_s is None:
        return "-"
    return f"{max(0.0, now - epoch_s):.1f} s ago"


_HEALTH_STYLE: Final = {
    "running": "green",
    "stale": "yellow",
    "dead": "red",
    "failed": "red",
    "stopped": "dim",
}


def _last_error(view: LinkView) -> str:
    from rich.markup import escape

    if not view.last_error:
        return "-"
    # A link that is up again still shows why it last went down, dimmed.
    return f"[dim]{escape(view.last_error)}[/dim]" if view.connected else escape(view.last_error)


def render_status(described: Mapping[str, Any], console: Console, *, now: float) -> None:
    """Draw :func:`describe`'s result as a headline and rich tables."""
    from rich.table import Table

    derived = described["derived"]
    health = derived["health"]
    style = _HEALTH_STYLE.get(health["state"], "bold")
    listen = described.get("listen") or {}
    console.print(
        f"[bold]bridge {described['cluster']}[/bold]  [{style}]{health['state']}[/{style}]"
        f"  {health['reason']}"
    )
    console.print(
        f"  listening on {listen.get('host')}:{listen.get('port')}, "
        f"nats {described.get('nats_url')}, "
        f"links {derived['links_connected']}/{derived['links_total']} connected"
    )
    console.print(f"  up since {_clock_time(float(described.get('started_at') or 0.0))}")
    if described.get("error"):
        console.print(f"  [red]error:[/red] {described['error']}")

    links = [LinkView(**view) for view in derived["links"].values()]
    table = _table(
        "outgoing links",
        "lag: events not yet acknowledged; lag ms: age of the oldest; "
        "0-RTT: resumptions accepted/tried",
        ("peer", "link"),
        ("lag", "lag ms", "in flight", "acked", "reconn", "0-RTT"),
    )
    for view in links:
        table.add_row(
            f"{view.peer} [dim]{view.address}[/dim]",
            "[green]up[/green]" if view.connected else "[red]down[/red]",
            str(view.lag_events),
            f"{view.lag_ms:.1f}",
            str(view.in_flight),
            str(view.events_acked),
            str(view.reconnects),
            f"{view.zero_rtt_accepted}/{view.zero_rtt_attempts}",
        )
    console.print(table if links else "  no outgoing links (no \\[\\[peers]] configured)")
    for view in links:
        if view.relays_active:
            console.print(f"  {view.peer}: relaying {view.relays_active} chain(s) to repair gaps")
        if view.last_error:
            console.print(f"  {view.peer}: last error: {_last_error(view)}")

    if links:
        seqs = Table("peer", "stream", "last sent seq", "last acked seq", title="sequences")
        seqs.title_justify = "left"
        for view in links:
            for stream in sorted(view.sent_seq.keys() | view.acked_seq.keys()):
                seqs.add_row(
                    view.peer,
                    stream,
                    str(view.sent_seq.get(stream, 0)),
                    str(view.acked_seq.get(stream, 0)),
                )
        console.print(seqs)

    inbound = derived["inbound"]
    server = described.get("server") or {}
    console.print(
        f"inbound connections: {server.get('connections', 0)} accepted "
        f"({server.get('zero_rtt_accepted', 0)} with 0-RTT), {server.get('refused', 0)} "
        f"refused; {server.get('streams_opened', 0)} streams"
    )
    if inbound:
        table = _table(
            "inbound",
            "applied: origin sequence; dups: duplicates skipped; races: conditional "
            "appends lost to another writer of the chain; last: last applied",
            ("origin", "stream"),
            ("applied", "events", "dups", "gaps", "races", "last"),
        )
        for view in inbound:
            via = [peer for peer in view["via"] if peer != view["origin"]]
            origin = view["origin"] + (f" [dim]via {', '.join(via)}[/dim]" if via else "")
            table.add_row(
                origin,
                view["stream"],
                str(view["applied_seq"]),
                str(view["events"]),
                str(view["duplicates_skipped"]),
                str(view["gaps"]),
                str(view["conflicts"]),
                _ago(view["last_applied_at"], now),
            )
        console.print(table)


def _table(title: str, caption: str, labels: tuple[str, ...], numbers: tuple[str, ...]) -> Table:
    """A status table: left-aligned label columns, then right-aligned number columns."""
    from rich.table import Table

    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    for column in labels:
        table.add_column(column, no_wrap=True)
    for column in numbers:
        table.add_column(column, justify="right", no_wrap=True)
    return table
