"""Views of learning, workflows and the fleet: APFD per policy, workflow outcomes, agents.

Pure functions from projection states (the experience buffers, folded workflow
instances, membership) to :class:`~aqe.report.model.Section` objects.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from aqe.report.model import Figure, Section, Source, Table
from aqe.report.tests_views import layout

if TYPE_CHECKING:
    from aqe.coordination.lease import Lease
    from aqe.coordination.membership import MembershipState
    from aqe.coordination.tasks import TaskBoard
    from aqe.learning.experience import ExperienceState
    from aqe.workflows.engine import Instance

__all__ = [
    "Proposal",
    "coordination_tables",
    "cycle_apfd",
    "fleet_section",
    "learning_section",
    "workflows_section",
]

_UNREADABLE_REWARDS = frozenset({"failcount"})


def cycle_apfd(state: ExperienceState) -> dict[str, list[tuple[str, float]]]:
    """Per policy, ``(cycle, APFD)`` of the order it chose in each recorded cycle.

    The order is the steps by descending action (the priority the policy gave); a step
    is a failing test when its reward says so: ``tcfail`` and ``timerank`` give every
    failed test a positive reward (``timerank`` -1 when the budget left it out).
    ``aqe learn train`` records one of those two; a policy whose ``PolicyTrained``
    names ``failcount`` (every test gets the same value) is left out.
    Cycles without a failure have no APFD and are skipped.
    """
    from aqe.learning.metrics import apfd

    out: dict[str, list[tuple[str, float]]] = {}
    for policy_id in sorted(state.policies):
        buffer = state.policies[policy_id]
        if _reward(buffer.trained) in _UNREADABLE_REWARDS:
            continue
        by_cycle: dict[str, list[tuple[float, int]]] = defaultdict(list)
        order: list[str] = []
        for step in buffer.steps:
            if step.cycle not in by_cycle:
                order.append(step.cycle)
            failed = step.reward > 0 or step.reward == -1.0
            by_cycle[step.cycle].append((step.action, int(failed)))
        series: list[tuple[str, float]] = []
        for cycle in order:
            ranked = sorted(by_cycle[cycle], key=lambda s: -s[0])
            value = apfd([f for _, f in ranked])
            if value is not None:
                series.append((cycle, value))
        if series:
            out[policy_id] = series
    return out


def _reward(trained: list[dict[str, Any]]) -> str:
    """The reward a policy was trained with (its newest ``PolicyTrained`` says), or ""."""
    for fact in reversed(trained):
        value = (fact.get("hyperparameters") or {}).get("reward")
        if value:
            return str(value).strip('"')
    return ""


def learning_section(state: ExperienceState, checkpoint: int) -> Section | None:
    """APFD per policy over cycles; None when no policy recorded readable experience."""
    series = cycle_apfd(state)
    if not series:
        return None
    source = Source(
        events=("learning.experience.recorded.v1", "learning.policy.trained.v1"),
        stream="AQE_LEARNING",
        first_seq=1 if checkpoint else 0,
        last_seq=checkpoint,
        via="experience projection",
    )
    traces = [
        {
            "type": "scatter",
            "mode": "lines",
            "name": f"{policy_id} ({state.policies[policy_id].algorithm})",
            "x": list(range(1, len(points) + 1)),
            "y": [round(v, 4) for _, v in points],
            "customdata": [c for c, _ in points],
            "hovertemplate": "cycle %{customdata}<br>APFD %{y:.3f}<extra></extra>",
        }
        for policy_id, points in series.items()
    ]
    means = [
        [
            pid,
            state.policies[pid].algorithm,
            f"{len(pts):,}",
            f"{sum(v for _, v in pts) / len(pts):.4f}",
        ]
        for pid, pts in series.items()
    ]
    return Section(
        key="learning",
        title="Learning: APFD per policy over CI cycles",
        items=[
            Figure(
                key="apfd-per-policy",
                title="APFD of each policy's order, per cycle with a failure",
                source=source,
                data=traces,
                layout=layout(
                    xaxis={"title": {"text": "cycle with a failure"}},
                    yaxis={"title": {"text": "APFD"}, "range": [0, 1]},
                ),
            ),
            Table(
                key="apfd-means",
                title="Mean APFD per policy",
                source=source,
                columns=["policy", "algorithm", "cycles", "mean APFD"],
                rows=means,
            ),
        ],
    )


def workflows_section(
    instances: Mapping[str, Instance], first_seq: int, last_seq: int
) -> Section | None:
    """Workflow instances by workflow and outcome; None when there are none."""
    if not instances:
        return None
    counts: Counter[tuple[str, str]] = Counter(
        (i.workflow, i.status or "running") for i in instances.values()
    )
    workflows = sorted({w for w, _ in counts})
    states = sorted({s for _, s in counts})
    colours = {
        "succeeded": "#2e7d32",
        "failed": "#c62828",
        "gave-up": "#6a1b9a",
        "cancelled": "#9e9e9e",
        "running": "#1565c0",
    }
    source = Source(
        events=("workflow.instance.*",),
        stream="AQE_WORKFLOWS",
        first_seq=first_seq,
        last_seq=last_seq,
        via="workflow instances folded from the log",
    )
    newest = sorted(instances.values(), key=lambda i: -i.last_seq)[:20]
    return Section(
        key="workflows",
        title="Workflows",
        items=[
            Figure(
                key="workflow-states",
                title=f"Workflow instances by state ({len(instances):,})",
                source=source,
                data=[
                    {
                        "type": "bar",
                        "name": s,
                        "x": workflows,
                        "y": [counts.get((w, s), 0) for w in workflows],
                        "marker": {"color": colours.get(s, "#757575")},
                    }
                    for s in states
                ],
                layout=layout(barmode="stack", yaxis={"title": {"text": "instances"}}),
            ),
            Table(
                key="workflow-newest",
                title="Newest instances",
                source=source,
                columns=["instance", "workflow", "state", "result"],
                rows=[
                    [
                        i.instance_id,
                        i.workflow,
                        i.status or "running",
                        ", ".join(f"{k}={v}" for k, v in sorted(i.result.items())),
                    ]
                    for i in newest
                ],
            ),
        ],
    )


def fleet_section(
    state: MembershipState, checkpoint: int, extra: list[Table] | None = None
) -> Section:
    """Agents and their state (the dashboard's fleet view)."""
    source = Source(
        events=(
            "agents.agent.registered.v1",
            "agents.agent.heartbeat.v1",
            "agents.agent.retired.v1",
        ),
        stream="AQE_AGENTS",
        first_seq=1 if checkpoint else 0,
        last_seq=checkpoint,
        via="membership projection",
    )
    agents = [state.agents[a] for a in sorted(state.agents)]
    table = Table(
        key="agents",
        title=f"Agents ({len(agents)})",
        source=source,
        columns=["agent", "role", "status", "load", "beats", "retired"],
        rows=[
            [
                a.agent_id,
                a.role,
                a.status,
                f"{a.load:.2f}",
                f"{a.beat:,}",
                "yes" if a.retired else "",
            ]
            for a in agents
        ],
        note="" if agents else "no agent has registered",
    )
    return Section(key="fleet", title="Fleet", items=[table, *(extra or [])])


class Proposal(msgspec.Struct, kw_only=True):
    """A proposal as its opening and the votes cast on it say (counted, not verified)."""

    question: str
    mode: str
    voters: int
    votes: dict[str, int] = msgspec.field(default_factory=dict)


def coordination_tables(
    leases: Mapping[str, Lease],
    board: TaskBoard,
    proposals: Mapping[str, Proposal],
    first_seq: int,
    last_seq: int,
) -> list[Table]:
    """Leaders and terms, tasks per topology, and votes (the dashboard's fleet view)."""
    source = Source(
        events=("coord.lease.*", "coord.task.*", "coord.proposal.*"),
        stream="AQE_COORD",
        first_seq=first_seq,
        last_seq=last_seq,
        via="lease, task-board and vote folds",
    )
    per_topology: dict[str, Counter[str]] = defaultdict(Counter)
    for task in board.tasks.values():
        where = task.topology or ("work queue" if task.queued else "not assigned")
        per_topology[where][task.status] += 1
    statuses = sorted({st for counts in per_topology.values() for st in counts})
    return [
        Table(
            key="leaders",
            title=f"Leaders ({len(leases)} groups)",
            source=source,
            columns=["group", "holder", "term (fencing token)", "state"],
            rows=[
                [g, lease.holder, f"{lease.term:,}", "released" if lease.released else "held"]
                for g, lease in sorted(leases.items())
            ],
            note="" if leases else "no leader elected",
        ),
        Table(
            key="tasks-per-topology",
            title=f"Tasks per topology ({len(board.tasks):,} tasks)",
            source=source,
            columns=["topology", *statuses],
            rows=[
                [t, *(f"{c.get(st, 0):,}" for st in statuses)]
                for t, c in sorted(per_topology.items())
            ],
            note="" if board.tasks else "no task submitted",
        ),
        Table(
            key="votes",
            title=f"Votes ({len(proposals)} proposals)",
            source=source,
            columns=["proposal", "question", "mode", "voters", "votes cast"],
            rows=[
                [
                    pid,
                    p.question,
                    p.mode,
                    str(p.voters),
                    ", ".join(f"{choice}: {n}" for choice, n in sorted(p.votes.items())),
                ]
                for pid, p in sorted(proposals.items())
            ],
            note="votes as cast; `aqe vote tally` checks signatures and quorum"
            if proposals
            else "no proposal opened",
        ),
    ]
