"""Adaptive topology selection: measured signals, a cost model per topology, hysteresis.

The selector answers "which of star, mesh, ring and hierarchical dispatches this fleet's
work with the least waste right now?" from numbers measured on the log
(:func:`measure`), not from fixed thresholds on one of them:

========================  ==============================================================
signal                    measured as
========================  ==============================================================
``agents``                live agents (membership, or distinct claimers as a fallback)
``complexity``            mean ``TaskSubmitted.complexity`` in the window
``rate``                  tasks submitted per second in the window
``claim_p50_ms`` / p95    server time from a task becoming claimable to its claim
``failure_rate``          (failed completions + abandonments) / outcomes in the window
``assign_ms``             median gap between consecutive claims one assigner made while
                          work was waiting: its per-assignment cost (0: never measured)
``coordinator_load``      ``rate * assign_ms / 1000``: the utilisation one coordinator
                          would run at
``backlog``               tasks waiting to be claimed
========================  ==============================================================

**Cost model** (:func:`costs`). Each topology gets an expected cost in milliseconds per
task: dispatch latency (with queueing where work funnels through one place) plus the
expected stall when the part it depends on fails. With ``n`` agents, rate ``lam``/s,
complexity ``c``, failure rate ``f``, fleet utilisation ``u = lam·c·unit / (n·slots)``
and ``wait(rho, s) = s·rho / (1 - rho)`` (M/M/1 queueing; from ``rho = 0.95`` on the
topology counts as saturated, ``SATURATED_MS`` and more):

* **star** — every task passes one coordinator: ``hop + append + wait(lam·assign, assign)``;
  it is a single point of failure: ``+ f · failover``.
* **mesh** — peers pull from one work queue and claim for themselves; no coordinator, but
  the queue serialises everyone's pulls: ``pull + append · (1 + n·lam·append)``; no stall
  term (a dead peer only loses its own tasks, as in every topology).
* **ring** — the token batches up to ``k`` claims per hop, so it saturates late; a task
  waits for the token to reach an agent with a free slot, ``min(n, 1/(1-u))`` hops:
  ``hop·min(n, 1/(1-u)) + append + wait(lam·(hop+append)/k, (hop+append)/k)``; a holder that
  dies stalls the ring until the token is regenerated: ``+ f · token_timeout``.
* **hierarchical** — ``G = ceil(n / g)`` groups of ``g ≈ √n``: two hops (root → leader →
  member), a light root queue and one leader queue per group:
  ``2·hop + append + wait(lam·route, route) + wait(lam/G·assign, assign)``; a dead leader
  stalls only its group: ``+ f · failover / G``.

When the current topology has enough claims in the window, the model's latency for it is
compared with the measured ``claim_p50_ms`` and every topology's latency term is scaled by
that ratio (clamped to 1/4..4), so the comparison is made on this machine's speed.

**Hysteresis** (:func:`select`): the fleet switches only when the best topology beats the
current one by ``margin`` (default 20 %) in ``window`` consecutive decisions (default 3),
or at once when the current one is saturated. A pure function: the previous
:class:`Decision` carries the streak.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Final, cast, get_args

import msgspec

from aqe.coordination.tasks import TaskBoard, percentile
from aqe.errors import EventDecodeError
from aqe.events import TopologySelected
from aqe.events.coordination import Topology
from aqe.log.port import EventLog
from aqe.log.subjects import encode_token

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_POLICY",
    "SATURATED_MS",
    "TOPOLOGIES",
    "WORKLOADS",
    "CostModel",
    "Decision",
    "Hysteresis",
    "InForce",
    "Signals",
    "TableRow",
    "costs",
    "decision_table",
    "group_count",
    "live_agents",
    "measure",
    "select",
    "selection_event",
    "topology_history",
    "topology_in_force",
    "topology_subject",
]

TOPOLOGIES: Final[tuple[Topology, ...]] = cast(tuple[Topology, ...], get_args(Topology))
SATURATED_MS: Final = 1000.0
"""A latency term at or above this means the topology cannot keep up with the rate."""
_MIN_CALIBRATION_CLAIMS = 20


def topology_subject(fleet: str) -> str:
    """The subject of a fleet's topology decisions; its last message is in force."""
    return f"aqe.coord.topology.{encode_token(fleet)}.selected"


