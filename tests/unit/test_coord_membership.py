"""Membership: the pure fold, liveness over a fake clock, gossip, and the runtimes in memory."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from aqe.coordination.agent import AgentRuntime, session_event_id
from aqe.coordination.membership import (
    FailureDetector,
    MembershipMonitor,
    MembershipProjection,
    MembershipState,
    apply_membership,
    liveness,
    membership,
)
from aqe.errors import ConfigError
from aqe.events import (
    AgentHeartbeat,
    AgentRegistered,
    AgentRetired,
    AgentSuspected,
    Envelope,
    Event,
)
from aqe.log import InMemoryEventLog, load_stream_specs, subject_for
from aqe.projections import MemoryDeadLetters, ProjectionRunner, SnapshotStore, rebuild, verify

S = 1_000_000_000
DET = FailureDetector(interval_s=1.0, suspect_after=3, dead_after=6)


class Log:
    """A hand-written AQE_AGENTS: events with the server times the test chooses."""

    def __init__(self) -> None:
        self.envs: list[Envelope] = []

    def add(self, event: Event, at_s: float) -> Envelope:
        env = Envelope(
            stream="AQE_AGENTS",
            seq=len(self.envs) + 1,
            subject=subject_for(event),
            event_id=event.default_id(),
            event_type=event.type_tag(),
            recorded_at_ns=int(at_s * S),
            data=event.to_json(),
        )
        self.envs.append(env)
        return env

    def fold(self, envs: list[Envelope] | None = None) -> MembershipState:
        state = MembershipState()
        for env in self.envs if envs is None else envs:
            apply_membership(state, env, env.decode())
        return state


def reg(agent: str = "a1", role: str = "generator", **kw: object) -> AgentRegistered:
    return AgentRegistered(agent_id=agent, role=role, **kw)  # type: ignore[arg-type]


def hb(beat: int, agent: str = "a1", session: str = "s1", **kw: object) -> AgentHeartbeat:
    return AgentHeartbeat(agent_id=agent, beat=beat, session=session, **kw)  # type: ignore[arg-type]


def status_at(state: MembershipState, now_s: float, agent: str = "a1") -> str:
    return liveness(state.agents[agent], int(now_s * S), DET).status


# -- the fold and liveness ---------------------------------------------------------------


def test_alive_then_suspect_then_dead_as_beats_stop() -> None:
    log = Log()
    log.add(reg(capabilities=("python", "pytest")), 0.0)
    for beat in range(1, 6):
        log.add(hb(beat, status="busy", load=0.25 * beat), float(beat))
    state = log.fold()
    rec = state.agents["a1"]
    assert (rec.role, rec.capabilities, rec.beat, rec.session) == (
        "generator",
        ("python", "pytest"),
        5,
        "s1",
    )
    assert (rec.status, rec.load, rec.last_seen_ns) == ("busy", 1.25, 5 * S)
    # Last seen at 5 s: alive below 3 missed intervals, suspect from 3, dead from 6.
    assert [status_at(state, t) for t in (5.0, 7.99, 8.0, 10.99, 11.0, 500.0)] == [
        "alive",
        "alive",
        "suspect",
        "suspect",
        "dead",
        "dead",
    ]
    lv = liveness(rec, 9 * S + S // 2, DET)
    assert (lv.missed, lv.age_ns, lv.reason) == (4, 4 * S + S // 2, "missed 4 heartbeats")
    # A clock behind the server's never gives a negative age.
    assert liveness(rec, 0, DET).age_ns == 0


def test_registered_agent_that_never_beats_times_out_from_registration() -> None:
    log = Log()
    log.add(reg(), 10.0)
    state = log.fold()
    assert status_at(state, 12.0) == "alive"
    assert status_at(state, 13.0) == "suspect"
    assert status_at(state, 16.0) == "dead"


def test_gossiped_suspicion_marks_suspect_at_once_and_a_newer_beat_refutes_it() -> None:
    log = Log()
    log.add(reg(), 0.0)
    log.add(hb(1), 1.0)
    log.add(AgentSuspected(agent_id="a1", by="c2", last_beat=1, missed=3), 2.5)
    state = log.fold()
    # Only 1.5 s since the beat: this detector alone would say alive.
    lv = liveness(state.agents["a1"], int(2.6 * S), DET)
    assert (lv.status, lv.suspected_by, lv.reason) == ("suspect", ("c2",), "suspected by c2")
    # The same coordinator again, and a suspicion of an older beat, change nothing.
    log.add(AgentSuspected(agent_id="a1", by="c2", last_beat=1, missed=4), 2.7)
    log.add(AgentSuspected(agent_id="a1", by="c3", last_beat=0, missed=9), 2.8)
    assert len(log.fold().agents["a1"].suspicions) == 1
    log.add(hb(2), 3.0)
    state = log.fold()
    assert state.agents["a1"].suspicions == []
    assert status_at(state, 3.1) == "alive"
    # A suspicion of beat 1 that lands after beat 2 was already refuted.
    log.add(AgentSuspected(agent_id="a1", by="c4", last_beat=1, missed=3), 3.2)
    assert status_at(log.fold(), 3.3) == "alive"


def test_suspicion_of_an_unknown_or_retired_agent_is_ignored() -> None:
    log = Log()
    log.add(AgentSuspected(agent_id="ghost", by="c1", last_beat=0, missed=3), 1.0)
    log.add(reg(), 2.0)
    log.add(AgentRetired(agent_id="a1", reason="done"), 3.0)
    log.add(AgentSuspected(agent_id="a1", by="c1", last_beat=0, missed=3), 9.0)
    state = log.fold()
    assert sorted(state.agents) == ["a1"]
    assert state.agents["a1"].suspicions == []


def test_retire_is_sticky_until_the_agent_registers_again() -> None:
    log = Log()
    log.add(reg(), 0.0)
    log.add(hb(1), 1.0)
    log.add(AgentRetired(agent_id="a1", reason="scaled down"), 2.0)
    state = log.fold()
    lv = liveness(state.agents["a1"], 100 * S, DET)
    assert (lv.status, lv.reason) == ("retired", "retired: scaled down")
    # A late beat (already in flight when it retired) does not bring it back.
    log.add(hb(2), 2.1)
    assert status_at(log.fold(), 2.2) == "retired"
    assert [lv.agent_id for lv in membership(log.fold(), 3 * S, DET, include_retired=False)] == []
    log.add(reg(role="runner"), 10.0)
    state = log.fold()
    rec = state.agents["a1"]
    assert (rec.retired, rec.role, rec.beat, rec.registered_seq) == (False, "runner", 0, 5)
    assert status_at(state, 10.5) == "alive"


def test_restart_with_a_new_session_starts_over() -> None:
    log = Log()
    log.add(reg(), 0.0)
    for beat in range(1, 4):
        log.add(hb(beat, session="old"), float(beat))
    # The old session's last beat was 3 at 3 s; c1 suspects it...
    log.add(AgentSuspected(agent_id="a1", by="c1", last_beat=3, missed=3), 6.0)
    assert status_at(log.fold(), 6.0) == "suspect"
    # ...then the agent restarts: registers and beats from 1 with a new session.
    log.add(reg(), 7.0)
    log.add(hb(1, session="new"), 7.0)
    # A late suspicion of beat 1 (meant for the old session) lands right after: the
    # log's clock shows beat 1 is not one interval old, so it does not count.
    log.add(AgentSuspected(agent_id="a1", by="c9", last_beat=1, missed=3), 7.2)
    state = log.fold()
    rec = state.agents["a1"]
    assert (rec.session, rec.beat, rec.last_seen_ns) == ("new", 1, 7 * S)
    lv = liveness(rec, int(7.5 * S), DET)
    assert (lv.status, lv.suspected_by) == ("alive", ())


def test_heartbeats_of_an_unregistered_agent_are_tracked() -> None:
    log = Log()
    log.add(hb(4, agent="shell"), 1.0)
    rec = log.fold().agents["shell"]
    assert (rec.registered, rec.role, rec.beat) == (False, "", 4)
    assert status_at(log.fold(), 1.5, "shell") == "alive"


def _busy_log() -> Log:
    log = Log()
    t = 0.0
    for agent in ("a1", "a2", "a3"):
        log.add(reg(agent), t)
    for beat in range(1, 30):
        t += 0.33
        for agent in ("a1", "a2", "a3"):
            if agent == "a2" and beat > 10:
                continue
            log.add(hb(beat, agent=agent, load=beat / 30), t)
        if beat == 15:
            log.add(AgentSuspected(agent_id="a2", by="c1", last_beat=10, missed=3), t)
        if beat == 20:
            log.add(AgentRetired(agent_id="a3", reason="done"), t)
        if beat == 25:
            log.add(reg("a3"), t)
    return log


def test_same_prefix_and_now_give_the_same_answer() -> None:
    log = _busy_log()
    proj = MembershipProjection()
    for cut in (1, 7, 40, len(log.envs) // 2, len(log.envs)):
        prefix = log.envs[:cut]
        first, second = log.fold(prefix), log.fold(list(prefix))
        assert proj.encode(first) == proj.encode(second)
        assert proj.decode(proj.encode(first)) == first
        now = prefix[-1].recorded_at_ns + 2 * S
        assert membership(first, now, DET) == membership(second, now, DET)


def test_last_message_per_subject_folds_to_the_same_state() -> None:
    # Why AQE_AGENTS can keep only the latest messages per subject: the fold keeps
    # last values, so dropping older heartbeats changes nothing.
    log = _busy_log()
    last_by_subject = {env.subject: env.seq for env in log.envs}
    kept = [env for env in log.envs if last_by_subject[env.subject] == env.seq]
    assert len(kept) < len(log.envs) // 5
    proj = MembershipProjection()
    assert proj.encode(log.fold(kept)) == proj.encode(log.fold())


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"interval_s": 0}, "interval_s"),
        ({"suspect_after": 0}, "suspect_after"),
        ({"suspect_after": 3, "dead_after": 3}, "dead_after"),
    ],
)
def test_failure_detector_names_the_bad_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        FailureDetector(**kwargs)  # type: ignore[arg-type]


async def test_projection_rebuild_equals_incremental(tmp_path: Path) -> None:
    log = InMemoryEventLog(load_stream_specs())
    for env in _busy_log().envs:
        await log.append(env.decode())
    proj = MembershipProjection()
    store = SnapshotStore(proj, tmp_path / proj.name)
    runner = ProjectionRunner(proj, log, store, MemoryDeadLetters(), flush_every=17)
    await runner.run(until={"AQE_AGENTS": 40})
    await ProjectionRunner(proj, log, store, MemoryDeadLetters(), flush_every=17).run()
    assert (await verify(proj, log, tmp_path)).equal
    live = proj.encode(store.load().state)
    await rebuild(proj, log, tmp_path, MemoryDeadLetters())
    assert proj.encode(SnapshotStore(proj, tmp_path / proj.name).load().state) == live
    assert sorted(store.load().state.agents) == ["a1", "a2", "a3"]


# -- the runtimes over the in-memory log ----------------------------------------------------


async def _events(log: InMemoryEventLog) -> list[Event]:
    return [env.decode() async for env in log.read("AQE_AGENTS")]


async def test_agent_registers_beats_and_retires() -> None:
    log = InMemoryEventLog(load_stream_specs())
    agent = AgentRuntime(log, "a1", "generator", ["python"], interval_s=0.02, host="h")
    agent.status = "busy"
    agent.load = 0.5
    await agent.start()

    async def beats() -> int:
        return sum(isinstance(e, AgentHeartbeat) for e in await _events(log))

    # A starved loop skips beats that fell behind: wait for three, not for a duration.
    async with asyncio.timeout(30):
        while await beats() < 3:
            await asyncio.sleep(0.01)
    await agent.stop(reason="done")
    events = await _events(log)
    assert isinstance(events[0], AgentRegistered)
    assert (events[0].capabilities, events[0].host) == (("python",), "h")
    beats = [e for e in events if isinstance(e, AgentHeartbeat)]
    assert [b.beat for b in beats] == list(range(1, len(beats) + 1))
    assert len(beats) >= 3
    assert {(b.session, b.status, b.load) for b in beats} == {(agent.session, "busy", 0.5)}
    assert events[-1] == AgentRetired(agent_id="a1", reason="done")
    assert not agent.running


async def test_killed_agent_does_not_retire_and_a_restart_is_a_new_session() -> None:
    log = InMemoryEventLog(load_stream_specs())
    first = AgentRuntime(log, "a1", "generator", interval_s=0.02)
    await first.start()
    await asyncio.sleep(0.05)
    first.kill()
    await asyncio.sleep(0.01)
    assert not first.running
    second = AgentRuntime(log, "a1", "generator", interval_s=0.02)
    assert second.session != first.session
    await second.start()
    await second.stop()
    events = await _events(log)
    # Same registration content within the duplicate window, yet stored twice.
    assert sum(isinstance(e, AgentRegistered) for e in events) == 2
    assert sum(isinstance(e, AgentRetired) for e in events) == 1
    sessions = [e.session for e in events if isinstance(e, AgentHeartbeat)]
    assert sessions[0] == first.session
    assert sessions[-1] == second.session
    ids = [env.event_id async for env in log.read("AQE_AGENTS")]
    assert session_event_id("registered", "a1", second.session) in ids


@pytest.mark.parametrize(
    ("attr", "value", "match"),
    [("status", "asleep", "status must be one of"), ("load", -1.0, "load must be >= 0")],
)
def test_agent_setters_name_the_bad_value(attr: str, value: object, match: str) -> None:
    agent = AgentRuntime(InMemoryEventLog(load_stream_specs()), "a1", "generator")
    with pytest.raises(ConfigError, match=match):
        setattr(agent, attr, value)


def test_agent_runtime_rejects_bad_arguments() -> None:
    log = InMemoryEventLog(load_stream_specs())
    with pytest.raises(ConfigError, match="agent_id"):
        AgentRuntime(log, "", "generator")
    with pytest.raises(ConfigError, match="agent a1: interval_s"):
        AgentRuntime(log, "a1", "generator", interval_s=0)


async def test_monitor_gossips_once_and_others_learn_before_their_own_timeout() -> None:
    # Real time (the in-memory log stamps messages with it), short intervals.
    log = InMemoryEventLog(load_stream_specs())
    quick = FailureDetector(interval_s=0.05, suspect_after=3, dead_after=6)
    patient = FailureDetector(interval_s=0.05, suspect_after=100, dead_after=200)
    await log.append(reg())
    await log.append(hb(1))
    fast = MembershipMonitor(log, "c1", quick, check_interval_s=3600)
    slow = MembershipMonitor(log, "c2", patient, check_interval_s=3600)
    async with fast, slow:
        assert fast.observed("a1") == slow.observed("a1") == "alive"
        await asyncio.sleep(0.2)
        sent = await fast.check()
        assert len(sent) == 1
        assert (sent[0].by, sent[0].last_beat) == ("c1", 1)
        assert sent[0].missed >= 3
        # By its own detector c2 would wait seconds more: the gossip makes it suspect now.
        tr = await slow.wait_for("a1", "suspect", timeout_s=5)
        assert tr.reason == "suspected by c1"
        assert await slow.check() == []
        assert await fast.check() == []
        # Once the agent beats again, everyone sees it alive.
        await log.append(hb(2))
        await fast.wait_for("a1", "alive", timeout_s=5)
        await slow.wait_for("a1", "alive", timeout_s=5)
    assert (fast.suspicions_sent, slow.suspicions_sent) == (1, 0)
    assert [t.new for t in slow.transitions] == ["alive", "suspect", "alive"]


async def test_monitor_without_gossip_only_listens_and_ignores_long_dead_agents() -> None:
    log = InMemoryEventLog(load_stream_specs())
    await log.append(reg("old"))
    await log.append(reg("a1"))
    base = (await log.last("aqe.agents.agent.a1.registered")).recorded_at_ns  # type: ignore[union-attr]
    now = [base + 100 * S]
    # Started long after "old" and "a1" stopped: both are dead on first sight, and a
    # coordinator that never saw them alive does not gossip about them.
    gossiper = MembershipMonitor(log, "c1", DET, check_interval_s=3600, clock=lambda: now[0])
    quiet = MembershipMonitor(
        log, "c2", DET, check_interval_s=3600, gossip=False, clock=lambda: now[0]
    )
    async with gossiper, quiet:
        assert await gossiper.check() == []
        assert {lv.status for lv in gossiper.statuses()} == {"dead"}
        now[0] = base
        assert await quiet.check() == []  # alive again in this fake clock's view
        now[0] = base + 4 * S
        assert await quiet.check() == []
        assert quiet.observed("a1") == "suspect"
    assert await log.last_seq("AQE_AGENTS") == 2
