"""The agent side of membership: register, heartbeat every interval, retire on a clean stop.

An :class:`AgentRuntime` is what a fleet agent (a test generator, a flaky hunter) runs
beside its work. Each process start is a new *session* (a random id); beats count from 1
per session, so every heartbeat is a distinct fact with a distinct content-hash id, and
a restarted agent's beats never collide with, or get deduplicated against, its last
session's. Registration and retirement carry ids derived from the session for the same
reason: re-registering within the server's duplicate window is a new fact, while a
retried append of the same registration stays one message. With a private key the
registration is signed and uses the session as its nonce, which binds the agent's key
on first use and proves it holds the bound key afterwards (:mod:`aqe.coordination.identity`).

Heartbeats are fire-and-forget: one append per interval, and a beat that fails (the
server is failing over) is counted and skipped; the next one is on schedule anyway.
Stopping without retiring (:meth:`AgentRuntime.kill`) is how tests simulate a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import uuid
from typing import TYPE_CHECKING

from aqe import __version__
from aqe.coordination._votekeys import public_key_b64
from aqe.coordination.identity import sign_registration
from aqe.errors import ConfigError, LogUnavailableError
from aqe.events import AgentHeartbeat, AgentRegistered, AgentRetired, AgentStatus, Event
from aqe.log.retry import DEFAULT_UNAVAILABLE_S, while_unavailable

if TYPE_CHECKING:
    from collections.abc import Iterable

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from aqe.log.port import AppendResult, EventLog

__all__ = ["AgentRuntime", "session_event_id"]

_log = logging.getLogger("aqe.coordination.agent")
_STATUSES: tuple[AgentStatus, ...] = ("idle", "busy", "draining")


def session_event_id(kind: str, agent_id: str, session: str) -> str:
    """A deterministic event id for a once-per-session fact (registered, retired).

    Retrying the append keeps it one message; the next session gets another id, so
    the server's duplicate window never swallows a re-registration.
    """
    digest = hashlib.sha256(f"agents|{kind}|{agent_id}|{session}".encode()).hexdigest()
    return digest[:32]


async def append_retrying(
    log: EventLog,
    event: Event,
    *,
    event_id: str | None = None,
    within_s: float = DEFAULT_UNAVAILABLE_S,
) -> AppendResult:
    """Append, retrying ``LogUnavailableError`` with the same event id (exactly once).

    Raises:
        LogUnavailableError: still unavailable after ``within_s`` seconds.
    """
    return await while_unavailable(lambda: log.append(event, event_id=event_id), within_s=within_s)


class AgentRuntime:
    """Keeps one agent registered and heartbeating while it runs.

    Args:
        log: the event log.
        agent_id: the agent's id (any non-empty string).
        role: what the agent does (``generator``, ``flaky-hunter``...).
        capabilities: what it can be given to do.
        private_key: its Ed25519 key: the registration is signed with it and binds
            its public key (for signed votes and proposals). Without one the agent
            registers keyless, which readers accept only while no key is bound to it.
        host: where it runs [default: this host's name].
        version: its software version [default: aqe's].
        interval_s: the heartbeat interval; keep it equal to the coordinators'
            ``FailureDetector.interval_s``.
        session: the session id [default: random per runtime].

    Raises:
        ConfigError: naming the argument that is not usable.
    """

    def __init__(
        self,
        log: EventLog,
        agent_id: str,
        role: str,
        capabilities: Iterable[str] = (),
        *,
        private_key: Ed25519PrivateKey | None = None,
        host: str | None = None,
        version: str | None = None,
        interval_s: float = 1.0,
        session: str | None = None,
    ) -> None:
        if not agent_id:
            raise ConfigError("agent runtime: agent_id cannot be empty")
        if not role:
            raise ConfigError(f"agent {agent_id}: role cannot be empty")
        if not interval_s > 0:
            raise ConfigError(f"agent {agent_id}: interval_s must be > 0, not {interval_s}")
        self.log = log
        self.agent_id = agent_id
        self.role = role
        self.capabilities = tuple(capabilities)
        self.private_key = private_key
        self.public_key = public_key_b64(private_key) if private_key is not None else None
        self.host = host if host is not None else socket.gethostname()
        self.version = version if version is not None else __version__
        self.interval_s = interval_s
        self.session = session or uuid.uuid4().hex[:16]
        self.beat = 0
        """The last beat number sent (0 before the first)."""
        self.failed_beats = 0
        self._status: AgentStatus = "idle"
        self._load = 0.0
        self._task: asyncio.Task[None] | None = None
        # Besides cancelling: asyncio.wait_for before Python 3.12 can swallow a
        # cancellation that races with a completing append, and the loop would go on.
        self._stopping = False

    # -- what the next beat reports ------------------------------------------------

    @property
    def status(self) -> AgentStatus:
        """What the next heartbeat reports: idle, busy or draining."""
        return self._status

    @status.setter
    def status(self, value: AgentStatus) -> None:
        if value not in _STATUSES:
            raise ConfigError(
                f"agent {self.agent_id}: status must be one of {', '.join(_STATUSES)}, "
                f"not {value!r}"
            )
        self._status = value

    @property
    def load(self) -> float:
        """What the next heartbeat reports as load (0 = none; 1 = fully busy)."""
        return self._load

    @load.setter
    def load(self, value: float) -> None:
        if not value >= 0:
            raise ConfigError(f"agent {self.agent_id}: load must be >= 0, not {value}")
        self._load = float(value)

    @property
    def running(self) -> bool:
        """Whether the heartbeat loop is running."""
        return self._task is not None and not self._task.done()

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> AppendResult:
        """Register, send beat 1, and keep beating every ``interval_s``.

        Returns:
            Where the registration landed.

        Raises:
            LogUnavailableError: the registration could not be appended.
        """
        if self.running:
            raise ConfigError(f"agent {self.agent_id} is already running")
        self._stopping = False
        registration = AgentRegistered(
            agent_id=self.agent_id,
            role=self.role,
            capabilities=self.capabilities,
            host=self.host,
            version=self.version,
            public_key=self.public_key,
            nonce=self.session if self.private_key is not None else None,
        )
        if self.private_key is not None:
            registration = sign_registration(registration, self.private_key)
        registered = await append_retrying(
            self.log,
            registration,
            event_id=session_event_id("registered", self.agent_id, self.session),
        )
        await self._beat_once()
        self._task = asyncio.create_task(self._beat_loop(), name=f"heartbeat-{self.agent_id}")
        return registered

    async def heartbeat(self) -> AppendResult:
        """Send the next beat now (the loop keeps its own schedule).

        Raises:
            LogUnavailableError: the beat could not be appended.
        """
        self.beat += 1
        return await self.log.append(
            AgentHeartbeat(
                agent_id=self.agent_id,
                beat=self.beat,
                session=self.session,
                status=self._status,
                load=self._load,
            )
        )

    def kill(self) -> None:
        """Stop beating without retiring, as a crash would (coordinators time it out)."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()

    async def stop(self, *, retire: bool = True, reason: str = "stopped") -> None:
        """Stop beating and, by default, retire (a clean leave).

        Raises:
            LogUnavailableError: the retirement could not be appended.
        """
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if retire:
            await append_retrying(
                self.log,
                AgentRetired(agent_id=self.agent_id, reason=reason),
                event_id=session_event_id("retired", self.agent_id, self.session),
            )

    async def __aenter__(self) -> AgentRuntime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop(reason="stopped" if exc[0] is None else "stopped on error")

    async def _beat_once(self) -> None:
        try:
            await self.heartbeat()
        except LogUnavailableError as exc:
            self.failed_beats += 1
            _log.warning("agent %s: beat %d not sent: %s", self.agent_id, self.beat, exc)

    async def _beat_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time() + self.interval_s
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            if self._stopping:
                return
            await self._beat_once()
            # A fixed rate, not fixed gaps: slow appends must not stretch the interval;
            # beats that fell behind are skipped rather than sent in a burst.
            next_at += self.interval_s
            now = loop.time()
            if next_at < now:
                next_at = now + self.interval_s - (now - next_at) % self.interval_s