class Signals(msgspec.Struct, frozen=True, kw_only=True):
    """What the selector decides from (see the module docstring for each field)."""

    agents: int
    complexity: float = 1.0
    rate: float = 0.0
    task_ms: float = 0.0
    """Mean run time of the tasks completed in the window (0: none measured)."""
    claim_p50_ms: float = 0.0
    claim_p95_ms: float = 0.0
    claims: int = 0
    failure_rate: float = 0.0
    assign_ms: float = 0.0
    coordinator_load: float = 0.0
    backlog: int = 0
    measured_topology: Topology | None = None
    """The topology that made most claims in the window (whose latency was measured)."""

    def as_dict(self) -> dict[str, float]:
        """The numeric signals, as recorded in ``TopologySelected.signals``."""
        return {
            "agents": float(self.agents),
            "complexity": round(self.complexity, 4),
            "rate": round(self.rate, 3),
            "task_ms": round(self.task_ms, 3),
            "claim_p50_ms": round(self.claim_p50_ms, 3),
            "claim_p95_ms": round(self.claim_p95_ms, 3),
            "claims": float(self.claims),
            "failure_rate": round(self.failure_rate, 4),
            "assign_ms": round(self.assign_ms, 4),
            "coordinator_load": round(self.coordinator_load, 4),
            "backlog": float(self.backlog),
        }


class CostModel(msgspec.Struct, frozen=True, kw_only=True):
    """The model's constants, in milliseconds unless said otherwise.

    The defaults are *effective* costs fitted to the claim latencies
    ``tests/benchmarks/bench_dispatch.py`` measured (4 and 8 agents, paced load, one
    local nats-server, one Python process; see README): they include the scheduling
    each step costs a busy event loop, so they exceed the bare round trips the bench
    also prints (append 0.4, core request 0.4, fetch 0.3 ms). At run time the measured
    claim latency rescales them (see :func:`costs`).
    """

    notice_ms: float = 0.6
    """A newly claimable task reaching whoever claims it (a push from the stream)."""
    append_ms: float = 0.45
    """One conditional append (a claim) round trip."""
    hop_ms: float = 1.8
    """One core message between two agents, acknowledged (token pass, route, notify)."""
    pull_ms: float = 3.5
    """A work-queue hand-off: the consumer waking a waiting pull and the puller claiming."""
    assign_ms: float = 0.5
    """A coordinator's own cost per assignment (used until one is measured)."""
    route_ms: float = 0.2
    """A hierarchical root's cost per task routed to a group."""
    failover_ms: float = 2000.0
    """Time to replace a dead coordinator or group leader (one lease period)."""
    token_timeout_ms: float = 2000.0
    """Time before a lost ring token is regenerated."""
    ring_batch: int = 4
    """Claims a ring token holder makes per turn (``k``)."""
    group_size: int | None = None
    """Hierarchical group size (None: about the square root of the agent count)."""
    task_unit_ms: float = 100.0
    """How long a task of complexity 1.0 runs, until run times are measured."""
    slots: int = 1
    """Tasks each agent runs at once."""


class Hysteresis(msgspec.Struct, frozen=True, kw_only=True):
    """When a better topology is worth switching to."""

    margin: float = 0.2
    """The challenger must cost at most ``(1 - margin)`` times the current one..."""
    window: int = 3
    """...in this many consecutive decisions."""


