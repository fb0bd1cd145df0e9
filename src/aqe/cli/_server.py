"""``aqe server start|stop|status``: the embedded nats-server."""

from __future__ import annotations

import click

from aqe.cli._context import AppContext, console, json_option, pass_app, print_json


@click.group()
def server() -> None:
    """Manage the embedded nats-server (used when no --nats-url is set)."""


@server.command()
@json_option
@pass_app
def start(app: AppContext, as_json: bool) -> None:
    """Start the embedded server, or report the one already running."""
    from aqe.server import EmbeddedServer

    embedded = EmbeddedServer(app.settings.data_dir)
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
    from aqe.server import EmbeddedServer

    stopped = EmbeddedServer(app.settings.data_dir).stop()
    if as_json:
        print_json({"stopped": stopped})
        return
    console().print("stopped" if stopped else "no embedded server was running")


@server.command()
@json_option
@pass_app
def status(app: AppContext, as_json: bool) -> None:
    """Show whether the embedded server runs, where, and its version."""
    from aqe.server import EmbeddedServer

    info = EmbeddedServer(app.settings.data_dir).status()
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
