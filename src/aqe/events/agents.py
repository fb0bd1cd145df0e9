"""Events of the agents domain: who is in the fleet and whether it is alive."""

from __future__ import annotations

from typing import ClassVar, Literal

from aqe.events._base import Event

__all__ = ["AgentHeartbeat", "AgentRegistered", "AgentStatus"]

AgentStatus = Literal["idle", "busy", "draining"]


class AgentRegistered(Event, frozen=True, kw_only=True, tag="agents.agent.registered.v1"):
    """An agent joined the fleet with a role and what it can do."""

    id_field: ClassVar[str] = "agent_id"

    agent_id: str
    role: str
    capabilities: tuple[str, ...] = ()
    host: str | None = None
    version: str | None = None


class AgentHeartbeat(Event, frozen=True, kw_only=True, tag="agents.agent.heartbeat.v1"):
    """An agent reported it is alive; ``beat`` counts up from 1 per agent session."""

    id_field: ClassVar[str] = "agent_id"

    agent_id: str
    beat: int
    status: AgentStatus = "idle"
    load: float = 0.0