DEFAULT_MODEL: Final = CostModel()
DEFAULT_POLICY: Final = Hysteresis()


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """One evaluation: the topology to run, whether that is a switch, and why."""

    topology: Topology
    """What the fleet should run after this decision."""
    previous: Topology | None
    """What it ran before (None: nothing recorded yet)."""
    switch: bool
    best: Topology
    """The cheapest topology by the model (may differ from ``topology`` under hysteresis)."""
    scores: dict[str, float]
    """Expected cost per task in ms, per topology (lower is better)."""
    latency_ms: dict[str, float]
    risk_ms: dict[str, float]
    reasons: tuple[str, ...]
    streak: int = 0
    """Consecutive decisions ``best`` has beaten the current topology by the margin."""
    calibration: float = 1.0
    signals: Signals | None = None


# -- the cost model -------------------------------------------------------------------------


def _wait(rho: float, service_ms: float) -> float:
    """M/M/1 queueing delay; at 95 % utilisation or more, saturated (and worse with rho)."""
    if rho < 0.95:
        return service_ms * rho / (1.0 - rho)
    return SATURATED_MS * (1.0 + 10.0 * (rho - 0.95))


def group_count(agents: int, group_size: int | None = None) -> int:
    """Hierarchical groups for ``agents`` (each of about ``√agents`` members)."""
    size = group_size or max(2, round(math.sqrt(max(agents, 1))))
    return max(1, math.ceil(max(agents, 1) / size))


def _latencies(s: Signals, m: CostModel) -> dict[Topology, float]:
    n = max(s.agents, 1)
    lam = max(s.rate, 0.0) / 1000.0  # tasks per ms
    assign = s.assign_ms if s.assign_ms > 0 else m.assign_ms
    run_ms = s.task_ms if s.task_ms > 0 else s.complexity * m.task_unit_ms
    busy = min(0.99, lam * run_ms / (n * max(m.slots, 1)))
    token_turn = (m.hop_ms + m.append_ms) / max(m.ring_batch, 1)
    groups = group_count(n, m.group_size)
    base = m.notice_ms + m.append_ms
    return {
        "star": base + m.hop_ms + _wait(lam * assign, assign),
        "mesh": m.notice_ms + m.pull_ms + m.append_ms * (1.0 + n * lam * m.append_ms),
        "ring": base
        + m.hop_ms * min(float(n), 1.0 / (1.0 - busy))
        + _wait(lam * token_turn, token_turn),
        "hierarchical": base
        + 2 * m.hop_ms
        + _wait(lam * m.route_ms, m.route_ms)
        + _wait(lam / groups * assign, assign),
    }


def _risks(s: Signals, m: CostModel) -> dict[Topology, float]:
    f = min(max(s.failure_rate, 0.0), 1.0)
    groups = group_count(s.agents, m.group_size)
    return {
        "star": f * m.failover_ms,
        "mesh": 0.0,
        "ring": f * m.token_timeout_ms,
        "hierarchical": f * m.failover_ms / groups,
    }


def costs(
    signals: Signals, model: CostModel = DEFAULT_MODEL
) -> tuple[dict[Topology, float], dict[Topology, float], float]:
    """(latency, risk, calibration): each topology's expected ms per task, in two parts.

    When ``signals`` measured enough claims of one topology, the ratio of its measured
    ``claim_p50_ms`` to the model's latency for it (clamped to 0.25..4) scales every
    latency term.
    """
    latency = _latencies(signals, model)
    risk = _risks(signals, model)
    calibration = 1.0
    measured = signals.measured_topology
    if measured is not None and signals.claims >= _MIN_CALIBRATION_CLAIMS:
        predicted = latency[measured]
        if predicted > 0 and signals.claim_p50_ms > 0 and predicted < SATURATED_MS:
            calibration = min(4.0, max(0.25, signals.claim_p50_ms / predicted))
    if calibration != 1.0:
        latency = {t: v * calibration for t, v in latency.items()}
    return latency, risk, calibration


# -- the decision -----------------------------------------------------------------------------


