"""The dashboard's fleet tables: leaders and terms, tasks per topology, votes."""

from __future__ import annotations

from aqe.coordination.lease import fold_leases
from aqe.coordination.tasks import fold_board
from aqe.events import Envelope, Event, LeaseAcquired, TaskClaimed, TaskCompleted, TaskSubmitted
from aqe.log.subjects import subject_for
from aqe.report.fleet_views import Proposal, coordination_tables


def envelopes(events: list[Event]) -> list[Envelope]:
    return [
        Envelope(
            stream="AQE_COORD",
            seq=seq,
            subject=subject_for(event),
            event_id=f"e{seq}",
            event_type=event.type_tag(),
            recorded_at_ns=seq * 1_000_000,
            data=event.to_json(),
        )
        for seq, event in enumerate(events, start=1)
    ]


def test_leaders_tasks_per_topology_and_votes() -> None:
    envs = envelopes(
        [
            LeaseAcquired(group="ci", holder="agent-a", lease_ms=5_000, after_seq=0),
            TaskSubmitted(task_id="t1", kind="pytest"),
            TaskSubmitted(task_id="t2", kind="pytest"),
            TaskClaimed(task_id="t1", agent_id="agent-b", topology="mesh", epoch=1),
            TaskCompleted(task_id="t1", agent_id="agent-b"),
            LeaseAcquired(group="ci", holder="agent-c", lease_ms=5_000, after_seq=1),
        ]
    )
    tables = coordination_tables(
        fold_leases(envs),
        fold_board(e for e in envs if e.subject.startswith("aqe.coord.task.")),
        {"p1": Proposal(question="ship?", mode="quorum", voters=3, votes={"yes": 2, "no": 1})},
        1,
        len(envs),
    )
    leaders, tasks, votes = tables
    assert leaders.rows == [["ci", "agent-c", "6", "held"]]  # the newer term wins
    assert tasks.columns == ["topology", "completed", "pending"]
    assert tasks.rows == [["mesh", "1", "0"], ["not assigned", "0", "1"]]
    assert votes.rows == [["p1", "ship?", "quorum", "3", "no: 1, yes: 2"]]
    assert "AQE_COORD seq 1-6" in leaders.source.describe()
