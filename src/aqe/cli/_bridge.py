"""``aqe bridge certs|run|status``: QUIC links that replicate streams between clusters."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import click

from aqe.app import run
from aqe.cli._context import console, json_option, print_json
from aqe.cli._metrics import metrics_port_option, start_metrics

__all__ = ["bridge"]

_LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

_config_option = click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="The node's TOML config (e.g. ops/bridge/a.toml).",
)


@click.group()
def bridge() -> None:
    """Replicate event streams between clusters over QUIC (mutual TLS, 0-RTT).

    Each cluster runs one bridge node (`aqe bridge run`) next to its NATS. A node sends
    the events that originated in its cluster to every configured peer and stores what
    peers send it: exactly once (each copy's Nats-Msg-Id comes from its origin
    coordinates, and each chain's copies are stored with a conditional marker), resumed
    from the target's own marker after any restart, and never sent back where it came
    from. Config fields and the local 3-cluster mesh: ops/bridge/README.md.

    \b
    Examples:
      aqe bridge certs --out ops/bridge/certs a b c
      aqe bridge run --config ops/bridge/a.toml
      aqe bridge status --config ops/bridge/a.toml
      ops/bridge/mesh.sh start        # three nats-servers and three bridge nodes
    """


def _file_state(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


@bridge.command()
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Where the CA and the certificates go (created if missing).",
)
@click.argument("clusters", nargs=-1, required=True, metavar="CLUSTER...")
@click.option(
    "--host",
    "hosts",
    multiple=True,
    metavar="H",
    help="A DNS name or IP address the clusters are reached at (repeatable) "
    "[default: localhost and 127.0.0.1].",
)
@click.option(
    "--days",
    type=click.IntRange(min=1),
    default=825,
    show_default=True,
    help="Validity of newly issued certificates.",
)
@click.option(
    "--force", is_flag=True, help="Issue a new CA and new certificates even if files exist."
)
@json_option
def certs(
    out: Path,
    clusters: tuple[str, ...],
    hosts: tuple[str, ...],
    days: int,
    force: bool,
    as_json: bool,
) -> None:
    """Make a development CA and one certificate per CLUSTER under DIR.

    Writes ca.pem/ca.key and CLUSTER.pem/CLUSTER.key (keys mode 0600). An existing CA
    is reused, so clusters can be added later; an existing cluster certificate is kept
    while it is valid and names the same hosts. Every certificate carries the cluster
    name (its CN, checked by peers) and the --host names.

    This CA is for development and tests: its key sits unencrypted beside the
    certificates. Production deployments bring certificates from their own CA in the
    same layout.

    \b
    Examples:
      aqe bridge certs --out ops/bridge/certs a b c
      aqe bridge certs --out /etc/aqe/bridge --host bridge-a.internal --host 10.0.0.5 a
    """
    from aqe.bridge.certs import create_dev_pki

    candidates = [out / "ca.pem", out / "ca.key"]
    candidates += [out / f"{name}.{ext}" for name in clusters for ext in ("pem", "key")]
    before = {path: _file_state(path) for path in candidates}
    if hosts:
        files = create_dev_pki(out, clusters, hosts=hosts, days=days, overwrite=force)
    else:
        files = create_dev_pki(out, clusters, days=days, overwrite=force)
    written = [path for path in candidates if _file_state(path) != before[path]]
    kept = [path for path in candidates if path not in written]
    warning = (
        "this is a development CA: its private key is stored unencrypted next to the "
        "certificates; do not use it in production"
    )
    if as_json:
        print_json(
            {
                "clusters": {
                    name: {"ca": str(f.ca), "cert": str(f.cert), "key": str(f.key)}
                    for name, f in files.items()
                },
                "written": [str(p) for p in written],
                "kept": [str(p) for p in kept],
                "warning": warning,
            }
        )
    else:
        out_console = console()
        for path in written:
            out_console.print(f"wrote {path}")
        for path in kept:
            out_console.print(f"kept  {path} (still valid)")
    console(stderr=True).print(f"[yellow]warning:[/yellow] {warning}")


@bridge.command("run")
@_config_option
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
    help="How much the node logs (to stderr).",
)
@metrics_port_option
def run_node(config_path: Path, log_level: str, metrics_port: int | None) -> None:
    """Run this cluster's bridge node until SIGTERM or SIGINT (then exit 0).

    Connects to the cluster's NATS (nats_url), prepares the bridged streams, listens for
    peers on the QUIC address [listen] and dials every [[peers]] entry, reconnecting
    with backoff. Logs go to stderr, including a line whenever a link comes up or goes
    down. Every status_interval_s the node rewrites <data_dir>/status.json, which
    `aqe bridge status` reads.

    \b
    Example:
      aqe bridge run --config ops/bridge/a.toml
    """
    from aqe.bridge.config import load_config
    from aqe.bridge.node import BridgeNode

    config = load_config(config_path)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("aqe").setLevel(log_level.upper())
    if metrics_port is not None:
        start_metrics(metrics_port).read_bridge_status(config.status_path)
    run(BridgeNode(config).run())


@bridge.command()
@_config_option
@json_option
@click.pass_context
def status(ctx: click.Context, config_path: Path, as_json: bool) -> None:
    """Show a bridge node's links, lag, sequences and inbound counters.

    Reads <data_dir>/status.json, which the node rewrites every status_interval_s. Per
    outgoing link: up/down, lag in events and in ms (age of the oldest unacknowledged
    event), in flight, events acknowledged, reconnects, 0-RTT resumptions accepted of
    those tried, and the last sent/acknowledged origin sequence per stream. Inbound:
    what was applied per origin and stream. The node counts as stale when it has not
    written for a few intervals, and as dead when its process is gone.

    Exit status: 0 while the node runs and reports, 1 when it is stale, dead, stopped
    or failed. --json prints the snapshot plus a "derived" section (health, per-link
    summaries).

    \b
    Example:
      aqe bridge status --config ops/bridge/a.toml --json
    """
    from aqe.bridge.config import load_config
    from aqe.bridge.status import describe, read_snapshot, render_status

    config = load_config(config_path)
    snapshot = read_snapshot(config.status_path)
    now = time.time()
    described = describe(snapshot, now=now)
    if as_json:
        print_json(described)
    else:
        render_status(described, console(), now=now)
    if not described["derived"]["health"]["ok"]:
        ctx.exit(1)
