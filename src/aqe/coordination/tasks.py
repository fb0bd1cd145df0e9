"""Tasks as an aggregate: the board every dispatcher reads, and the appends that change it.

A task lives on the subjects ``aqe.coord.task.<id>.*`` (submitted, claimed, completed,
abandoned). :class:`TaskBoard` folds them, with no I/O, clock or randomness, into each
task's state and the numbers the topology selector measures (claim latency from the
server timestamps of the task's submission to its claim, failures, who assigned what).

The one rule that makes dispatch exactly-once under every topology is in
:func:`claim_task`: a claim is appended on condition that the last message under the
task's subjects is still the one the claimer saw (the :class:`TaskSubmitted`, or the
:class:`TaskAbandoned` for a re-claim). Of any number of claimers, whatever topology
they belong to, the server stores one claim per attempt; the others get
``ConcurrencyError`` and move on. An agent runs a task only after its own claim is
stored, and :func:`complete_task` is conditional on that claim still being the task's
last message, so a task has at most one completion too.
"""

from __future__ import annotations

import bisect
import math
import uuid
from collections.abc import Iterable, Sequence
from typing import Literal

import msgspec

from aqe.errors import CommandRejectedError, ConcurrencyError
from aqe.events import (
    Envelope,
    Event,
    TaskAbandoned,
    TaskClaimed,
    TaskCompleted,
    TaskOutcome,
    TaskParked,
    TaskSubmitted,
    Topology,
)
from aqe.log.port import AppendResult, EventLog, NewEvent
from aqe.log.retry import DEFAULT_UNAVAILABLE_S, append_conditional
from aqe.log.subjects import encode_token

__all__ = [
    "COORD_STREAM",
    "TASK_SUBJECTS",
    "UNAVAILABLE_S",
    "Claim",
    "ClaimSample",
    "OutcomeSample",
    "TaskBoard",
    "TaskEntry",
    "TaskStatus",
    "abandon_agent",
    "abandon_task",
    "claim_task",
    "complete_task",
    "fold_board",
    "new_task_id",
    "percentile",
    "read_board",
    "submit_task",
    "submit_tasks",
    "task_filter",
]

COORD_STREAM = "AQE_COORD"
TASK_SUBJECTS = "aqe.coord.task.>"
"""Every task message; the board folds these."""

TaskStatus = Literal["pending", "claimed", "completed", "parked"]

UNAVAILABLE_S = DEFAULT_UNAVAILABLE_S
"""How long an append is retried while the log is unavailable (a stream leader failover
takes a few seconds); retries reuse the message id, so a retry is never a second fact."""


def task_filter(task_id: str) -> str:
    """The subject filter covering every message of one task."""
    return f"aqe.coord.task.{encode_token(task_id)}.*"


def new_task_id(prefix: str = "t") -> str:
    """A fresh, subject-safe task id."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` percentile (0 < q <= 1) of ``values``; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q * len(ordered) - 1e-9)))
    return float(ordered[rank - 1])


# -- the fold -----------------------------------------------------------------------------


class TaskEntry(msgspec.Struct, kw_only=True):
    """One task as the log says it is now."""

    task_id: str
    kind: str = ""
    complexity: float = 1.0
    params: dict[str, str] = msgspec.field(default_factory=dict)
    payload: str = ""
    queued: bool = False
    """A runner task: runners pull it from its kind's work queue, dispatchers leave it."""
    submitted_seq: int = 0
    submitted_ns: int = 0
    status: TaskStatus = "pending"
    last_seq: int = 0
    """The last stream sequence under the task's subjects: what a claim is conditional on."""
    pending_since_ns: int = 0
    """Server time the task became claimable (submitted, or abandoned for a re-claim)."""
    attempt: int = 0
    """Claims stored so far; the next claim is ``attempt + 1``."""
    agent: str | None = None
    topology: Topology | None = None
    epoch: int = 0
    assigned_by: str | None = None
    claim_seq: int = 0
    claimed_ns: int = 0
    completed_ns: int = 0
    ok: bool | None = None
    completions: int = 0
    abandons: int = 0

    def submitted(self) -> TaskSubmitted:
        """The task as submitted (what an agent runs)."""
        return TaskSubmitted(
            task_id=self.task_id,
            kind=self.kind,
            complexity=self.complexity,
            params=self.params,
            payload=self.payload,
            queued=self.queued,
        )


class ClaimSample(msgspec.Struct, frozen=True, kw_only=True):
    """One stored claim, for latency and load measurements."""

    task_id: str
    seq: int
    claimed_ns: int
    pending_since_ns: int
    topology: str
    agent: str
    assigned_by: str | None

    @property
    def latency_ms(self) -> float:
        """Server time from the task becoming claimable to this claim."""
        return max(0.0, (self.claimed_ns - self.pending_since_ns) / 1e6)