def _why(
    s: Signals, m: CostModel, latency: Mapping[Topology, float], risk: Mapping[Topology, float]
) -> list[str]:
    """One line per topology on what drives its cost."""
    assign = s.assign_ms if s.assign_ms > 0 else m.assign_ms
    load = s.rate * assign / 1000.0
    groups = group_count(s.agents, m.group_size)
    lines = [
        f"star: one coordinator at {load:.0%} load ({s.rate:.0f} tasks/s x {assign:.2f} ms)"
        + (f", stalls {m.failover_ms / 1000:.1f} s if it dies" if risk["star"] else ""),
        f"mesh: {s.agents} peers pulling one queue, claim ~{latency['mesh']:.2f} ms",
        f"ring: token over {s.agents} agents, claim ~{latency['ring']:.2f} ms"
        + (f", lost token costs {m.token_timeout_ms / 1000:.1f} s" if risk["ring"] else ""),
        f"hierarchical: {groups} group(s) under a root, claim ~{latency['hierarchical']:.2f} ms",
    ]
    if s.failure_rate > 0:
        lines.append(
            f"failure rate {s.failure_rate:.1%} weighs single points of failure "
            f"(star +{risk['star']:.1f} ms, ring +{risk['ring']:.1f} ms per task)"
        )
    return lines


def select(
    signals: Signals,
    current: Topology | None,
    previous: Decision | None = None,
    *,
    model: CostModel = DEFAULT_MODEL,
    policy: Hysteresis = DEFAULT_POLICY,
) -> Decision:
    """Decide the topology from ``signals``; pure, so a table of workloads can test it.

    Args:
        signals: the measurements (see :func:`measure`).
        current: the topology in force (None: none recorded, choose the best now).
        previous: the last decision, whose ``streak`` continues the hysteresis window.
        model: the cost model's constants.
        policy: the switching margin and window.

    Returns:
        The decision: ``switch`` is True when the fleet should move to ``topology``.
    """
    latency, risk, calibration = costs(signals, model)
    scores = {t: latency[t] + risk[t] for t in TOPOLOGIES}
    best = min(TOPOLOGIES, key=lambda t: (scores[t], TOPOLOGIES.index(t)))
    reasons = _why(signals, model, latency, risk)
    if calibration != 1.0:
        reasons.append(
            f"latencies scaled x{calibration:.2f}: measured p50 {signals.claim_p50_ms:.2f} ms "
            f"under {signals.measured_topology}"
        )

    def decide(topology: Topology, switch: bool, streak: int, why: str) -> Decision:
        return Decision(
            topology=topology,
            previous=current,
            switch=switch,
            best=best,
            scores={t: round(v, 4) for t, v in scores.items()},
            latency_ms={t: round(v, 4) for t, v in latency.items()},
            risk_ms={t: round(v, 4) for t, v in risk.items()},
            reasons=(*reasons, why),
            streak=streak,
            calibration=round(calibration, 4),
            signals=signals,
        )

    if current is None:
        return decide(best, True, 0, f"no topology in force: start with {best}")
    if best == current:
        return decide(current, False, 0, f"{current} is already the cheapest")
    gain = 1.0 - scores[best] / scores[current] if scores[current] > 0 else 0.0
    if latency[current] >= SATURATED_MS:
        return decide(best, True, 1, f"{current} is saturated: switch to {best} now")
    if gain < policy.margin:
        return decide(
            current,
            False,
            0,
            f"{best} beats {current} by {gain:.0%}, under the {policy.margin:.0%} margin: stay",
        )
    streak = previous.streak + 1 if previous is not None and previous.best == best else 1
    if streak >= policy.window:
        return decide(
            best,
            True,
            streak,
            f"{best} beats {current} by {gain:.0%} {streak} times running: switch",
        )
    return decide(
        current,
        False,
        streak,
        f"{best} beats {current} by {gain:.0%} ({streak}/{policy.window} decisions): wait",
    )


