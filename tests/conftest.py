"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aqe.server import LocalCluster, NatsServerProcess

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
