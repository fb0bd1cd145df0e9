"""Fleet membership: who is in the fleet, and whether each agent is alive.

Two halves, kept apart on purpose:

* The **fold** (:class:`MembershipProjection`) turns ``AQE_AGENTS`` into one
  :class:`AgentRecord` per agent: role, capabilities, the registration, the last
  heartbeat (beat, session, server timestamp, status, load), retirement and the
  suspicions of the current beat that coordinators appended. It reads no clock, so
  it is a projection like any other: rebuilt by replay, byte for byte.
* **Liveness** (:func:`liveness`) is a pure function of a record, a ``now_ns`` and a
  :class:`FailureDetector`: ``alive`` until ``suspect_after`` heartbeat intervals pass
  without a beat, ``suspect`` until ``dead_after``, then ``dead``; ``retired`` when the
  agent left on purpose. An :class:`~aqe.events.AgentSuspected` for the agent's current
  beat, appended by any coordinator, makes it ``suspect`` at once for every reader of
  the log (shared suspicion); the next heartbeat refutes it. The same prefix of the
  log and the same ``now_ns`` always give the same answer.

Heartbeat timestamps are the server's (``Envelope.recorded_at_ns``); ``now_ns`` should be
on the same clock (a coordinator on a host with NTP is close enough: skew adds to, or
takes from, the detection time).

The fold keeps only "last value" fields (no counters), so its state depends only on the
last message of each subject and their order. A stream that keeps a few messages per
subject (``max_msgs_per_subject``) therefore folds to the same state as the full
history, which is what lets ``AQE_AGENTS`` stop growing with every heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import msgspec

from aqe.coordination.identity import KeyBook
from aqe.errors import ConfigError, EventDecodeError, LogUnavailableError
from aqe.events import (
    AgentHeartbeat,
    AgentRegistered,
    AgentRetired,
    AgentStatus,
    AgentSuspected,
    Envelope,
    Event,
)

if TYPE_CHECKING:
    from aqe.log.port import EventLog

__all__ = [
    "AGENTS_STREAM",
    "AgentRecord",
    "FailureDetector",
    "Liveness",
    "LivenessStatus",
    "MembershipMonitor",
    "MembershipProjection",
    "MembershipState",
    "Suspicion",
    "Transition",
    "apply_membership",
    "liveness",
    "membership",
]

AGENTS_STREAM = "AQE_AGENTS"

LivenessStatus = Literal["alive", "suspect", "dead", "retired"]

_log = logging.getLogger("aqe.coordination.membership")
_ENCODER = msgspec.json.Encoder(order="sorted")
_DECODER: msgspec.json.Decoder[MembershipState] | None = None


class FailureDetector(msgspec.Struct, frozen=True, kw_only=True):
    """When missed heartbeats make an agent suspect, then dead.

    Attributes:
        interval_s: the heartbeat interval agents are expected to keep.
        suspect_after: missed intervals before an agent is suspect.
        dead_after: missed intervals before an agent is dead (more than
            ``suspect_after``).

    Raises:
        ConfigError: naming the field that is out of range.
    """

    interval_s: float = 1.0
    suspect_after: int = 3
    dead_after: int = 6

    def __post_init__(self) -> None:
        if not self.interval_s > 0:
            raise ConfigError(f"failure detector: interval_s must be > 0, not {self.interval_s}")
        if self.suspect_after < 1:
            raise ConfigError(
                f"failure detector: suspect_after must be >= 1, not {self.suspect_after}"
            )
        if self.dead_after <= self.suspect_after:
            raise ConfigError(
                f"failure detector: dead_after ({self.dead_after}) must be greater than "
                f"suspect_after ({self.suspect_after})"
            )

    @property
    def interval_ns(self) -> int:
        """The heartbeat interval in nanoseconds."""
        return int(self.interval_s * 1e9)


class Suspicion(msgspec.Struct, frozen=True, kw_only=True):
    """One coordinator's suspicion of an agent's current beat, as appended to the log."""

    by: str
    last_beat: int
    missed: int
    seq: int
    at_ns: int


class AgentRecord(msgspec.Struct, kw_only=True):
    """One agent as the log describes it (no clock involved).

    ``last_seen_ns`` is the server time of the last heartbeat, or of the registration
    before the first one. ``registered`` is False for an agent known only from
    heartbeats or a retirement (e.g. one driven from the shell without registering).
    """

    agent_id: str
    registered: bool = False
    role: str = ""
    capabilities: tuple[str, ...] = ()
    host: str | None = None
    version: str | None = None
    public_key: str | None = None
    registered_seq: int = 0
    registered_at_ns: int = 0
    session: str | None = None
    beat: int = 0
    last_seen_ns: int = 0
    status: AgentStatus = "idle"
    load: float = 0.0
    retired: bool = False
    retired_reason: str = ""
    retired_at_ns: int = 0
    suspicions: list[Suspicion] = msgspec.field(default_factory=list)
    last_seq: int = 0


class MembershipState(msgspec.Struct, kw_only=True):
    """Every agent the log has heard of, by id, and the keys bound to them."""

    agents: dict[str, AgentRecord] = msgspec.field(default_factory=dict)
    keys: KeyBook = msgspec.field(default_factory=KeyBook)
    """Bound keys and refused (forged, replayed, unsigned) registrations."""


class Liveness(msgspec.Struct, frozen=True, kw_only=True):
    """An agent's status at one ``now_ns`` under one failure detector."""

    agent_id: str
    status: LivenessStatus
    age_ns: int
    """How long ago the agent was last seen (never negative)."""
    missed: int
    """Whole heartbeat intervals since it was last seen."""
    suspected_by: tuple[str, ...] = ()
    """Coordinators whose appended suspicions count against the current beat."""
    reason: str = ""


