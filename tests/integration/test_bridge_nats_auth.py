"""A bridge node reaches an authenticating nats-server the way every command does.

Real nats-servers that demand a user and password, or a token; a real node
(:class:`~aqe.bridge.node.BridgeNode`, as ``aqe bridge run`` starts it) reading the
``AQE_NATS_*`` settings. Whatever the node logs or writes to ``status.json`` must not
carry the secret, whether it came in the URL or in a variable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from aqe.bridge.certs import create_dev_pki
from aqe.bridge.config import load_config
from aqe.bridge.node import BridgeNode
from aqe.errors import LogUnavailableError
from aqe.server import NatsServerProcess

pytestmark = [pytest.mark.nats, pytest.mark.timeout(120)]

GUARD_S = 60.0
"""Only a failure guard: how long a wait may take before the test gives up."""
PASSWORD = f"pw-{secrets.token_hex(8)}"
TOKEN = f"tok-{secrets.token_hex(8)}"


@pytest.fixture
def auth_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NatsServerProcess]:
    server = NatsServerProcess.start_sync(
        tmp_path / "js", log_file=tmp_path / "nats.log", extra_args=request.param
    )
    try:
        yield server
    finally:
        server.stop_sync(timeout=5.0)


def write_config(tmp_path: Path, nats_url: str) -> Path:
    create_dev_pki(tmp_path / "certs", ["a"])
    path = tmp_path / "a.toml"
    path.write_text(
        'cluster = "a"\n'
        f'nats_url = "{nats_url}"\n'
        'data_dir = "state"\n'
        'streams = ["AQE_TESTS"]\n'
        "status_interval_s = 0.1\n"
        '[listen]\nhost = "127.0.0.1"\nport = 0\n'
        '[tls]\nca = "certs/ca.pem"\ncert = "certs/a.pem"\nkey = "certs/a.key"\n',
        encoding="utf-8",
    )
    return path


async def run_until_running(node: BridgeNode) -> str:
    """Run the node until its status file says ``running``; the file's final text."""
    stop = asyncio.Event()
    task = asyncio.create_task(node.run(stop, handle_signals=False))
    path = node.config.status_path
    try:
        async with asyncio.timeout(GUARD_S):
            while True:
                if task.done():
                    task.result()  # raises why it ended
                with contextlib.suppress(FileNotFoundError, ValueError):
                    if json.loads(path.read_text())["state"] == "running":
                        break
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, GUARD_S)
    return path.read_text()


def host_of(server: NatsServerProcess) -> str:
    return server.url.removeprefix("nats://")


@pytest.mark.parametrize("auth_server", [["--user", "alice", "--pass", PASSWORD]], indirect=True)
async def test_credentials_in_the_url_connect_and_are_never_shown(
    auth_server: NatsServerProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config = load_config(write_config(tmp_path, f"nats://alice:{PASSWORD}@{host_of(auth_server)}"))
    status = await run_until_running(BridgeNode(config, env={}))
    assert PASSWORD not in status
    assert json.loads(status)["nats_url"] == f"nats://***@{host_of(auth_server)}"
    assert json.loads(status)["state"] == "stopped"
    assert "connected to" in caplog.text
    assert PASSWORD not in caplog.text

    # A wrong password is refused by the server, and the refusal shows no password either.
    wrong = load_config(
        write_config(tmp_path, f"nats://alice:not-{PASSWORD}@{host_of(auth_server)}")
    )
    with pytest.raises(LogUnavailableError, match="uthoriz") as info:
        await run_until_running(BridgeNode(wrong, env={}))
    assert PASSWORD not in str(info.value)
    assert PASSWORD not in caplog.text


@pytest.mark.parametrize("auth_server", [["--auth", TOKEN]], indirect=True)
async def test_the_token_variable_is_honoured_and_never_shown(
    auth_server: NatsServerProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config = load_config(write_config(tmp_path, auth_server.url))
    # Without the variable the server refuses the node: the token is what let it in.
    with pytest.raises(LogUnavailableError):
        await run_until_running(BridgeNode(config, env={}))
    status = await run_until_running(BridgeNode(config, env={"AQE_NATS_TOKEN": TOKEN}))
    assert json.loads(status)["state"] == "stopped"
    assert TOKEN not in status
    assert TOKEN not in caplog.text