class OutcomeSample(msgspec.Struct, frozen=True, kw_only=True):
    """One completion or abandonment, for the failure rate."""

    recorded_ns: int
    failed: bool
    duration_ms: float = 0.0
    """How long the task ran (completions; 0 for an abandonment)."""


class TaskBoard:
    """The fold of ``aqe.coord.task.>``: every task's state plus measurement samples.

    ``apply`` validates before it mutates (an anomaly is counted, never raised), so a
    replay of any prefix of the log gives the same board. ``pending`` keeps claimable
    task ids in the order they became claimable.
    """

    def __init__(self) -> None:
        self.tasks: dict[str, TaskEntry] = {}
        self.pending: dict[str, None] = {}
        self.applied_seq = 0
        self.last_ns = 0
        self.submitted = 0
        self.claimed = 0
        self.completed = 0
        self.failed = 0
        self.abandoned = 0
        self.anomalies: list[str] = []
        self.claims: list[ClaimSample] = []
        self.outcomes: list[OutcomeSample] = []
        self.submitted_ns: list[int] = []
        self.claims_by_topology: dict[str, int] = {}
        self.by_agent: dict[str, dict[str, None]] = {}
        """Claimed, not yet finished task ids per agent."""

    def apply(self, env: Envelope, event: Event | None = None) -> TaskBoard:
        """Fold one envelope (decoding it unless ``event`` is given); returns the board."""
        if env.seq <= self.applied_seq:
            return self
        event = env.decode() if event is None else event
        self.applied_seq = env.seq
        self.last_ns = max(self.last_ns, env.recorded_at_ns)
        if isinstance(event, TaskSubmitted):
            self._submitted(env, event)
            return self
        task_id = getattr(event, "task_id", None)
        entry = self.tasks.get(task_id) if isinstance(task_id, str) else None
        if entry is None:
            self.anomalies.append(f"seq {env.seq}: {event.type_tag()} for unknown task {task_id}")
            return self
        entry.last_seq = env.seq
        if isinstance(event, TaskClaimed):
            self._claimed(env, entry, event)
        elif isinstance(event, TaskCompleted):
            self._completed(env, entry, event)
        elif isinstance(event, TaskAbandoned):
            self._abandoned(env, entry, event)
        elif isinstance(event, TaskParked):
            self._release(entry)
            entry.status = "parked"
            entry.agent = None
            self.pending.pop(entry.task_id, None)
        return self

    def _submitted(self, env: Envelope, event: TaskSubmitted) -> None:
        if event.task_id in self.tasks:
            self.anomalies.append(f"seq {env.seq}: task {event.task_id} submitted again")
            self.tasks[event.task_id].last_seq = env.seq
            return
        self.tasks[event.task_id] = TaskEntry(
            task_id=event.task_id,
            kind=event.kind,
            complexity=event.complexity,
            params=dict(event.params),
            payload=event.payload,
            queued=event.queued,
            submitted_seq=env.seq,
            submitted_ns=env.recorded_at_ns,
            last_seq=env.seq,
            pending_since_ns=env.recorded_at_ns,
        )
        if not event.queued:  # runner tasks wait on their work queue, not on the board
            self.pending[event.task_id] = None
        self.submitted += 1
        self.submitted_ns.append(env.recorded_at_ns)

    def _claimed(self, env: Envelope, entry: TaskEntry, event: TaskClaimed) -> None:
        if entry.status != "pending":
            # The conditional append makes this impossible; a board that sees it says so.
            self.anomalies.append(
                f"seq {env.seq}: task {entry.task_id} claimed while {entry.status}"
            )
        self.pending.pop(entry.task_id, None)
        self._release(entry)
        self.by_agent.setdefault(event.agent_id, {})[entry.task_id] = None
        entry.status = "claimed"
        entry.attempt += 1
        entry.agent = event.agent_id
        entry.topology = event.topology
        entry.epoch = event.epoch
        entry.assigned_by = event.assigned_by
        entry.claim_seq = env.seq
        entry.claimed_ns = env.recorded_at_ns
        self.claimed += 1
        self.claims_by_topology[event.topology] = self.claims_by_topology.get(event.topology, 0) + 1
        self.claims.append(
            ClaimSample(
                task_id=entry.task_id,
                seq=env.seq,
                claimed_ns=env.recorded_at_ns,
                pending_since_ns=entry.pending_since_ns,
                topology=event.topology,
                agent=event.agent_id,
                assigned_by=event.assigned_by,
            )
        )

    def _completed(self, env: Envelope, entry: TaskEntry, event: TaskCompleted) -> None:
        entry.completions += 1
        if entry.status != "claimed" or event.agent_id != entry.agent:
            self.anomalies.append(
                f"seq {env.seq}: task {entry.task_id} completed by {event.agent_id} while "
                f"{entry.status} by {entry.agent}"
            )
        self._release(entry)
        entry.status = "completed"
        entry.completed_ns = env.recorded_at_ns
        entry.ok = event.ok
        self.pending.pop(entry.task_id, None)
        self.completed += 1
        if not event.ok:
            self.failed += 1
        self.outcomes.append(
            OutcomeSample(
                recorded_ns=env.recorded_at_ns, failed=not event.ok, duration_ms=event.duration_ms
            )
        )

    def _abandoned(self, env: Envelope, entry: TaskEntry, event: TaskAbandoned) -> None:
        entry.abandons += 1
        self.abandoned += 1
        self.outcomes.append(OutcomeSample(recorded_ns=env.recorded_at_ns, failed=True))
        if entry.status != "claimed":
            self.anomalies.append(
                f"seq {env.seq}: task {entry.task_id} abandoned while {entry.status}"
            )
            return
        self._release(entry)
        entry.status = "pending"
        entry.agent = None
        entry.pending_since_ns = env.recorded_at_ns
        if not entry.queued:
            self.pending[entry.task_id] = None

    def _release(self, entry: TaskEntry) -> None:
        if entry.agent is not None:
            held = self.by_agent.get(entry.agent)
            if held is not None:
                held.pop(entry.task_id, None)

    # -- queries ----------------------------------------------------------------------------

    def pending_entries(self, limit: int | None = None) -> list[TaskEntry]:
        """Claimable tasks, oldest first."""
        out: list[TaskEntry] = []
        for task_id in self.pending:
            out.append(self.tasks[task_id])
            if limit is not None and len(out) >= limit:
                break
        return out

    def in_flight(self) -> dict[str, int]:
        """Claimed, not yet completed tasks per agent."""
        return {agent: len(held) for agent, held in self.by_agent.items() if held}

    def claims_since(self, since_ns: int) -> list[ClaimSample]:
        """Claims recorded at or after ``since_ns`` (server time), oldest first."""
        index = bisect.bisect_left([c.claimed_ns for c in self.claims], since_ns)
        return self.claims[index:]

    def outcomes_since(self, since_ns: int) -> list[OutcomeSample]:
        """Completions and abandonments recorded at or after ``since_ns``."""
        return [o for o in self.outcomes if o.recorded_ns >= since_ns]

    def submissions_since(self, since_ns: int) -> int:
        """How many tasks were submitted at or after ``since_ns``."""
        return len(self.submitted_ns) - bisect.bisect_left(self.submitted_ns, since_ns)

    def summary(self) -> dict[str, object]:
        """Counts, claims per topology and claim latency percentiles (all time)."""
        latencies = [c.latency_ms for c in self.claims]
        by_topology: dict[str, dict[str, float]] = {}
        for name in sorted(self.claims_by_topology):
            mine = [c.latency_ms for c in self.claims if c.topology == name]
            by_topology[name] = {
                "claims": float(len(mine)),
                "latency_p50_ms": percentile(mine, 0.50),
                "latency_p95_ms": percentile(mine, 0.95),
            }
        return {
            "submitted": self.submitted,
            "pending": len(self.pending),
            "claimed": self.claimed,
            "in_flight": sum(1 for e in self.tasks.values() if e.status == "claimed"),
            "completed": self.completed,
            "failed": self.failed,
            "abandoned": self.abandoned,
            "latency_p50_ms": percentile(latencies, 0.50),
            "latency_p95_ms": percentile(latencies, 0.95),
            "by_topology": by_topology,
            "anomalies": list(self.anomalies),
            "applied_seq": self.applied_seq,
        }


