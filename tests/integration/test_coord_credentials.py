"""Agents with server-enforced identities: a real nats-server with the generated users.

``write_credentials`` gives each agent a NATS user that may publish only its own
subjects; the server, not aqe, refuses agent a1 writing under a2's subjects, and a1's
own heartbeat, signed registration and reads work with the same grant.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from aqe.config import Settings
from aqe.coordination.agent import AgentRuntime
from aqe.coordination.credentials import AUTH_FILE, write_credentials
from aqe.coordination.voting import generate_keypair, key_book
from aqe.errors import AqeError, ConfigError, PermissionDeniedError
from aqe.events import AgentHeartbeat, AgentRegistered, AgentSuspected
from aqe.log.admin import apply_streams, create_missing_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.server import NatsServerProcess

pytestmark = pytest.mark.nats


def env_of(path: str) -> dict[str, str]:
    lines = Path(path).read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line)


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[NatsServerProcess, dict[str, str]]]:
    """A nats-server whose config includes the generated authorization block."""
    creds = write_credentials(tmp_path / "creds", ["a1", "a2"], coordinators=["mon-1"])
    conf = tmp_path / "creds" / "server.conf"
    conf.write_text(f'include "{AUTH_FILE}"\n')
    server = NatsServerProcess.start_sync(
        tmp_path / "js", log_file=tmp_path / "nats.log", config_file=conf
    )
    try:
        yield server, creds.env_files
    finally:
        server.stop_sync(timeout=5.0)


async def connect_as(
    server: NatsServerProcess, env_files: dict[str, str], user: str
) -> JetStreamEventLog:
    env = {**env_of(env_files[user]), "AQE_NATS_URL": server.url}
    return await JetStreamEventLog.connect(Settings.from_env(env))


def test_credential_files_are_private_and_names_distinct(tmp_path: Path) -> None:
    creds = write_credentials(tmp_path, ["a1"], coordinators=["mon"])
    for path in [creds.auth_file, *creds.env_files.values()]:
        assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600
    assert set(creds.env_files) == {"admin", "a1", "mon"}
    text = (tmp_path / AUTH_FILE).read_text()
    assert '"aqe.agents.agent.a1.>"' in text
    assert "aqe.agents.agent.*.suspected" in text.split('"mon"')[1]
    with pytest.raises(ConfigError, match="already exists"):
        write_credentials(tmp_path, ["a1"])
    with pytest.raises(ConfigError, match="distinct names"):
        write_credentials(tmp_path / "x", ["admin"])


async def test_an_agent_may_publish_only_its_own_subjects(
    secured: tuple[NatsServerProcess, dict[str, str]],
) -> None:
    server, env_files = secured
    admin = await connect_as(server, env_files, "admin")
    a1 = await connect_as(server, env_files, "a1")
    try:
        await apply_streams(admin.connection, admin.specs)
        # What an agent's command does first: look for missing streams (read-only).
        assert await create_missing_streams(a1.connection, a1.specs) == []
        # Its own life: a signed registration and heartbeats, through AgentRuntime.
        pair = generate_keypair()
        agent = AgentRuntime(a1, "a1", "generator", private_key=pair.private_key, interval_s=60)
        registered = await agent.start()
        await agent.stop(retire=False)
        assert registered.seq >= 1
        own = await a1.append(AgentHeartbeat(agent_id="a1", beat=99, session="s"))
        assert own.seq > registered.seq
        # Reads work with the same grant.
        assert (await key_book(a1)).bound == {"a1": pair.public_key}

        # a1 writing a2's heartbeat or registration: the server refuses the publish.
        for forged in (
            AgentHeartbeat(agent_id="a2", beat=1, session="s"),
            AgentRegistered(agent_id="a2", role="admin"),
        ):
            with pytest.raises(AqeError) as refused:
                await a1.append(forged)
            if isinstance(refused.value, PermissionDeniedError):
                assert "aqe.agents.agent.a2." in refused.value.subject
        # Nothing of a2's was stored.
        assert await admin.last("aqe.agents.agent.a2.>") is None
        # Suspecting another agent is a coordinator's grant, not an agent's.
        suspicion = AgentSuspected(agent_id="a2", by="a1", last_beat=0, missed=9)
        with pytest.raises(AqeError):
            await a1.append(suspicion)
        monitor = await connect_as(server, env_files, "mon-1")
        try:
            assert (await monitor.append(suspicion)).seq > own.seq
        finally:
            await monitor.close()
    finally:
        await a1.close()
        await admin.close()