def apply_membership(state: MembershipState, envelope: Envelope, event: Event) -> MembershipState:
    """Fold one ``AQE_AGENTS`` event into the state (other events change nothing).

    * ``AgentRegistered`` (re)starts the record: role, capabilities and keys are
      replaced, the beat and suspicions reset, a retirement is lifted. A registration
      the key book refuses (:mod:`aqe.coordination.identity`: forged, replayed,
      unsigned where a key is bound) changes no record and is listed in
      ``state.keys.refused``.
    * ``AgentHeartbeat`` sets the beat, session, status, load and ``last_seen_ns``
      and refutes every suspicion.
    * ``AgentRetired`` marks the agent retired until it registers again.
    * ``AgentSuspected`` counts only for the agent's current beat (an older beat was
      already refuted) and only once per coordinator.
    """
    at = envelope.recorded_at_ns
    if isinstance(event, AgentRegistered):
        if state.keys.admit(event, envelope.seq) is not None:
            return state
        state.agents[event.agent_id] = AgentRecord(
            agent_id=event.agent_id,
            registered=True,
            role=event.role,
            capabilities=tuple(event.capabilities),
            host=event.host,
            version=event.version,
            public_key=state.keys.key_of(event.agent_id),
            registered_seq=envelope.seq,
            registered_at_ns=at,
            last_seen_ns=at,
            last_seq=envelope.seq,
        )
    elif isinstance(event, AgentHeartbeat):
        rec = _record(state, event.agent_id)
        rec.session = event.session
        rec.beat = event.beat
        rec.last_seen_ns = at
        rec.status = event.status
        rec.load = event.load
        rec.suspicions = []
        rec.last_seq = envelope.seq
    elif isinstance(event, AgentRetired):
        rec = _record(state, event.agent_id)
        rec.retired = True
        rec.retired_reason = event.reason
        rec.retired_at_ns = at
        rec.suspicions = []
        rec.last_seq = envelope.seq
    elif isinstance(event, AgentSuspected):
        found = state.agents.get(event.agent_id)
        if (
            found is None
            or found.retired
            or event.last_beat != found.beat
            or any(s.by == event.by for s in found.suspicions)
        ):
            return state
        found.suspicions.append(
            Suspicion(
                by=event.by,
                last_beat=event.last_beat,
                missed=event.missed,
                seq=envelope.seq,
                at_ns=at,
            )
        )
        found.last_seq = envelope.seq
    return state