def fold_board(envelopes: Iterable[Envelope], board: TaskBoard | None = None) -> TaskBoard:
    """Fold task envelopes (in stream order) into a board."""
    board = board if board is not None else TaskBoard()
    for env in envelopes:
        board.apply(env)
    return board


async def read_board(log: EventLog) -> TaskBoard:
    """Fold every task message in the log into a fresh board."""
    board = TaskBoard()
    async for env in log.read(COORD_STREAM, subjects=TASK_SUBJECTS):
        board.apply(env)
    return board


# -- appends ------------------------------------------------------------------------------


class Claim(msgspec.Struct, frozen=True, kw_only=True):
    """A claim the server stored: the task, its owner and the claim's sequence."""

    task: TaskSubmitted
    agent_id: str
    attempt: int
    seq: int
    epoch: int
    topology: Topology
    assigned_by: str | None = None


async def _append_conditional(
    log: EventLog,
    event: Event,
    *,
    task_id: str,
    event_id: str,
    expected_last_seq: int,
) -> AppendResult | None:
    """Append conditional on the task's subjects; None when the condition failed.

    An unavailable log is retried with the same event id, and a retry whose first try
    was in fact stored is recognised (:func:`aqe.log.retry.append_conditional`).
    """
    try:
        return await append_conditional(
            log,
            event,
            event_id=event_id,
            expected_last_seq=expected_last_seq,
            expected_subject=task_filter(task_id),
            within_s=UNAVAILABLE_S,
        )
    except ConcurrencyError:
        return None


