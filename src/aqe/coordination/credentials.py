"""Server-enforced agent identities: one NATS user per agent, allowed only its own subjects.

:func:`write_credentials` writes a nats-server ``authorization`` block (one user per
agent, one per coordinator, one admin) and, per user, an env file with
``AQE_NATS_USER`` / ``AQE_NATS_PASSWORD`` that the agent's process loads. The server
then refuses (``Permissions Violation``) any publish outside the grant, so agent ``a1``
cannot write a heartbeat, registration or retirement under ``a2``'s subjects.

What each user may publish (:func:`agent_permissions`):

* an **agent**: ``aqe.agents.agent.<its id>.>`` (register, heartbeat, retire),
  proposals and votes (``aqe.coord.proposal.*.opened|voted``, whose payloads are
  signed and checked by every reader), task claims and completions
  (``aqe.coord.task.*.claimed|completed``), and the read side of JetStream: stream
  info, message gets and ephemeral consumers (``$JS.API`` read calls, ``$JS.FC.>``);
* a **coordinator** (membership monitor, dispatcher, leader candidate), in addition:
  suspicions of any agent (``aqe.agents.agent.*.suspected``), leases and leader
  checkpoints, topology decisions and every task event;
* the **admin**: everything (stream management, ingest, projections).

Everyone may subscribe to ``_INBOX.>`` only: replies and consumer deliveries. Reading
is not restricted by subject (any user may create a consumer on any stream); what is
restricted is who may *write* which fact.

The passwords are random (32 bytes of ``secrets``) and the files are created mode 0600;
the server config holds them in clear, so it must stay as private as a key file.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

import msgspec

from aqe.coordination._votekeys import key_file_stem
from aqe.errors import ConfigError
from aqe.log.subjects import encode_token

__all__ = [
    "AUTH_FILE",
    "Credentials",
    "Permissions",
    "agent_permissions",
    "authorization_block",
    "write_credentials",
]

AUTH_FILE = "nats-auth.conf"

_JS_READ = (
    "$JS.API.INFO",
    "$JS.API.STREAM.INFO.*",
    "$JS.API.STREAM.NAMES",
    "$JS.API.STREAM.MSG.GET.*",
    "$JS.API.DIRECT.GET.>",
    "$JS.API.CONSUMER.CREATE.>",
    "$JS.API.CONSUMER.INFO.>",
    "$JS.API.CONSUMER.DELETE.>",
    "$JS.FC.>",
)
_AGENT_COORD = (
    "aqe.coord.proposal.*.opened",
    "aqe.coord.proposal.*.voted",
    "aqe.coord.task.*.claimed",
    "aqe.coord.task.*.completed",
)
_COORDINATOR = (
    "aqe.agents.agent.*.suspected",
    "aqe.coord.lease.>",
    "aqe.coord.leader.>",
    "aqe.coord.topology.>",
    "aqe.coord.task.>",
)


class Permissions(msgspec.Struct, frozen=True, kw_only=True):
    """What one NATS user may publish and subscribe to (nats-server ``allow`` lists)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...] = ("_INBOX.>",)


class Credentials(msgspec.Struct, frozen=True, kw_only=True):
    """Where :func:`write_credentials` put the server block and each user's env file."""

    auth_file: str
    env_files: dict[str, str]
    """User name to its env file (``AQE_NATS_USER`` and ``AQE_NATS_PASSWORD``)."""


def agent_permissions(agent_id: str, *, coordinator: bool = False) -> Permissions:
    """The grant of agent ``agent_id`` (see the module docstring).

    Raises:
        ConfigError: the agent id is empty.
    """
    if not agent_id:
        raise ConfigError("agent credentials: an agent id cannot be empty")
    own = f"aqe.agents.agent.{encode_token(agent_id)}.>"
    extra = _COORDINATOR if coordinator else ()
    return Permissions(publish=(own, *_AGENT_COORD, *extra, *_JS_READ))


def authorization_block(users: Sequence[tuple[str, str, Permissions | None]]) -> str:
    """A nats-server ``authorization`` block for ``(user, password, permissions)``;
    ``None`` permissions means unrestricted. Values are written as JSON strings, which
    the server's config parser reads as quoted strings."""
    lines = ["authorization {", "  users = ["]
    for user, password, perms in users:
        entry = f"    {{user: {json.dumps(user)}, password: {json.dumps(password)}"
        if perms is not None:
            pub = json.dumps(list(perms.publish))
            sub = json.dumps(list(perms.subscribe))
            entry += f", permissions: {{publish: {{allow: {pub}}}, subscribe: {{allow: {sub}}}}}"
        lines.append(entry + "}")
    lines += ["  ]", "}", ""]
    return "\n".join(lines)


def _write_private(path: Path, text: str, overwrite: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} already exists (use --force to replace it)") from None
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.chmod(path, 0o600)


def write_credentials(
    directory: Path,
    agents: Sequence[str],
    *,
    coordinators: Sequence[str] = (),
    admin: str = "admin",
    overwrite: bool = False,
) -> Credentials:
    """Write ``DIR/nats-auth.conf`` and ``DIR/<user>.env`` for each user (mode 0600).

    Args:
        directory: where to write (created if missing).
        agents: agent ids granted only their own subjects.
        coordinators: agent ids granted the coordinator's subjects as well.
        admin: the name of the unrestricted user.
        overwrite: replace existing files (new passwords for everyone).

    Raises:
        ConfigError: no agents, a name given twice, or a file exists without
            ``overwrite``.
    """
    names = [*agents, *coordinators]
    if not names:
        raise ConfigError("agent credentials: name at least one agent")
    if len({*names, admin}) != len(names) + 1:
        raise ConfigError("agent credentials: every agent and the admin need distinct names")
    directory.mkdir(parents=True, exist_ok=True)
    users: list[tuple[str, str, Permissions | None]] = [(admin, secrets.token_urlsafe(32), None)]
    users += [(a, secrets.token_urlsafe(32), agent_permissions(a)) for a in agents]
    users += [
        (c, secrets.token_urlsafe(32), agent_permissions(c, coordinator=True)) for c in coordinators
    ]
    auth = directory / AUTH_FILE
    _write_private(auth, authorization_block(users), overwrite)
    env_files: dict[str, str] = {}
    for user, password, _ in users:
        path = directory / f"{key_file_stem(user)}.env"
        _write_private(path, f"AQE_NATS_USER={user}\nAQE_NATS_PASSWORD={password}\n", overwrite)
        env_files[user] = str(path)
    return Credentials(auth_file=str(auth), env_files=env_files)