def _record(state: MembershipState, agent_id: str) -> AgentRecord:
    rec = state.agents.get(agent_id)
    if rec is None:
        rec = state.agents[agent_id] = AgentRecord(agent_id=agent_id)
    return rec


def liveness(record: AgentRecord, now_ns: int, detector: FailureDetector) -> Liveness:
    """The agent's status at ``now_ns`` (a pure function: no clock is read).

    An appended suspicion counts only when the log's own clock says the agent had
    missed at least one interval when it was written; that discards a suspicion of a
    beat that a restarted agent (beats count from 1 per session) has just sent again.
    """
    interval = detector.interval_ns
    age = max(0, now_ns - record.last_seen_ns)
    missed = age // interval
    if record.retired:
        why = f"retired: {record.retired_reason}" if record.retired_reason else "retired"
        return Liveness(
            agent_id=record.agent_id, status="retired", age_ns=age, missed=missed, reason=why
        )
    by = tuple(s.by for s in record.suspicions if s.at_ns - record.last_seen_ns >= interval)
    status: LivenessStatus
    if missed >= detector.dead_after:
        status, reason = "dead", f"missed {missed} heartbeats"
    elif missed >= detector.suspect_after:
        status, reason = "suspect", f"missed {missed} heartbeats"
    elif by:
        status, reason = "suspect", f"suspected by {', '.join(by)}"
    else:
        status, reason = "alive", ""
    return Liveness(
        agent_id=record.agent_id,
        status=status,
        age_ns=age,
        missed=missed,
        suspected_by=by,
        reason=reason,
    )


def membership(
    state: MembershipState,
    now_ns: int,
    detector: FailureDetector | None = None,
    *,
    include_retired: bool = True,
) -> list[Liveness]:
    """Every agent's liveness at ``now_ns``, sorted by agent id."""
    det = detector or FailureDetector()
    out = [liveness(state.agents[a], now_ns, det) for a in sorted(state.agents)]
    return out if include_retired else [lv for lv in out if lv.status != "retired"]


class MembershipProjection:
    """``AQE_AGENTS`` folded into a :class:`MembershipState` (see :func:`apply_membership`)."""

    name = "membership"
    version = 2
    streams: tuple[str, ...] = (AGENTS_STREAM,)

    def initial(self) -> MembershipState:
        """No agents."""
        return MembershipState()

    def apply(self, state: MembershipState, envelope: Envelope, event: Event) -> MembershipState:
        """Fold one event; see :func:`apply_membership`."""
        return apply_membership(state, envelope, event)

    def encode(self, state: MembershipState) -> bytes:
        """Canonical JSON (sorted keys)."""
        return _ENCODER.encode(state)

    def decode(self, data: bytes) -> MembershipState:
        """Parse what :meth:`encode` wrote."""
        global _DECODER
        if _DECODER is None:
            _DECODER = msgspec.json.Decoder(MembershipState)
        return _DECODER.decode(data)


# -- the monitor: a coordinator following the log ---------------------------------------


class Transition(msgspec.Struct, frozen=True, kw_only=True):
    """A monitor saw an agent's status change (``old`` is None the first time)."""

    agent_id: str
    old: LivenessStatus | None
    new: LivenessStatus
    at_ns: int
    reason: str = ""


