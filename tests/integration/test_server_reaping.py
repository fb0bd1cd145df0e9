"""Every nats-server a test stops, kills or fails to start is reaped at once, not left a zombie.

A Go process's main thread shows as a zombie in ``/proc`` while its other threads are
still exiting, and ``waitpid(WNOHANG)`` reports it only once they all have. A stop that
trusted ``/proc`` there left the exit unreaped, and the zombie stayed until pytest
exited (one per stopped server). Each check below repeats the stop a few times: the
window is a few milliseconds wide, and one round alone may miss it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aqe.errors import ServerError
from aqe.server import NatsServerProcess

pytestmark = pytest.mark.nats

ROUNDS = 4


def _our_zombies() -> list[int]:
    """Pids of this process's children that have exited but not been reaped."""
    me = str(os.getpid())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] in {"Z", "X"} and fields[1] == me:
            found.append(int(entry.name))
    return found


def _start(directory: Path, **kwargs: object) -> NatsServerProcess:
    return NatsServerProcess.start_sync(directory, log_file=directory / "nats.log", **kwargs)  # type: ignore[arg-type]


def test_stopped_servers_are_reaped(tmp_path: Path) -> None:
    pids = []
    for i in range(ROUNDS):
        server = _start(tmp_path / f"s{i}")
        pids.append(server.pid)
        assert server.stop_sync(timeout=5.0)
        assert server.returncode is not None, "stop returned before the exit was collected"
    assert not set(_our_zombies()) & set(pids)


def test_killed_servers_are_reaped(tmp_path: Path) -> None:
    pids = []
    for i in range(ROUNDS):
        server = _start(tmp_path / f"k{i}")
        pids.append(server.pid)
        server.kill_sync()
        assert server.returncode == -9
    assert not set(_our_zombies()) & set(pids)


def test_a_server_that_fails_to_start_is_reaped(tmp_path: Path) -> None:
    with _start(tmp_path / "first") as first:
        before = set(_our_zombies())
        for i in range(ROUNDS):
            with pytest.raises(ServerError, match="address already in use"):
                _start(tmp_path / f"second{i}", port=first.port)
        assert set(_our_zombies()) - before == set()


def test_a_server_that_ignores_sigterm_is_killed_and_reaped(tmp_path: Path) -> None:
    stamp = "2026/01/01 00:00:00.000000"
    fake = tmp_path / "fake-nats-server"
    fake.write_text(
        "#!/bin/sh\ntrap '' TERM\n"
        f'echo "[$$] {stamp} [INF]   Version:  2.15.1"\n'
        f'echo "[$$] {stamp} [INF] Listening for client connections on 127.0.0.1:4999"\n'
        f'echo "[$$] {stamp} [INF] Server is ready"\n'
        "exec sleep 60\n"
    )
    fake.chmod(0o755)
    server = _start(tmp_path / "deaf", binary=fake)
    assert server.stop_sync(timeout=0.2)
    assert server.returncode == -9  # SIGTERM ignored (inherited across exec), so SIGKILL
    assert server.pid not in _our_zombies()