async def submit_task(log: EventLog, task: TaskSubmitted) -> AppendResult:
    """Submit one task; its id must be new.

    Raises:
        CommandRejectedError: a task with this id exists already.
    """
    stored = await _append_conditional(
        log, task, task_id=task.task_id, event_id=task.default_id(), expected_last_seq=0
    )
    if stored is None:
        raise CommandRejectedError(f"task {task.task_id} exists already")
    return stored


async def submit_tasks(log: EventLog, tasks: Sequence[TaskSubmitted]) -> list[AppendResult]:
    """Submit many fresh tasks pipelined (ids must be new; not checked, for speed)."""
    return await log.append_many([NewEvent(event=t) for t in tasks])


async def claim_task(
    log: EventLog,
    task: TaskSubmitted,
    *,
    after_seq: int,
    attempt: int,
    agent_id: str,
    topology: Topology,
    epoch: int,
    assigned_by: str | None = None,
) -> Claim | None:
    """Claim a task for ``agent_id``; None when another claim (or anything) came first.

    Args:
        log: the event log.
        task: the task as submitted.
        after_seq: the last sequence under the task's subjects the claimer saw (its
            submission, or its abandonment for a re-claim).
        attempt: the claim's attempt number (1 + claims stored before).
        agent_id: the agent that will run it.
        topology: the topology claiming it.
        epoch: the topology epoch (sequence of the TopologySelected in force, 0: none).
        assigned_by: the coordinator, leader or token holder that assigned it, if any.

    Returns:
        The stored claim, or None when the condition failed: the task moved on.

    Raises:
        LogUnavailableError: the log stayed unreachable through every retry.
    """
    event = TaskClaimed(
        task_id=task.task_id,
        agent_id=agent_id,
        topology=topology,
        epoch=epoch,
        attempt=attempt,
        assigned_by=assigned_by,
    )
    stored = await _append_conditional(
        log,
        event,
        task_id=task.task_id,
        event_id=event.default_id(),
        expected_last_seq=after_seq,
    )
    if stored is None:
        return None
    return Claim(
        task=task,
        agent_id=agent_id,
        attempt=attempt,
        seq=stored.seq,
        epoch=epoch,
        topology=topology,
        assigned_by=assigned_by,
    )


async def complete_task(
    log: EventLog,
    claim: Claim,
    *,
    ok: bool = True,
    result: str = "",
    duration_ms: float = 0.0,
    outcome: TaskOutcome | None = None,
) -> AppendResult | None:
    """Record the owner's outcome; None when the claim is no longer the task's last message.

    Conditional on the claim's sequence, so a task abandoned (and maybe re-claimed)
    while its first owner was still running gets no late completion from that owner.
    """
    event = TaskCompleted(
        task_id=claim.task.task_id,
        agent_id=claim.agent_id,
        ok=ok,
        result=result,
        duration_ms=round(duration_ms, 3),
        outcome=outcome,
    )
    # One id per claim: a retry after a timeout is deduplicated whatever the duration.
    return await _append_conditional(
        log,
        event,
        task_id=claim.task.task_id,
        event_id=f"done-{claim.seq}-{event.default_id()[:16]}",
        expected_last_seq=claim.seq,
    )


async def abandon_task(log: EventLog, entry: TaskEntry, *, reason: str = "") -> AppendResult | None:
    """Give a claimed task back (its owner is gone); None if the task moved on meanwhile.

    Raises:
        CommandRejectedError: the task is not claimed.
    """
    if entry.status != "claimed" or entry.agent is None:
        raise CommandRejectedError(f"task {entry.task_id} is {entry.status}, not claimed")
    event = TaskAbandoned(
        task_id=entry.task_id, agent_id=entry.agent, attempt=entry.attempt, reason=reason
    )
    return await _append_conditional(
        log,
        event,
        task_id=entry.task_id,
        event_id=event.default_id(),
        expected_last_seq=entry.last_seq,
    )


async def abandon_agent(log: EventLog, board: TaskBoard, agent_id: str, *, reason: str) -> int:
    """Abandon every task the board shows claimed by ``agent_id`` (it is dead or retired).

    Each abandonment is conditional on the task's last message, so a task completed
    meanwhile stays completed. Returns how many were abandoned.
    """
    abandoned = 0
    for task_id in list(board.by_agent.get(agent_id, ())):
        entry = board.tasks[task_id]
        if entry.status == "claimed" and await abandon_task(log, entry, reason=reason) is not None:
            abandoned += 1
    return abandoned
