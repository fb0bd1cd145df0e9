"""``aqe serve``: the live dashboard and Prometheus metrics over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import click

from aqe.app import AppContext, open_log, projections_root, run
from aqe.cli._context import console, pass_app


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind (localhost only unless told).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="TCP port (0 picks one).",
)
@click.option(
    "--token",
    envvar="AQE_SERVE_TOKEN",
    help="Bearer token that any request which writes must carry [env AQE_SERVE_TOKEN]; "
    "without it the dashboard is read-only.",
)
@click.option(
    "--bridge-status",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A bridge node's status.json: show its links and export their lag and RTT.",
)
@pass_app
def serve(
    app: AppContext, host: str, port: int, token: str | None, bridge_status: Path | None
) -> None:
    """Serve the live dashboard (SSE-updated) and /metrics until Ctrl-C.

    The page shows the report's views and the fleet, updated within a second of each
    event by server-sent events from a JetStream consumer; /metrics serves Prometheus
    metrics (events appended and folded per stream, consumer lag, checkpoint age, dead
    letters, workflow instances by state, bridge lag and RTT). Read-only unless --token.
    """
    from aqe.dashboard import serve as serve_dashboard

    def ready(url: str) -> None:
        mode = "read-only" if token is None else "writes need the token"
        console(stderr=True).print(
            f"serving {url} ({mode}); metrics at {url}metrics; Ctrl-C stops", markup=False
        )

    async def go() -> None:
        async with open_log(app) as log:
            task = asyncio.ensure_future(
                serve_dashboard(
                    log,
                    projections_root(app),
                    host=host,
                    port=port,
                    token=token,
                    bridge_status=bridge_status,
                    on_ready=ready,
                )
            )
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, task.cancel)
            with contextlib.suppress(asyncio.CancelledError):
                await task

    run(go())