def selection_event(fleet: str, decision: Decision) -> TopologySelected:
    """The event that records a decision (its stream sequence becomes the epoch)."""
    signals = decision.signals.as_dict() if decision.signals is not None else {}
    return TopologySelected(
        fleet=fleet,
        topology=decision.topology,
        previous=decision.previous,
        signals=signals,
        scores=dict(decision.scores),
        reasons=decision.reasons,
    )


# -- reading the log ----------------------------------------------------------------------------


class InForce(msgspec.Struct, frozen=True, kw_only=True):
    """A fleet's topology as recorded: the last decision and its epoch (0: none yet)."""

    fleet: str
    topology: Topology | None
    epoch: int
    decision: TopologySelected | None = None
    recorded_at_ns: int = 0


async def topology_in_force(log: EventLog, fleet: str) -> InForce:
    """The fleet's last :class:`TopologySelected` (``topology`` None when never chosen).

    Raises:
        LogUnavailableError: the server cannot be reached.
    """
    last = await log.last(topology_subject(fleet))
    if last is None:
        return InForce(fleet=fleet, topology=None, epoch=0)
    event = last.decode()
    if not isinstance(event, TopologySelected):  # pragma: no cover - subject implies type
        raise EventDecodeError(last.subject, last.seq, "not a TopologySelected")
    return InForce(
        fleet=fleet,
        topology=event.topology,
        epoch=last.seq,
        decision=event,
        recorded_at_ns=last.recorded_at_ns,
    )


async def topology_history(log: EventLog, fleet: str) -> list[InForce]:
    """Every decision recorded for the fleet, oldest first."""
    out: list[InForce] = []
    async for env in log.read("AQE_COORD", subjects=topology_subject(fleet)):
        event = env.decode()
        if isinstance(event, TopologySelected):
            out.append(
                InForce(
                    fleet=fleet,
                    topology=event.topology,
                    epoch=env.seq,
                    decision=event,
                    recorded_at_ns=env.recorded_at_ns,
                )
            )
    return out


async def live_agents(log: EventLog, now_ns: int | None = None) -> int:
    """Agents the membership fold says are alive now (0 when none ever registered)."""
    from aqe.coordination.membership import (
        AGENTS_STREAM,
        MembershipState,
        apply_membership,
        membership,
    )

    state = MembershipState()
    async for env in log.read(AGENTS_STREAM):
        try:
            event = env.decode()
        except EventDecodeError:
            continue
        state = apply_membership(state, env, event)
    now = time.time_ns() if now_ns is None else now_ns
    return sum(1 for lv in membership(state, now) if lv.status == "alive")


# -- measuring ---------------------------------------------------------------------------------


def _assign_ms(board: TaskBoard, since_ns: int) -> float:
    """Median gap between one assigner's consecutive claims while work was waiting."""
    last_by: dict[str, int] = {}
    gaps: list[float] = []
    for claim in board.claims_since(since_ns):
        if claim.assigned_by is None:
            continue
        before = last_by.get(claim.assigned_by)
        last_by[claim.assigned_by] = claim.claimed_ns
        # The task was already waiting when the assigner made its previous claim, so
        # the gap is the assigner's own service time, not idle time.
        if before is not None and claim.pending_since_ns <= before:
            gaps.append((claim.claimed_ns - before) / 1e6)
    return percentile(gaps, 0.5) if len(gaps) >= 5 else 0.0


