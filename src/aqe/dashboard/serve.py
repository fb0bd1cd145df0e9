"""Running the dashboard: follow the log, serve the app with uvicorn, stop cleanly."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aqe.dashboard.live import LiveView
    from aqe.log.port import EventLog

__all__ = ["serve"]


async def serve(
    log: EventLog,
    projections_root: Path | None,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    bridge_status: Path | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Follow the log and serve the dashboard until cancelled (or SIGINT/SIGTERM).

    Args:
        log: The event log to follow.
        projections_root: Where the projections' snapshots are (the start points).
        host: Address to bind; localhost unless told otherwise.
        port: TCP port (0 picks a free one).
        token: Bearer token that requests which write must carry; None: read-only.
        bridge_status: A bridge node's ``status.json`` to show its links and export
            their lag and round trip.
        on_ready: Called with the base URL once the server listens.
    """
    import uvicorn

    from aqe.dashboard.app import create_app
    from aqe.dashboard.live import FOLLOWED, LiveView
    from aqe.metrics import AqeMetrics, watch_log

    metrics = AqeMetrics()
    live = LiveView(log, projections_root, metrics, bridge_status=bridge_status)
    app = create_app(live, metrics, token=token)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan="off", timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    live.start()
    watcher = asyncio.create_task(watch_log(log, metrics, FOLLOWED))
    bridge = asyncio.create_task(_refresh_bridge(live)) if bridge_status else None
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if serving.done():
                await serving  # start-up failed (port taken): raise its error
                return
            await asyncio.sleep(0.05)
        if on_ready is not None:
            bound = server.servers[0].sockets[0].getsockname()
            on_ready(f"http://{bound[0]}:{bound[1]}/")
        # Shielded: a cancelled serve() asks uvicorn to shut down (below) and waits for
        # it to close its sockets, instead of cancelling it halfway.
        await asyncio.shield(serving)
    finally:
        await live.close()  # open event streams end, so uvicorn stops without waiting
        server.should_exit = True
        for task in (watcher, bridge):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(serving, 5)
        await live.stop()


async def _refresh_bridge(live: LiveView, interval_s: float = 1.0) -> None:
    """Re-read the bridge node's status into the metrics between page updates."""
    from aqe.errors import AqeError

    while True:
        with contextlib.suppress(AqeError):
            live.refresh_bridge()
        await asyncio.sleep(interval_s)
