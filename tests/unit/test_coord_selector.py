"""The topology selector: a table of workloads, the cost model, hysteresis, measuring."""

from __future__ import annotations

import pytest

from aqe.coordination.tasks import TaskBoard
from aqe.coordination.topology import (
    SATURATED_MS,
    TOPOLOGIES,
    WORKLOADS,
    CostModel,
    Decision,
    Hysteresis,
    Signals,
    costs,
    decision_table,
    group_count,
    measure,
    select,
    selection_event,
)
from aqe.events import Envelope, Event, TaskAbandoned, TaskClaimed, TaskCompleted, TaskSubmitted
from aqe.log.subjects import subject_for

# The decision the cost model makes for each documented workload, and why in one word.
EXPECTED = {
    "3 agents, light steady load": "star",  # one coordinator is cheapest when idle
    "4 agents, burst of tiny tasks": "hierarchical",  # star and the ring token saturate
    "3 agents, tiny tasks, 2% failing": "mesh",  # no single point of failure
    "8 agents, flaky hosts (20% fail)": "mesh",
    "8 agents, long complex tasks": "star",  # busy agents: a ring's token wanders
    "12 agents, 300 tasks/s": "star",
    "6 agents, 800 tasks/s, slow coordinator": "ring",  # claims spread over the holders
    "8 agents, star measured slow": "ring",  # measured latency and assign cost
    "32 agents, 1000 tasks/s": "star",  # the coordinator is at half load
    "64 agents, busy, 1% failing": "hierarchical",  # a failure stalls one group only
    "200 agents, heavy, 0.5% failing": "hierarchical",
}


def table_text() -> str:
    """The decision table, as the report and ``aqe topology table`` print it."""
    head = f"{'workload':34} " + " ".join(f"{t:>12}" for t in TOPOLOGIES) + "  best"
    lines = [head]
    for row in decision_table():
        cells = " ".join(f"{row.scores[t]:12.2f}" for t in TOPOLOGIES)
        lines.append(f"{row.workload:34} {cells}  {row.best}")
    return "\n".join(lines)


def test_decision_table_of_workloads(capsys: pytest.CaptureFixture[str]) -> None:
    rows = decision_table()
    assert {r.workload: r.best for r in rows} == EXPECTED
    assert all(r.why.startswith(r.best) for r in rows)
    with capsys.disabled():
        print("\n" + table_text())
    # Every topology is the answer to some workload: none is dead weight in the model.
    assert set(EXPECTED.values()) == set(TOPOLOGIES)


@pytest.mark.parametrize(("name", "signals"), WORKLOADS, ids=[w[0] for w in WORKLOADS])
def test_each_workload_gets_reasons_naming_every_topology(name: str, signals: Signals) -> None:
    decision = select(signals, None)
    assert decision.best == EXPECTED[name]
    assert decision.switch
    for topology in TOPOLOGIES:
        assert any(r.startswith(f"{topology}:") for r in decision.reasons), topology
    assert decision.scores[decision.best] == min(decision.scores.values())


# -- the cost model -------------------------------------------------------------------------


def test_star_saturates_as_rate_times_assign_cost_nears_one() -> None:
    model = CostModel(assign_ms=1.0)
    light, _, _ = costs(Signals(agents=4, rate=100), model)
    heavy, _, _ = costs(Signals(agents=4, rate=990), model)
    over, _, _ = costs(Signals(agents=4, rate=1200), model)
    assert light["star"] < heavy["star"] < over["star"]
    assert over["star"] >= SATURATED_MS


def test_mesh_contention_grows_with_agents_times_rate() -> None:
    few, _, _ = costs(Signals(agents=2, rate=500))
    many, _, _ = costs(Signals(agents=50, rate=500))
    assert many["mesh"] > few["mesh"] * 1.5
    contention = costs(Signals(agents=50, rate=1000))[0]["mesh"] - many["mesh"]
    assert contention == pytest.approx(many["mesh"] - few["mesh"], rel=0.1)  # ~ agents x rate


def test_ring_latency_grows_with_fleet_utilisation() -> None:
    idle, _, _ = costs(Signals(agents=16, rate=10, complexity=1.0))
    busy, _, _ = costs(Signals(agents=16, rate=150, complexity=1.0))
    assert busy["ring"] > idle["ring"]