class MembershipMonitor:
    """A coordinator's live view of the fleet, with failure detection and shared suspicion.

    It follows ``AQE_AGENTS`` and keeps the fold current; every ``check_interval_s``
    it evaluates every agent's liveness. When an agent it saw ``alive`` misses enough
    heartbeats to become suspect (or dead) by this monitor's own detector, and no
    coordinator has suspected that beat yet, it appends an ``AgentSuspected``: the
    other coordinators, which follow the same stream, then see the agent suspect as
    soon as the event reaches them, instead of waiting for their own timeout (the fold
    does the rest, see :func:`liveness`). This is suspicion shared through the log,
    not epidemic gossip: nothing goes from peer to peer, and it gains only where
    coordinators would time an agent out at different moments (different check
    intervals or phases). Statuses changed by events (a heartbeat, an appended
    suspicion, a retirement) are observed as each event is folded.

    Args:
        log: the event log (any adapter).
        coordinator_id: who signs the suspicions (``AgentSuspected.by``).
        detector: the failure detector; the default expects a beat every second.
        check_interval_s: how often timeouts are evaluated [default: half the
            heartbeat interval].
        gossip: whether to append suspicions to the log for the other coordinators
            (``False`` only listens). The name is historical: see above.
        clock: the time source for ``now_ns`` (server-comparable nanoseconds).
        on_transition: called with every status change this monitor observes.
    """

    def __init__(
        self,
        log: EventLog,
        coordinator_id: str,
        detector: FailureDetector | None = None,
        *,
        check_interval_s: float | None = None,
        gossip: bool = True,
        clock: Callable[[], int] = time.time_ns,
        on_transition: Callable[[Transition], None] | None = None,
    ) -> None:
        if not coordinator_id:
            raise ConfigError("membership monitor: coordinator_id cannot be empty")
        self.log = log
        self.coordinator_id = coordinator_id
        self.detector = detector or FailureDetector()
        self.check_interval_s = (
            check_interval_s if check_interval_s is not None else self.detector.interval_s / 2
        )
        if not self.check_interval_s > 0:
            raise ConfigError(
                f"membership monitor: check_interval_s must be > 0, not {self.check_interval_s}"
            )
        self.gossip = gossip
        self.clock = clock
        self.on_transition = on_transition
        self.state = MembershipState()
        self.seq = 0
        """The last ``AQE_AGENTS`` sequence folded."""
        self.transitions: list[Transition] = []
        self.suspicions_sent = 0
        self.undecodable = 0
        self._observed: dict[str, LivenessStatus] = {}
        # (agent, session, beat) this monitor has suspected, or must retry suspecting.
        self._reported: set[tuple[str, str | None, int]] = set()
        self._retry: set[tuple[str, str | None, int]] = set()
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # -- queries --------------------------------------------------------------------

    def status(self, agent_id: str, now_ns: int | None = None) -> Liveness | None:
        """One agent's liveness now (or at ``now_ns``); None for an unknown agent."""
        rec = self.state.agents.get(agent_id)
        if rec is None:
            return None
        return liveness(rec, self.clock() if now_ns is None else now_ns, self.detector)

    def statuses(
        self, now_ns: int | None = None, *, include_retired: bool = True
    ) -> list[Liveness]:
        """Every agent's liveness now (or at ``now_ns``), sorted by agent id."""
        now = self.clock() if now_ns is None else now_ns
        return membership(self.state, now, self.detector, include_retired=include_retired)

    def observed(self, agent_id: str) -> LivenessStatus | None:
        """The status this monitor last observed for an agent (None if never)."""
        return self._observed.get(agent_id)

    async def wait_for(
        self, agent_id: str, statuses: LivenessStatus | tuple[LivenessStatus, ...], timeout_s: float
    ) -> Transition:
        """Wait until this monitor observes the agent in one of ``statuses``.

        Returns:
            The transition into that status: the latest one if the agent is in it
            already, else the first one observed while waiting.

        Raises:
            TimeoutError: not observed within ``timeout_s``.
        """
        wanted = (statuses,) if isinstance(statuses, str) else statuses
        seen = len(self.transitions)
        if self._observed.get(agent_id) in wanted:
            return next(t for t in reversed(self.transitions) if t.agent_id == agent_id)
        async with asyncio.timeout(timeout_s):
            while True:
                self._changed.clear()
                await self._changed.wait()
                for tr in self.transitions[seen:]:
                    if tr.agent_id == agent_id and tr.new in wanted:
                        return tr
                seen = len(self.transitions)

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Fold what the log holds, observe every agent once, then follow and check."""
        async for env in self.log.read(AGENTS_STREAM, after_seq=self.seq):
            self._fold(env)
        now = self.clock()
        for agent_id in sorted(self.state.agents):
            self._observe(agent_id, now)
        self._tasks = [
            asyncio.create_task(self._follow(), name=f"membership-follow-{self.coordinator_id}"),
            asyncio.create_task(self._checks(), name=f"membership-check-{self.coordinator_id}"),
        ]

    async def stop(self) -> None:
        """Stop following and checking."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> MembershipMonitor:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- work -----------------------------------------------------------------------

    async def check(self, now_ns: int | None = None) -> list[AgentSuspected]:
        """Evaluate every agent's timeouts once; append new suspicions to the log.

        Returns:
            The suspicions appended by this call.
        """
        now = self.clock() if now_ns is None else now_ns
        sent: list[AgentSuspected] = []
        for agent_id in sorted(self.state.agents):
            prev = self._observed.get(agent_id)
            lv = self._observe(agent_id, now)
            if lv is None or not self.gossip or lv.status not in ("suspect", "dead"):
                continue
            rec = self.state.agents[agent_id]
            key = (agent_id, rec.session, rec.beat)
            own_timeout = lv.missed >= self.detector.suspect_after
            first_seen = prev == "alive" or key in self._retry
            if not own_timeout or lv.suspected_by or key in self._reported or not first_seen:
                continue
            event = AgentSuspected(
                agent_id=agent_id, by=self.coordinator_id, last_beat=rec.beat, missed=lv.missed
            )
            try:
                await self.log.append(event)
            except LogUnavailableError as exc:
                _log.warning("cannot gossip suspicion of %s (retrying): %s", agent_id, exc)
                self._retry.add(key)
                continue
            self._retry.discard(key)
            self._reported.add(key)
            self.suspicions_sent += 1
            sent.append(event)
        return sent

    def _fold(self, env: Envelope) -> str | None:
        """Fold one envelope; the agent id it was about, if any."""
        self.seq = env.seq
        try:
            event = env.decode()
        except EventDecodeError as exc:
            # The projection runner parks these; a monitor just does not count them.
            self.undecodable += 1
            _log.warning("membership monitor skips %s", exc)
            return None
        apply_membership(self.state, env, event)
        agent_id = getattr(event, "agent_id", None)
        return agent_id if isinstance(agent_id, str) else None

    def _observe(self, agent_id: str, now_ns: int) -> Liveness | None:
        rec = self.state.agents.get(agent_id)
        if rec is None:
            return None
        lv = liveness(rec, now_ns, self.detector)
        prev = self._observed.get(agent_id)
        if lv.status != prev:
            self._observed[agent_id] = lv.status
            tr = Transition(
                agent_id=agent_id, old=prev, new=lv.status, at_ns=now_ns, reason=lv.reason
            )
            self.transitions.append(tr)
            self._changed.set()
            if self.on_transition is not None:
                self.on_transition(tr)
        return lv

    async def _follow(self) -> None:
        while True:
            try:
                async for env in self.log.read(AGENTS_STREAM, after_seq=self.seq, follow=True):
                    agent_id = self._fold(env)
                    if agent_id is not None:
                        self._observe(agent_id, self.clock())
            except LogUnavailableError as exc:
                # A stream leader change or a lost server: resume after the last folded seq.
                _log.warning("membership monitor lost AQE_AGENTS (resuming): %s", exc)
                await asyncio.sleep(min(1.0, self.check_interval_s))

    async def _checks(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval_s)
            await self.check()