def measure(
    board: TaskBoard,
    *,
    agents: int | None = None,
    window_s: float = 60.0,
    now_ns: int | None = None,
) -> Signals:
    """Signals over the last ``window_s`` of server time (ending at the board's newest).

    Args:
        board: the folded task board.
        agents: live agents (None: the distinct agents that claimed in the window).
        window_s: how far back to look.
        now_ns: the window's end (default: the newest timestamp folded; pure).
    """
    end = board.last_ns if now_ns is None else now_ns
    since = end - int(window_s * 1e9)
    claims = board.claims_since(since)
    latencies = [c.latency_ms for c in claims]
    recent = [e for e in board.tasks.values() if e.submitted_ns >= since]
    first = min((e.submitted_ns for e in recent), default=end)
    span_s = max((end - first) / 1e9, 1.0) if recent else window_s
    rate = len(recent) / min(window_s, span_s) if recent else 0.0
    outcomes = board.outcomes_since(since)
    failure_rate = sum(o.failed for o in outcomes) / len(outcomes) if outcomes else 0.0
    runs = [o.duration_ms for o in outcomes if o.duration_ms > 0]
    counts: dict[str, int] = {}
    for claim in claims:
        counts[claim.topology] = counts.get(claim.topology, 0) + 1
    measured = max(counts, key=lambda t: counts[t]) if counts else None
    assign = _assign_ms(board, since)
    live = agents if agents is not None else len({c.agent for c in claims})
    return Signals(
        agents=live,
        complexity=sum(e.complexity for e in recent) / len(recent) if recent else 1.0,
        rate=rate,
        task_ms=sum(runs) / len(runs) if runs else 0.0,
        claim_p50_ms=percentile(latencies, 0.5),
        claim_p95_ms=percentile(latencies, 0.95),
        claims=len(claims),
        failure_rate=failure_rate,
        assign_ms=assign,
        coordinator_load=rate * assign / 1000.0,
        backlog=len(board.pending),
        measured_topology=measured if measured in TOPOLOGIES else None,
    )


WORKLOADS: Final[tuple[tuple[str, Signals], ...]] = (
    ("3 agents, light steady load", Signals(agents=3, rate=20, task_ms=50)),
    ("4 agents, burst of tiny tasks", Signals(agents=4, rate=2000, complexity=0.01, task_ms=1)),
    (
        "3 agents, tiny tasks, 2% failing",
        Signals(agents=3, rate=1500, complexity=0.01, task_ms=1, failure_rate=0.02),
    ),
    (
        "8 agents, flaky hosts (20% fail)",
        Signals(agents=8, rate=50, task_ms=40, failure_rate=0.2),
    ),
    ("8 agents, long complex tasks", Signals(agents=8, rate=6, complexity=10.0)),
    ("12 agents, 300 tasks/s", Signals(agents=12, rate=300, task_ms=20)),
    (
        "6 agents, 800 tasks/s, slow coordinator",
        Signals(agents=6, rate=800, task_ms=1, assign_ms=1.0, coordinator_load=0.8),
    ),
    (
        "8 agents, star measured slow",
        Signals(
            agents=8,
            rate=400,
            task_ms=2,
            claim_p50_ms=6.0,
            claims=500,
            measured_topology="star",
            assign_ms=1.6,
            coordinator_load=0.64,
        ),
    ),
    ("32 agents, 1000 tasks/s", Signals(agents=32, rate=1000, task_ms=10)),
    ("64 agents, busy, 1% failing", Signals(agents=64, rate=500, task_ms=60, failure_rate=0.01)),
    (
        "200 agents, heavy, 0.5% failing",
        Signals(agents=200, rate=2000, task_ms=50, failure_rate=0.005),
    ),
)
"""Representative workloads: the selector's decisions for them are a documented table
(``aqe topology table``) and a unit test."""


class TableRow(msgspec.Struct, frozen=True, kw_only=True):
    """One workload of :func:`decision_table` and the selector's choice for it."""

    workload: str
    signals: Signals
    scores: dict[str, float]
    best: Topology
    why: str


def decision_table(
    workloads: Sequence[tuple[str, Signals]] = WORKLOADS,
    *,
    model: CostModel = DEFAULT_MODEL,
) -> list[TableRow]:
    """One row per workload: its signals, every topology's score and the choice."""
    rows: list[TableRow] = []
    for name, signals in workloads:
        decision = select(signals, None, model=model)
        rows.append(
            TableRow(
                workload=name,
                signals=signals,
                scores=dict(decision.scores),
                best=decision.best,
                why=next(r for r in decision.reasons if r.startswith(decision.best)),
            )
        )
    return rows