def test_failure_rate_only_weighs_single_points_of_failure() -> None:
    _, safe, _ = costs(Signals(agents=9, rate=10))
    _, risky, _ = costs(Signals(agents=9, rate=10, failure_rate=0.1))
    assert all(v == 0 for v in safe.values())
    assert risky["mesh"] == 0
    assert risky["star"] == risky["ring"] > risky["hierarchical"] > 0
    assert risky["hierarchical"] == pytest.approx(risky["star"] / group_count(9))


def test_group_count_is_about_the_square_root() -> None:
    assert group_count(1) == 1
    assert group_count(4) == 2
    assert group_count(16) == 4
    assert group_count(100) == 10
    assert group_count(10, group_size=5) == 2


def test_measured_latency_calibrates_every_topology() -> None:
    plain = Signals(agents=4, rate=50)
    measured = Signals(agents=4, rate=50, claim_p50_ms=10.0, claims=100, measured_topology="mesh")
    base, _, one = costs(plain)
    scaled, _, factor = costs(measured)
    assert one == 1.0
    assert factor == pytest.approx(min(4.0, 10.0 / base["mesh"]))
    assert scaled["mesh"] == pytest.approx(min(10.0, base["mesh"] * 4))
    for topology in TOPOLOGIES:
        assert scaled[topology] == pytest.approx(base[topology] * factor)


def test_too_few_claims_do_not_calibrate() -> None:
    signals = Signals(agents=4, rate=50, claim_p50_ms=10.0, claims=5, measured_topology="mesh")
    assert costs(signals)[2] == 1.0


# -- hysteresis --------------------------------------------------------------------------------

STAR_SATURATED = Signals(agents=4, rate=2000, task_ms=1)
STAR_WINS = Signals(agents=3, rate=20)
RING_BETTER = Signals(agents=6, rate=800, task_ms=1, assign_ms=1.0)


def test_first_decision_takes_the_best_at_once() -> None:
    decision = select(STAR_WINS, None)
    assert (decision.topology, decision.switch, decision.previous) == ("star", True, None)


def test_staying_when_current_is_best() -> None:
    decision = select(STAR_WINS, "star")
    assert not decision.switch
    assert decision.topology == "star"
    assert "already the cheapest" in decision.reasons[-1]


def test_switch_needs_the_margin_for_a_window_of_decisions() -> None:
    policy = Hysteresis(margin=0.2, window=3)
    # Star currently, loaded but not saturated; the ring is far cheaper: wait 3 decisions.
    signals = RING_BETTER
    first = select(signals, "star", policy=policy)
    assert first.best == "ring"
    assert (first.switch, first.streak, first.topology) == (False, 1, "star")
    second = select(signals, "star", first, policy=policy)
    assert (second.switch, second.streak) == (False, 2)
    third = select(signals, "star", second, policy=policy)
    assert (third.switch, third.streak, third.topology, third.previous) == (
        True,
        3,
        "ring",
        "star",
    )
    assert "3 times running: switch" in third.reasons[-1]


def test_streak_resets_when_the_challenger_changes_or_the_gain_drops() -> None:
    policy = Hysteresis(margin=0.2, window=2)
    signals = RING_BETTER
    first = select(signals, "star", policy=policy)
    other = Decision(
        topology="star",
        previous="star",
        switch=False,
        best="hierarchical",
        scores={},
        latency_ms={},
        risk_ms={},
        reasons=(),
        streak=5,
    )
    assert select(signals, "star", other, policy=policy).streak == 1
    # Within the margin: no streak at all.
    lenient = Hysteresis(margin=0.99, window=1)
    stay = select(signals, "star", first, policy=lenient)
    assert (stay.switch, stay.streak) == (False, 0)
    assert "margin: stay" in stay.reasons[-1]


def test_no_flapping_between_close_scores() -> None:
    # The coordinator's measured cost wobbles around the point where star and ring cost
    # the same: the best flips every decision, the fleet never does.
    near = [Signals(agents=4, rate=600, task_ms=1, assign_ms=a) for a in (0.7, 0.8)]
    assert [select(s, None).best for s in near] == ["star", "ring"]
    for current in ("star", "ring"):
        previous = None
        for signals in near * 10:
            decision = select(signals, current, previous)  # type: ignore[arg-type]
            assert not decision.switch
            assert decision.topology == current
            previous = decision


def test_saturated_current_topology_switches_at_once() -> None:
    decision = select(STAR_SATURATED, "star", policy=Hysteresis(window=10))
    assert decision.switch
    assert decision.topology == "hierarchical"
    assert "saturated" in decision.reasons[-1]


