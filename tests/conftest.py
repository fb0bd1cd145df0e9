"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from aqe.server import LocalCluster, NatsServerProcess

if TYPE_CHECKING:
    from nats.aio.client import Client

# --- nats-server -------------------------------------------------------------------------
# One real nats-server per test, on a free port, with JetStream storing under tmp_path.
# Logs go to tmp_path/"nats.log"; start-up failures raise ServerError with the log's tail.


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServerProcess]:
    """A fresh nats-server with JetStream, stopped (SIGTERM, then SIGKILL) on teardown."""
    server = NatsServerProcess.start_sync(tmp_path / "js", log_file=tmp_path / "nats.log")
    try:
        yield server
    finally:
        server.stop_sync(timeout=5.0)


@pytest.fixture
def nats_url(nats_server: NatsServerProcess) -> str:
    """The client URL of :func:`nats_server`."""
    return nats_server.url


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    """A client of :func:`nats_url` with every stream of ``streams/`` applied; closed after."""
    import nats

    from aqe.log import load_stream_specs
    from aqe.log.admin import apply_streams

    client = await nats.connect(nats_url)
    try:
        await apply_streams(client, load_stream_specs())
        yield client
    finally:
        await client.close()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A fresh 3-node JetStream cluster (ops/cluster layout on free ports), stopped after.

    ``nats_cluster.urls`` lists every node; ``kill(name)`` / ``restart(name)`` crash and
    revive one; ``await stream_leader("AQE_COORD")`` names the stream's Raft leader.
    Logs are ``tmp_path/cluster/nN.log``.
    """
    cluster = LocalCluster.start_sync(tmp_path / "cluster")
    try:
        yield cluster
    finally:
        cluster.stop_sync()
