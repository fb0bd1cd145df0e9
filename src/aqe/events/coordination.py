"""Events of the coordination domain: leases, tasks, topology decisions and votes.

Everything a fleet agrees on is one of these events in the ``AQE_COORD`` stream, so any
reader folding the same prefix of the log reaches the same leader, task owner, topology
and verdict. Sequence numbers do the ordering work:

* a lease's **term** (its fencing token) is the stream sequence of its
  :class:`LeaseAcquired`; writes a leader makes are conditional on the last sequence
  under ``aqe.coord.lease.<group>.*``, so the server itself rejects a deposed leader;
* a task's **claim** is conditional on the task's subjects, so one claim wins;
* the **first vote** per voter in stream order is the one that counts.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec

from aqe.events._base import Event
from aqe.events.runners import TaskOutcome

__all__ = [
    "LeaderCheckpointed",
    "LeaseAcquired",
    "LeaseReleased",
    "LeaseRenewed",
    "ProposalOpened",
    "TaskAbandoned",
    "TaskClaimed",
    "TaskCompleted",
    "TaskSubmitted",
    "Topology",
    "TopologySelected",
    "VoteCast",
    "Voter",
    "VotingMode",
]

Topology = Literal["star", "mesh", "ring", "hierarchical"]
VotingMode = Literal["majority", "quorum", "byzantine"]


# -- leases (leader election) -------------------------------------------------------------


class LeaseAcquired(Event, frozen=True, kw_only=True, tag="coord.lease.acquired.v1"):
    """``holder`` leads ``group``; its term is this event's stream sequence.

    Appended only on condition that the last message under ``aqe.coord.lease.<group>.*``
    is still ``after_seq`` (0 for the first lease): of candidates racing for an expired
    lease exactly one succeeds.
    """

    id_field: ClassVar[str] = "group"

    group: str
    holder: str
    lease_ms: int
    after_seq: int
    """The sequence of the lease message this acquisition replaced (0: none)."""


class LeaseRenewed(Event, frozen=True, kw_only=True, tag="coord.lease.renewed.v1"):
    """The holder of term ``term`` is still alive and extends its lease."""

    id_field: ClassVar[str] = "group"

    group: str
    holder: str
    term: int
    renewal: int
    """Counts up from 1 within a term (keeps renewals' ids distinct)."""
    lease_ms: int


class LeaseReleased(Event, frozen=True, kw_only=True, tag="coord.lease.released.v1"):
    """The holder of ``term`` stepped down; the lease is free at once."""

    id_field: ClassVar[str] = "group"

    group: str
    holder: str
    term: int
    reason: str = ""


class LeaderCheckpointed(Event, frozen=True, kw_only=True, tag="coord.leader.checkpointed.v1"):
    """The leader of ``term`` recorded its ``n``-th checkpoint of work done.

    Appended fenced (conditional on the group's lease subjects), so the server stores
    it only while ``term`` is the group's current lease: a deposed leader's late
    checkpoint is rejected. Lives outside the lease subjects so it does not move them.
    """

    id_field: ClassVar[str] = "group"

    group: str
    holder: str
    term: int
    n: int
    note: str = ""


# -- tasks (dispatch) -----------------------------------------------------------------------


class TaskSubmitted(Event, frozen=True, kw_only=True, tag="coord.task.submitted.v1"):
    """Work for the fleet: a kind (what agent role can do it), a size and parameters."""

    id_field: ClassVar[str] = "task_id"

    task_id: str
    kind: str
    complexity: float = 1.0
    """Relative cost (1.0 = a typical task); the topology selector reads it."""
    params: dict[str, str] = msgspec.field(default_factory=dict)
    submitted_by: str = ""
    payload: str = ""
    """The kind's input as JSON (runner kinds: :class:`aqe.runners.RunnerTask`)."""
    queued: bool = False
    """A runner task: it waits on the work queue of its kind (a :class:`TaskQueued` was
    appended with it); topology dispatchers leave it to the runners."""


class TaskClaimed(Event, frozen=True, kw_only=True, tag="coord.task.claimed.v1"):
    """``agent_id`` owns the task; conditional on the task's subjects, so one claim wins.

    ``epoch`` is the topology epoch (the sequence of the :class:`TopologySelected` in
    force) under which it was claimed; ``attempt`` counts claims after abandonment.
    """

    id_field: ClassVar[str] = "task_id"

    task_id: str
    agent_id: str
    topology: Topology
    epoch: int
    attempt: int = 1
    assigned_by: str | None = None
    """The coordinator or group leader that assigned it (star, hierarchical, ring)."""


class TaskCompleted(Event, frozen=True, kw_only=True, tag="coord.task.completed.v1"):
    """The owner finished the task; ``ok`` False is a task that ran and failed."""

    id_field: ClassVar[str] = "task_id"

    task_id: str
    agent_id: str
    ok: bool = True
    result: str = ""
    duration_ms: float = 0.0
    outcome: TaskOutcome | None = None
    """What a runner saw running it (runner tasks)."""


class TaskAbandoned(Event, frozen=True, kw_only=True, tag="coord.task.abandoned.v1"):
    """The owner is gone (dead, retired) before completing; the task may be claimed again."""

    id_field: ClassVar[str] = "task_id"

    task_id: str
    agent_id: str
    attempt: int
    reason: str = ""


# -- topology ---------------------------------------------------------------------------------


class TopologySelected(Event, frozen=True, kw_only=True, tag="coord.topology.selected.v1"):
    """The fleet dispatches under ``topology`` from now on; the epoch is this event's sequence.

    ``signals`` are the measurements the choice was made from (agent count, task
    complexity, latency, failure rate, ...), ``scores`` each topology's estimated cost,
    ``reasons`` the decision in words.
    """

    id_field: ClassVar[str] = "fleet"

    fleet: str
    topology: Topology
    previous: Topology | None = None
    signals: dict[str, float] = msgspec.field(default_factory=dict)
    scores: dict[str, float] = msgspec.field(default_factory=dict)
    reasons: tuple[str, ...] = ()


# -- voting ------------------------------------------------------------------------------------


class Voter(msgspec.Struct, frozen=True, kw_only=True):
    """One eligible voter and the Ed25519 public key its votes must verify against."""

    agent_id: str
    public_key: str
    """Raw 32-byte Ed25519 public key, base64."""


class ProposalOpened(Event, frozen=True, kw_only=True, tag="coord.proposal.opened.v1"):
    """A question put to a fixed electorate, with the rule that decides it.

    ``majority``: an option backed by more than half of the voters. ``quorum``: once
    ``quorum`` voters have voted, the option with most votes if it is unique.
    ``byzantine``: ``n >= 3f + 1`` voters, an option backed by ``2f + 1`` valid votes.
    """

    id_field: ClassVar[str] = "proposal_id"

    proposal_id: str
    question: str
    options: tuple[str, ...]
    mode: VotingMode
    voters: tuple[Voter, ...]
    quorum: int | None = None
    faulty: int | None = None
    """``f``, the number of Byzantine voters tolerated (byzantine mode)."""
    opened_by: str = ""
    """The proposing agent; ``proposer_key`` must be a key bound to it."""
    proposer_key: str | None = None
    """The proposer's Ed25519 public key (raw, base64) that made ``signature``."""
    signature: str | None = None
    """Ed25519 signature (base64) over ``aqe.coordination.identity.signed_bytes``;
    readers count only proposals signed by their proposer's bound key."""


class VoteCast(Event, frozen=True, kw_only=True, tag="coord.proposal.voted.v1"):
    """``voter`` chose ``choice``; ``signature`` is Ed25519 over the canonical vote bytes."""

    id_field: ClassVar[str] = "proposal_id"

    proposal_id: str
    voter: str
    choice: str
    signature: str
    """base64 of the 64-byte signature over ``aqe.coordination.voting.vote_bytes``."""