def test_selection_event_records_signals_scores_and_reasons() -> None:
    decision = select(Signals(agents=8, rate=50, failure_rate=0.2), "star")
    event = selection_event("fleet-a", decision)
    assert event.fleet == "fleet-a"
    assert event.topology == decision.topology
    assert event.previous == "star"
    assert event.signals["agents"] == 8.0
    assert event.signals["failure_rate"] == 0.2
    assert set(event.scores) == set(TOPOLOGIES)
    assert event.reasons == decision.reasons
    assert subject_for(event) == "aqe.coord.topology.fleet-a.selected"


# -- measuring ---------------------------------------------------------------------------------

MS = 1_000_000


class _Log:
    """Builds envelopes with chosen server timestamps (a pure fold needs no log)."""

    def __init__(self) -> None:
        self.seq = 0
        self.envelopes: list[Envelope] = []

    def add(self, event: Event, at_ms: float) -> Envelope:
        self.seq += 1
        env = Envelope(
            stream="AQE_COORD",
            seq=self.seq,
            subject=subject_for(event),
            event_id=f"id-{self.seq}",
            event_type=event.type_tag(),
            recorded_at_ns=int(at_ms * MS),
            data=event.to_json(),
        )
        self.envelopes.append(env)
        return env


def _board(log: _Log) -> TaskBoard:
    board = TaskBoard()
    for env in log.envelopes:
        board.apply(env)
    return board


def test_measure_latency_rate_complexity_and_failures() -> None:
    log = _Log()
    for i in range(10):
        log.add(TaskSubmitted(task_id=f"t{i}", kind="k", complexity=2.0), at_ms=1000 + i * 100)
    for i in range(10):
        claim = TaskClaimed(task_id=f"t{i}", agent_id="a1", topology="mesh", epoch=0)
        log.add(claim, at_ms=1000 + i * 100 + (i + 1))  # latencies 1..10 ms
    for i in range(8):
        done = TaskCompleted(task_id=f"t{i}", agent_id="a1", ok=i != 0, duration_ms=i + 1.0)
        log.add(done, at_ms=3000 + i)
    log.add(TaskAbandoned(task_id="t9", agent_id="a1", attempt=1), at_ms=3100)
    board = _board(log)
    signals = measure(board, agents=4, window_s=60)
    assert signals.agents == 4
    assert signals.complexity == 2.0
    assert signals.claims == 10
    assert signals.claim_p50_ms == pytest.approx(5.0)
    assert signals.claim_p95_ms == pytest.approx(10.0)
    # 10 tasks over 2.1 s of server time
    assert signals.rate == pytest.approx(10 / 2.1, rel=0.01)
    # one failed completion and one abandonment among 9 outcomes
    assert signals.failure_rate == pytest.approx(2 / 9)
    assert signals.task_ms == pytest.approx(4.5)  # mean run time of the completions
    assert signals.measured_topology == "mesh"
    assert signals.backlog == 1  # t9 is claimable again
    assert signals.assign_ms == 0.0  # self-claims: no coordinator measured


def test_measure_window_excludes_old_work() -> None:
    log = _Log()
    log.add(TaskSubmitted(task_id="old", kind="k", complexity=9.0), at_ms=0)
    log.add(TaskClaimed(task_id="old", agent_id="a", topology="star", epoch=0), at_ms=500)
    log.add(TaskSubmitted(task_id="new", kind="k", complexity=1.0), at_ms=120_000)
    log.add(TaskClaimed(task_id="new", agent_id="b", topology="ring", epoch=7), at_ms=120_002)
    signals = measure(_board(log), window_s=60)
    assert signals.complexity == 1.0
    assert signals.claims == 1
    assert signals.measured_topology == "ring"
    assert signals.agents == 1  # distinct claimers when membership is not given


def test_measure_assign_cost_from_a_busy_coordinator() -> None:
    log = _Log()
    for i in range(20):
        log.add(TaskSubmitted(task_id=f"t{i}", kind="k"), at_ms=1000)  # all waiting at once
    for i in range(20):
        claim = TaskClaimed(
            task_id=f"t{i}", agent_id=f"a{i % 4}", topology="star", epoch=1, assigned_by="star:f"
        )
        log.add(claim, at_ms=1001 + i * 2.5)  # one assignment every 2.5 ms
    signals = measure(_board(log), agents=4, window_s=60)
    assert signals.assign_ms == pytest.approx(2.5)
    assert signals.coordinator_load == pytest.approx(signals.rate * 2.5 / 1000)


def test_measure_empty_board() -> None:
    signals = measure(TaskBoard(), agents=3)
    assert signals == Signals(agents=3)
    assert select(signals, None).best == "star"
