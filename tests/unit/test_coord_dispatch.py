"""Dispatch logic in one process: the task fold, the claim rule, loads, and the four
topologies running over the in-memory log and bus (no sockets)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable

import msgspec
import pytest

from aqe.coordination._hierarchical import split_groups
from aqe.coordination._loads import Loads
from aqe.coordination._ring import RingDispatcher, Token
from aqe.coordination.bus import InMemoryBus
from aqe.coordination.dispatch import (
    DISPATCHERS,
    DispatchConfig,
    DispatchContext,
    Fleet,
    LiveBoard,
    MeshDispatcher,
    StarDispatcher,
    Worker,
    record_topology,
)
from aqe.coordination.tasks import (
    TASK_SUBJECTS,
    TaskBoard,
    abandon_agent,
    abandon_task,
    claim_task,
    complete_task,
    fold_board,
    new_task_id,
    percentile,
    submit_task,
    submit_tasks,
)
from aqe.coordination.topology import topology_subject
from aqe.errors import CommandRejectedError, ConcurrencyError
from aqe.events import TaskClaimed, TaskSubmitted, TopologySelected
from aqe.events.coordination import Topology
from aqe.log import InMemoryEventLog

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def log() -> AsyncIterator[InMemoryEventLog]:
    memory = InMemoryEventLog()
    yield memory
    await memory.close()


@pytest.fixture
async def bus(log: InMemoryEventLog) -> AsyncIterator[InMemoryBus]:
    memory = InMemoryBus(log)
    yield memory
    await memory.close()


async def board_of(log: InMemoryEventLog) -> TaskBoard:
    return fold_board([env async for env in log.read("AQE_COORD", subjects=TASK_SUBJECTS)])


def task(i: int | str, **kw: object) -> TaskSubmitted:
    fields: dict[str, object] = {"kind": "noop", **kw}
    return TaskSubmitted(task_id=f"t{i}", **fields)  # type: ignore[arg-type]


# -- the claim rule -----------------------------------------------------------------------------


async def test_submit_rejects_a_task_id_twice(log: InMemoryEventLog) -> None:
    await submit_task(log, task(1))
    with pytest.raises(CommandRejectedError, match="t1"):
        await submit_task(log, task(1, kind="other"))


async def test_racing_claimers_of_any_topology_one_wins(log: InMemoryEventLog) -> None:
    submitted = await submit_task(log, task(1))
    topologies: list[Topology] = ["star", "mesh", "ring", "hierarchical"]
    results = await asyncio.gather(
        *(
            claim_task(
                log,
                task(1),
                after_seq=submitted.seq,
                attempt=1,
                agent_id=f"a{i}",
                topology=topologies[i % 4],
                epoch=i,
            )
            for i in range(12)
        )
    )
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    board = await board_of(log)
    assert board.claimed == 1
    assert board.tasks["t1"].agent == winners[0].agent_id
    assert board.anomalies == []


async def test_a_stale_view_cannot_claim(log: InMemoryEventLog) -> None:
    submitted = await submit_task(log, task(1))
    first = await claim_task(
        log, task(1), after_seq=submitted.seq, attempt=1, agent_id="a", topology="star", epoch=0
    )
    assert first is not None
    # A claimer that read the task before the first claim loses, whatever its id.
    again = await claim_task(
        log, task(1), after_seq=submitted.seq, attempt=1, agent_id="b", topology="mesh", epoch=9
    )
    assert again is None


async def test_completion_is_conditional_on_the_claim(log: InMemoryEventLog) -> None:
    submitted = await submit_task(log, task(1))
    claim = await claim_task(
        log, task(1), after_seq=submitted.seq, attempt=1, agent_id="a", topology="star", epoch=0
    )
    assert claim is not None
    done = await complete_task(log, claim, result="fine", duration_ms=3.25)
    assert done is not None
    # A second completion (a retry of the owner, a forged one) is not stored again.
    assert await complete_task(log, claim, ok=False) is None
    board = await board_of(log)
    entry = board.tasks["t1"]
    assert (entry.status, entry.ok, entry.completions) == ("completed", True, 1)


async def test_abandoned_task_is_claimed_again_as_the_next_attempt(log: InMemoryEventLog) -> None:
    submitted = await submit_task(log, task(1))
    first = await claim_task(
        log, task(1), after_seq=submitted.seq, attempt=1, agent_id="a", topology="star", epoch=0
    )
    assert first is not None
    board = await board_of(log)
    abandoned = await abandon_task(log, board.tasks["t1"], reason="a died")
    assert abandoned is not None
    board = await board_of(log)
    assert board.tasks["t1"].status == "pending"
    assert list(board.pending) == ["t1"]
    second = await claim_task(
        log, task(1), after_seq=abandoned.seq, attempt=2, agent_id="b", topology="mesh", epoch=0
    )
    assert second is not None
    # The first owner's late completion is refused: the claim is no longer the last word.
    assert await complete_task(log, first) is None
    assert await complete_task(log, second) is not None
    board = await board_of(log)
    entry = board.tasks["t1"]
    assert (entry.attempt, entry.agent, entry.completions, entry.abandons) == (2, "b", 1, 1)
    assert board.failed == 0
    assert board.abandoned == 1


async def test_abandon_needs_a_claimed_task(log: InMemoryEventLog) -> None:
    await submit_task(log, task(1))
    board = await board_of(log)
    with pytest.raises(CommandRejectedError, match="t1 is pending"):
        await abandon_task(log, board.tasks["t1"])


# -- the fold -----------------------------------------------------------------------------------


async def test_board_counts_and_indexes(log: InMemoryEventLog) -> None:
    results = await submit_tasks(log, [task(i, complexity=float(i)) for i in range(3)])
    claim = await claim_task(
        log, task(0), after_seq=results[0].seq, attempt=1, agent_id="a", topology="ring", epoch=4
    )
    assert claim is not None
    board = await board_of(log)
    assert (board.submitted, board.claimed, len(board.pending)) == (3, 1, 2)
    assert board.in_flight() == {"a": 1}
    assert [e.task_id for e in board.pending_entries()] == ["t1", "t2"]
    assert board.pending_entries(limit=1)[0].task_id == "t1"
    await complete_task(log, claim, ok=False, result="boom")
    board = await board_of(log)
    assert board.in_flight() == {}
    summary = board.summary()
    assert summary["failed"] == 1
    assert summary["by_topology"] == {
        "ring": {
            "claims": 1.0,
            "latency_p50_ms": pytest.approx(board.claims[0].latency_ms),
            "latency_p95_ms": pytest.approx(board.claims[0].latency_ms),
        }
    }


async def test_board_replay_is_deterministic_and_idempotent(log: InMemoryEventLog) -> None:
    results = await submit_tasks(log, [task(i) for i in range(5)])
    for i, r in enumerate(results[:3]):
        await claim_task(
            log, task(i), after_seq=r.seq, attempt=1, agent_id="a", topology="star", epoch=0
        )
    envs = [env async for env in log.read("AQE_COORD")]
    once = fold_board(envs)
    twice = fold_board(envs, fold_board(envs))  # applying a prefix again changes nothing
    assert once.summary() == twice.summary()
    assert msgspec.json.encode(list(once.tasks.values())) == msgspec.json.encode(
        list(twice.tasks.values())
    )


def test_board_reports_impossible_sequences_as_anomalies() -> None:
    board = TaskBoard()
    from aqe.events import Envelope, TaskCompleted
    from aqe.log.subjects import subject_for

    def env(seq: int, event: object) -> Envelope:
        assert isinstance(event, TaskSubmitted | TaskClaimed | TaskCompleted)
        return Envelope(
            stream="AQE_COORD",
            seq=seq,
            subject=subject_for(event),
            event_id=str(seq),
            event_type=event.type_tag(),
            recorded_at_ns=seq,
            data=event.to_json(),
        )

    board.apply(env(1, TaskCompleted(task_id="ghost", agent_id="a")))
    board.apply(env(2, task(1)))
    board.apply(env(3, TaskClaimed(task_id="t1", agent_id="a", topology="star", epoch=0)))
    board.apply(env(4, TaskClaimed(task_id="t1", agent_id="b", topology="mesh", epoch=0)))
    assert len(board.anomalies) == 2
    assert "unknown task ghost" in board.anomalies[0]
    assert "claimed while claimed" in board.anomalies[1]


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 11)]
    assert percentile(values, 0.5) == 5.0
    assert percentile(values, 0.95) == 10.0
    assert percentile(values, 0.1) == 1.0
    assert percentile([], 0.5) == 0.0


# -- loads, groups, tokens -------------------------------------------------------------------


def test_loads_pick_the_most_free_then_round_robin() -> None:
    loads = Loads({"a": 2, "b": 2, "c": 1})
    picks = []
    for i in range(5):
        holder = loads.pick()
        assert holder is not None
        loads.add(f"t{i}", holder)
        picks.append(holder)
    assert sorted(picks) == ["a", "a", "b", "b", "c"]
    assert loads.pick() is None
    loads.done("t0")
    assert loads.pick() == picks[0]
    loads.done("missing")  # unknown tasks are ignored
    assert loads.total_free() == 1


def test_split_groups_about_square_root() -> None:
    ids = [f"a{i:02}" for i in range(10)]
    groups = split_groups(ids)
    assert [len(g) for g in groups] == [3, 3, 3, 1]
    assert [m for g in groups for m in g] == sorted(ids)
    assert split_groups(ids, group_size=5) == [tuple(ids[:5]), tuple(ids[5:])]
    assert split_groups(["x"]) == [("x",)]


def test_token_copies_are_ordered_by_generation_then_origin() -> None:
    older = Token(epoch=1, generation=3, origin="z", order=("a",))
    newer = Token(epoch=1, generation=4, origin="a", order=("a",))
    tie = Token(epoch=1, generation=4, origin="b", order=("a",))
    assert older.key < newer.key < tie.key


# -- topologies over the in-memory log and bus -----------------------------------------------


Runs = Counter[str]


def make_workers(
    log: InMemoryEventLog, n: int, runs: Runs, *, capacity: int = 2, delay: float = 0.0
) -> list[Worker]:
    async def handler(t: TaskSubmitted) -> str:
        runs[t.task_id] += 1
        await asyncio.sleep(delay)
        if t.params.get("fail"):
            raise RuntimeError("asked to fail")
        return f"did {t.task_id}"

    return [Worker(f"w{i}", handler, log=log, capacity=capacity) for i in range(n)]


async def wait_for(predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


FAST = DispatchConfig(lease_ms=300, reroute_s=0.5, ring_hold_s=0.01, token_timeout_s=0.5)


@pytest.mark.parametrize("topology", list(DISPATCHERS))
async def test_each_topology_runs_every_task_once(
    log: InMemoryEventLog, bus: InMemoryBus, topology: Topology
) -> None:
    runs: Runs = Counter()
    workers = make_workers(log, 5, runs, delay=0.001)
    fleet = Fleet(log, bus, workers, fleet="unit", initial=topology, config=FAST)
    await fleet.start()
    try:
        tasks = [task(i) for i in range(40)] + [
            TaskSubmitted(task_id="bad", kind="noop", params={"fail": "1"})
        ]
        await submit_tasks(log, tasks)
        await wait_for(lambda: fleet.board.board.completed == 41)
    finally:
        await fleet.stop()
    board = await board_of(log)
    assert runs == Counter({t.task_id: 1 for t in tasks})
    assert board.claimed == board.completed == 41
    assert board.failed == 1
    assert board.tasks["bad"].ok is False
    assert board.anomalies == []
    assert set(board.claims_by_topology) == {topology}
    assert {e.epoch for e in board.tasks.values()} == {0}
    assert all(e.completions == 1 for e in board.tasks.values())
    assigners = {e.assigned_by for e in board.tasks.values()}
    if topology == "star":
        assert len(assigners) == 1
        assert str(next(iter(assigners))).startswith("star:unit:")
    elif topology == "hierarchical":  # group leaders, who are members too
        assert assigners <= {w.agent_id for w in workers}
    elif topology == "ring":  # the token holder claims for itself
        assert all(e.assigned_by == e.agent for e in board.tasks.values())
    else:
        assert assigners == {None}


@pytest.mark.parametrize("topology", list(DISPATCHERS))
async def test_a_crashed_workers_task_is_abandoned_and_run_once_more(
    log: InMemoryEventLog, bus: InMemoryBus, topology: Topology
) -> None:
    runs: Runs = Counter()
    hung: set[str] = set()
    release = asyncio.Event()

    async def handler(t: TaskSubmitted) -> str:
        runs[t.task_id] += 1
        if t.task_id == "t-hang" and not hung:
            hung.add(t.task_id)
            await release.wait()  # never set: this attempt dies with its worker
        return "ok"

    workers = [Worker(f"w{i}", handler, log=log, capacity=2) for i in range(4)]
    fleet = Fleet(log, bus, workers, fleet="unit", initial=topology, config=FAST)
    await fleet.start()
    try:
        await submit_tasks(log, [task("-hang"), *(task(i) for i in range(10))])
        await wait_for(lambda: bool(hung) and fleet.board.board.completed == 10)
        owner = fleet.board.board.tasks["t-hang"].agent
        assert owner is not None
        await fleet.ctx.worker(owner).crash()
        assert await abandon_agent(log, fleet.board.board, owner, reason="crashed") == 1
        await wait_for(lambda: fleet.board.board.completed == 11)
    finally:
        await fleet.stop()
    board = await board_of(log)
    entry = board.tasks["t-hang"]
    assert (entry.attempt, entry.abandons, entry.completions) == (2, 1, 1)
    assert entry.agent != owner
    assert runs["t-hang"] == 2  # once per attempt
    assert all(runs[f"t{i}"] == 1 for i in range(10))
    assert board.anomalies == []


async def test_star_spreads_work_by_free_slots(log: InMemoryEventLog, bus: InMemoryBus) -> None:
    runs: Runs = Counter()
    workers = make_workers(log, 3, runs, capacity=1, delay=0.01)
    async with Fleet(log, bus, workers, fleet="unit", initial="star") as fleet:
        await submit_tasks(log, [task(i) for i in range(9)])
        # A run is counted before its completion is appended: wait for the completions.
        await wait_for(lambda: fleet.board.board.completed == 9)
    board = await board_of(log)
    per_agent = Counter(e.agent for e in board.tasks.values())
    assert per_agent == Counter({"w0": 3, "w1": 3, "w2": 3})


async def test_a_lost_notification_is_made_up_from_the_log(
    log: InMemoryEventLog, bus: InMemoryBus
) -> None:
    runs: Runs = Counter()
    workers = make_workers(log, 2, runs)
    config = DispatchConfig(notify_grace_s=0.1)
    fleet = Fleet(log, bus, workers, fleet="unit", initial="star", config=config)
    await fleet.start()
    try:
        # Nobody listens on the agents' subjects any more: every notice is lost.
        for sub in fleet._subs:
            await sub.unsubscribe()
        await submit_tasks(log, [task(i) for i in range(6)])
        await wait_for(lambda: fleet.board.board.completed == 6)
    finally:
        await fleet.stop()
    assert runs == Counter({f"t{i}": 1 for i in range(6)})


async def test_mesh_starts_from_the_oldest_pending_task(
    log: InMemoryEventLog, bus: InMemoryBus
) -> None:
    # Claimed work before the mesh starts is skipped without an append; pending work is taken.
    results = await submit_tasks(log, [task(i) for i in range(6)])
    for i, r in enumerate(results[:3]):
        await claim_task(
            log,
            task(i),
            after_seq=r.seq,
            attempt=1,
            agent_id="elsewhere",
            topology="star",
            epoch=0,
        )
    runs: Runs = Counter()
    fleet = Fleet(log, bus, make_workers(log, 2, runs), fleet="unit", initial="mesh")
    await fleet.start()
    try:
        await wait_for(lambda: fleet.board.board.completed == 3)
        mesh = fleet.dispatcher
        assert isinstance(mesh, MeshDispatcher)
        assert mesh.claimed == 3
        assert mesh.lost == 0
    finally:
        await fleet.stop(wait_workers=False)
    assert runs == Counter({"t3": 1, "t4": 1, "t5": 1})


async def test_two_topologies_claiming_at_once_still_run_each_task_once(
    log: InMemoryEventLog, bus: InMemoryBus
) -> None:
    # A claimer that has not heard of a switch keeps going: the claim rule still holds.
    runs: Runs = Counter()
    fleet = Fleet(log, bus, make_workers(log, 4, runs, delay=0.002), fleet="unit")
    await fleet.start()
    try:
        rogue = MeshDispatcher(fleet.ctx, epoch=99)
        await rogue.start()
        await submit_tasks(log, [task(i) for i in range(60)])
        await wait_for(lambda: fleet.board.board.completed == 60)
        await rogue.drain()
    finally:
        await fleet.stop()
    board = await board_of(log)
    assert runs == Counter({f"t{i}": 1 for i in range(60)})
    assert board.claimed == 60
    assert board.anomalies == []


async def test_a_claim_is_conditional_on_the_state_seen_when_deciding(
    log: InMemoryEventLog, bus: InMemoryBus
) -> None:
    # Regression: a claim that read the entry after an await used another claimer's claim
    # as its condition and was stored on top of it.
    live = LiveBoard(log)
    await live.start()
    ctx = DispatchContext("unit", log, bus, live, make_workers(log, 2, Counter()), FAST)
    star = StarDispatcher(ctx, epoch=5)  # not started: only its claim path is used
    try:
        submitted = await submit_task(log, task(1))
        await live.reach(submitted.seq)
        entry = live.board.pending_entries()[0]
        spawned = star.spawn_claim(entry, agent_id="w0", assigned_by="star:unit")
        # Another claimer wins before the spawned claim runs; the board moves on.
        other = await claim_task(
            log,
            task(1),
            after_seq=submitted.seq,
            attempt=1,
            agent_id="w1",
            topology="ring",
            epoch=3,
        )
        assert other is not None
        await live.reach(other.seq)
        assert (entry.status, entry.last_seq, entry.attempt) == ("claimed", other.seq, 1)
        assert await spawned is None
        assert star.lost == 1
        with pytest.raises(ValueError, match="t1 is claimed"):
            star.spawn_claim(entry, agent_id="w0")
    finally:
        await live.stop()
    board = await board_of(log)
    assert board.claimed == 1
    assert board.anomalies == []


async def test_ring_regenerates_a_lost_token(log: InMemoryEventLog, bus: InMemoryBus) -> None:
    runs: Runs = Counter()
    workers = make_workers(log, 3, runs)
    config = DispatchConfig(ring_hold_s=0.01, token_timeout_s=0.2)
    fleet = Fleet(log, bus, workers, fleet="unit", initial="ring", config=config)
    await fleet.start()
    try:
        ring = fleet.dispatcher
        assert isinstance(ring, RingDispatcher)
        # The token vanishes: every agent drops whatever it holds from now on.
        for agent in ring.order:
            ring._best[agent] = (10**6, "~")
        await asyncio.sleep(0.05)
        for agent in ring.order:
            ring._best[agent] = (0, "")
        await submit_tasks(log, [task(i) for i in range(10)])
        await wait_for(lambda: fleet.board.board.completed == 10)
        assert ring.regenerated >= 1
    finally:
        await fleet.stop()
    assert runs == Counter({f"t{i}": 1 for i in range(10)})


async def test_ring_skips_an_agent_that_does_not_answer(
    log: InMemoryEventLog, bus: InMemoryBus
) -> None:
    runs: Runs = Counter()
    config = DispatchConfig(ring_hold_s=0.01, ring_pass_timeout_s=0.05)
    fleet = Fleet(log, bus, make_workers(log, 3, runs), fleet="unit", initial="ring", config=config)
    await fleet.start()
    try:
        ring = fleet.dispatcher
        assert isinstance(ring, RingDispatcher)
        await ring._subs[1].unsubscribe()  # w1's process is gone: nobody takes its token
        await submit_tasks(log, [task(i) for i in range(12)])
        await wait_for(lambda: fleet.board.board.completed == 12)
        assert ring.skips >= 1
    finally:
        await fleet.stop()
    assert runs == Counter({f"t{i}": 1 for i in range(12)})


async def test_ring_drops_stale_token_copies(log: InMemoryEventLog, bus: InMemoryBus) -> None:
    runs: Runs = Counter()
    fleet = Fleet(log, bus, make_workers(log, 3, runs), fleet="unit", initial="ring", config=FAST)
    await fleet.start()
    try:
        ring = fleet.dispatcher
        assert isinstance(ring, RingDispatcher)
        await asyncio.sleep(0.05)
        stale = Token(epoch=ring.epoch, generation=0, origin="w0", order=ring.order)
        other_epoch = Token(epoch=ring.epoch + 1, generation=99, origin="w0", order=ring.order)
        assert not ring._receive("w1", stale)
        assert not ring._receive("w1", other_epoch)
        assert ring.dropped >= 1
    finally:
        await fleet.stop()


async def test_fleet_switches_on_recorded_decisions_without_losing_tasks(
    log: InMemoryEventLog, bus: InMemoryBus
) -> None:
    runs: Runs = Counter()
    fleet = Fleet(log, bus, make_workers(log, 4, runs, delay=0.002), fleet="unit", config=FAST)
    await fleet.start()
    try:
        order: list[Topology] = ["mesh", "ring", "hierarchical", "star"]
        for round_ in range(5):
            await submit_tasks(log, [task(f"{round_}-{i}") for i in range(20)])
            if round_ < len(order):
                result = await fleet.select(order[round_], reasons=("test",))
                assert await fleet.wait_epoch(result.seq)
                assert fleet.topology == order[round_]
        await wait_for(lambda: fleet.board.board.completed == 100)
    finally:
        await fleet.stop()
    board = await board_of(log)
    assert runs == Counter({t: 1 for t in board.tasks})
    assert len(runs) == 100
    assert board.anomalies == []
    assert [s.topology for s in fleet.switches] == ["star", *order]
    assert [s.previous for s in fleet.switches] == [None, "star", *order[:-1]]
    epochs = {s.topology: s.epoch for s in fleet.switches[1:]}
    for entry in board.tasks.values():
        assert entry.topology is not None
        assert entry.epoch in (0, epochs.get(entry.topology))


async def test_recorded_decisions_are_conditional_on_the_epoch(log: InMemoryEventLog) -> None:
    event = TopologySelected(fleet="f", topology="mesh")
    first = await record_topology(log, event, expected_epoch=0)
    with pytest.raises(ConcurrencyError):
        await record_topology(log, TopologySelected(fleet="f", topology="ring"), expected_epoch=0)
    # The same decision again later is a new fact, not a duplicate.
    back = await record_topology(
        log, TopologySelected(fleet="f", topology="star"), expected_epoch=first.seq
    )
    again = await record_topology(log, event, expected_epoch=back.seq)
    assert not again.duplicate
    assert again.seq > back.seq
    last = await log.last(topology_subject("f"))
    assert last is not None
    assert last.seq == again.seq


async def test_fleet_resumes_the_recorded_topology(log: InMemoryEventLog, bus: InMemoryBus) -> None:
    result = await record_topology(
        log, TopologySelected(fleet="unit", topology="ring"), expected_epoch=0
    )
    fleet = Fleet(log, bus, make_workers(log, 2, Counter()), fleet="unit", initial="star")
    async with fleet:
        assert (fleet.topology, fleet.epoch) == ("ring", result.seq)


async def test_worker_rejects_someone_elses_claim(log: InMemoryEventLog) -> None:
    submitted = await submit_task(log, task(1))
    claim = await claim_task(
        log, task(1), after_seq=submitted.seq, attempt=1, agent_id="a", topology="star", epoch=0
    )
    assert claim is not None
    worker = make_workers(log, 1, Counter())[0]
    with pytest.raises(ValueError, match="a's, not w0's"):
        worker.accept(claim)
    with pytest.raises(ValueError, match="capacity"):
        Worker("x", worker._handler, log=log, capacity=0)


def test_star_is_the_default_dispatcher_and_all_four_are_registered() -> None:
    assert DISPATCHERS["star"] is StarDispatcher
    assert set(DISPATCHERS) == {"star", "mesh", "ring", "hierarchical"}
    assert {cls.name for cls in DISPATCHERS.values()} == set(DISPATCHERS)
    assert new_task_id().startswith("t-")
