"""A nats-server started from a config file (users, permissions), for one test."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from aqe.server import NatsServerProcess


@contextlib.contextmanager
def server_with_config(directory: Path, config: str) -> Iterator[NatsServerProcess]:
    """Start a server on a random port with ``config`` (written under ``directory``)."""
    path = directory / "server.conf"
    path.write_text(config)
    proc = NatsServerProcess.start_sync(
        directory / "js", log_file=directory / "nats.log", config_file=path
    )
    try:
        yield proc
    finally:
        proc.stop_sync()
