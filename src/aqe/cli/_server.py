"""``aqe server start|stop|status``: the embedded nats-server."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from aqe.app import AppContext
from aqe.cli._context import console, json_option, pass_app, print_json

if TYPE_CHECKING:
    from aqe.server import EmbeddedServer


def _embedded(app: AppContext) -> EmbeddedServer:
    from aqe.server import EmbeddedServer

    return EmbeddedServer(app.settings.data_dir, require_token=app.settings.embedded_token)


@click.group()
def server() -> None:
    """Manage the embedded nats-server (used when no --nats-url is set)."""


@server.command()
@json_option
@pass_app
def start(app: AppContext, as_json: bool) -> None:
    """Start the embedded server, or report the one already running."""
    embedded = _embedded(app)
    url = embedded.ensure_running()
    status = embedded.status()
    if as_json:
        print_json(status.as_dict())
        return
    console().print(f"nats-server running at {url} (pid {status.pid}, store {status.store_dir})")


@server.command()
@json_option
@pass_app
def stop(app: AppContext, as_json: bool) -> None:
    """Stop the embedded server (SIGTERM, then SIGKILL after 5 s)."""
    stopped = _embedded(app).stop()
    if as_json:
        print_json({"stopped": stopped})
        return
    console().print("stopped" if stopped else "no embedded server was running")


@server.command()
@json_option
@pass_app
def status(app: AppContext, as_json: bool) -> None:
    """Show whether the embedded server runs, where, and its version."""
    info = _embedded(app).status()
    if as_json:
        print_json(info.as_dict())
        return
    out = console()
    if not info.running:
        out.print(f"not running (data dir {app.settings.data_dir}); `aqe server start` starts it")
        return
    uptime = f", up {info.uptime_s:.0f} s" if info.uptime_s is not None else ""
    out.print(f"running at {info.url} (pid {info.pid}, nats-server {info.version}{uptime})")
    out.print(f"store: {info.store_dir}")
    out.print(f"log:   {info.log_file}")
    if info.token_file is not None:
        out.print(f"token: {info.token_file} (clients must present it; mode 0600)")
    else:
        out.print("token: none (AQE_EMBEDDED_TOKEN=off: anyone on this machine may connect)")
