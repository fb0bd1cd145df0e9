"""Events of the agents domain: who is in the fleet and whether it is alive."""

from __future__ import annotations

from typing import ClassVar, Literal

from aqe.events._base import Event

__all__ = [
    "AgentHeartbeat",
    "AgentRegistered",
    "AgentRetired",
    "AgentStatus",
    "AgentSuspected",
]

AgentStatus = Literal["idle", "busy", "draining"]


class AgentRegistered(Event, frozen=True, kw_only=True, tag="agents.agent.registered.v1"):
    """An agent joined the fleet with a role and what it can do.

    A signed registration binds or rotates the agent's key; readers refuse one that is
    not signed by the key bound to the agent (rules: :mod:`aqe.coordination.identity`).
    """

    id_field: ClassVar[str] = "agent_id"

    agent_id: str
    role: str
    capabilities: tuple[str, ...] = ()
    host: str | None = None
    version: str | None = None
    public_key: str | None = None
    """The agent's Ed25519 public key (raw 32 bytes, base64), for signed votes."""
    nonce: str | None = None
    """Fresh per registration, so a signed registration cannot be replayed."""
    signature: str | None = None
    """Ed25519 signature (base64) over ``aqe.coordination.identity.signed_bytes``: by the
    agent's bound key, or by ``public_key`` itself for the registration that binds it."""


class AgentHeartbeat(Event, frozen=True, kw_only=True, tag="agents.agent.heartbeat.v1"):
    """An agent reported it is alive; ``beat`` counts up from 1 per agent session."""

    id_field: ClassVar[str] = "agent_id"

    agent_id: str
    beat: int
    session: str | None = None
    """Tells a restarted agent's beats apart from its last session's (and their ids)."""
    status: AgentStatus = "idle"
    load: float = 0.0


class AgentRetired(Event, frozen=True, kw_only=True, tag="agents.agent.retired.v1"):
    """An agent left the fleet on purpose (or was retired by an operator)."""

    id_field: ClassVar[str] = "agent_id"

    agent_id: str
    reason: str = ""


class AgentSuspected(Event, frozen=True, kw_only=True, tag="agents.agent.suspected.v1"):
    """A coordinator saw an agent miss heartbeats and tells the others (gossip).

    ``last_beat`` is the last heartbeat number the coordinator had seen; a later
    heartbeat from the agent refutes the suspicion.
    """

    id_field: ClassVar[str] = "agent_id"

    agent_id: str
    by: str
    last_beat: int
    missed: int
