"""Leader election with fencing over the in-memory log: the rules, without a server.

The in-memory log checks conditional appends exactly as the server does, so these tests
pin down who wins, who is fenced off and what every reader derives. Time is moved by
giving a candidate a clock that runs ahead, not by sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

import pytest

from aqe.coordination.lease import (
    LEASE_FILTER,
    LeaderElection,
    Lease,
    fold_leases,
    lease_filter,
    lease_from,
    read_lease,
)
from aqe.errors import AqeError, ConcurrencyError, DeposedError, LogUnavailableError
from aqe.events import AgentHeartbeat, Envelope, Event, LeaseAcquired, LeaseReleased, LeaseRenewed
from aqe.events.coordination import TaskCompleted
from aqe.log import InMemoryEventLog
from aqe.log.port import AppendResult

STREAM = "AQE_COORD"
GROUP = "coordinators"


def ahead(ms: int) -> Callable[[], int]:
    """A wall clock running ``ms`` ahead of the real one (a candidate whose time passed)."""
    return lambda: time.time_ns() + ms * 1_000_000


def work(n: int, agent: str = "a") -> TaskCompleted:
    return TaskCompleted(task_id=f"t{n}", agent_id=agent, result="done")


async def lease_events(log: InMemoryEventLog, group: str = GROUP) -> list[Event]:
    return [env.decode() async for env in log.read(STREAM, subjects=lease_filter(group))]


class YieldingLog(InMemoryEventLog):
    """Reads yield to the event loop, so racing candidates all read before any appends."""

    async def last(self, subject: str) -> Envelope | None:
        envelope = await super().last(subject)
        await asyncio.sleep(0)
        return envelope


class LostReplyLog(InMemoryEventLog):
    """Stores the next ``lose`` appends but answers each with :meth:`failure`.

    By default that is the LogUnavailableError a client sees when the stream leader dies
    after committing a message and before replying.
    """

    lose = 0

    def failure(self, result: AppendResult, expected_last_seq: int | None) -> Exception | None:
        return LogUnavailableError("timed out waiting for the server (simulated)")

    async def append(
        self,
        event: Event,
        *,
        event_id: str | None = None,
        expected_last_seq: int | None = None,
        expected_subject: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AppendResult:
        result = await super().append(
            event,
            event_id=event_id,
            expected_last_seq=expected_last_seq,
            expected_subject=expected_subject,
            headers=headers,
        )
        error = self.failure(result, expected_last_seq)
        if self.lose > 0 and not result.duplicate and error is not None:
            self.lose -= 1
            raise error
        return result


class StaleRefusalLog(LostReplyLog):
    """Stores the next ``lose`` conditional appends but answers each with the
    ConcurrencyError of a replica that no longer leads the stream.

    The Jepsen-style fault suite saw this on a 3-node cluster right after a paused stream
    leader resumed: its stale "wrong last sequence" reached the client while the new
    leader stored the write.
    """

    def failure(self, result: AppendResult, expected_last_seq: int | None) -> Exception | None:
        if expected_last_seq is None:
            return None
        return ConcurrencyError(result.subject, expected_last_seq, expected_last_seq - 1)


async def test_lease_filter_encodes_the_group() -> None:
    assert lease_filter("coordinators") == "aqe.coord.lease.coordinators.*"
    assert LEASE_FILTER("a.b c") == "aqe.coord.lease.a~2Eb~20c.*"
    with pytest.raises(ValueError, match="empty"):
        lease_filter("")


async def test_first_candidate_acquires_an_empty_group() -> None:
    log = InMemoryEventLog()
    election = LeaderElection(log, GROUP, "a", lease_ms=1000)
    assert await read_lease(log, GROUP) is None

    lease = await election.try_acquire()

    assert lease is not None
    assert (lease.holder, lease.group, lease.lease_ms) == ("a", GROUP, 1000)
    assert lease.term == lease.last_seq == lease.fencing_token == await log.last_seq(STREAM)
    assert election.is_leader
    assert election.lease == lease
    stored = await read_lease(log, GROUP)
    assert stored is not None
    assert (stored.holder, stored.term, stored.released) == ("a", lease.term, False)
    assert await lease_events(log) == [
        LeaseAcquired(group=GROUP, holder="a", lease_ms=1000, after_seq=0)
    ]


async def test_a_held_lease_cannot_be_acquired_by_another_candidate() -> None:
    log = InMemoryEventLog()
    a = LeaderElection(log, GROUP, "a", lease_ms=60_000)
    b = LeaderElection(log, GROUP, "b", lease_ms=60_000)
    held = await a.try_acquire()

    assert await b.try_acquire() is None
    assert not b.is_leader
    # Asking again as the holder answers the same lease and stores nothing.
    assert await a.try_acquire() == held
    assert len(await lease_events(log)) == 1


@pytest.mark.parametrize("candidates", [2, 5, 16])
async def test_racing_candidates_exactly_one_wins(candidates: int) -> None:
    log = YieldingLog()
    elections = [LeaderElection(log, GROUP, f"c{i}", lease_ms=5000) for i in range(candidates)]

    results = await asyncio.gather(*(e.try_acquire() for e in elections))

    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert sum(e.is_leader for e in elections) == 1
    events = await lease_events(log)
    assert len(events) == 1
    assert isinstance(events[0], LeaseAcquired)
    assert events[0].holder == winners[0].holder


async def test_racing_for_an_expired_lease_exactly_one_takes_over() -> None:
    log = YieldingLog()
    old = LeaderElection(log, GROUP, "old", lease_ms=100)
    first = await old.try_acquire()
    assert first is not None
    rivals = [
        LeaderElection(log, GROUP, f"r{i}", lease_ms=100, clock=ahead(1000)) for i in range(6)
    ]

    results = [r for r in await asyncio.gather(*(e.try_acquire() for e in rivals)) if r]

    assert len(results) == 1
    assert results[0].term > first.term
    acquisitions = [e for e in await lease_events(log) if isinstance(e, LeaseAcquired)]
    assert [a.after_seq for a in acquisitions] == [0, first.term]


async def test_expired_lease_is_taken_over_with_a_higher_term() -> None:
    log = InMemoryEventLog()
    a = LeaderElection(log, GROUP, "a", lease_ms=500)
    b_now = LeaderElection(log, GROUP, "b", lease_ms=500)
    b_later = LeaderElection(log, GROUP, "b", lease_ms=500, clock=ahead(501))
    first = await a.try_acquire()
    assert first is not None
    renewed = await a.renew()

    assert await b_now.try_acquire() is None
    second = await b_later.try_acquire()

    assert second is not None
    assert second.holder == "b"
    assert second.term > first.term
    assert second.fencing_token > renewed.fencing_token
    acquired = await log.get(STREAM, second.term)
    event = acquired.decode()
    assert isinstance(event, LeaseAcquired)
    assert event.after_seq == renewed.last_seq


async def test_deposed_leader_cannot_renew_or_write_and_nothing_is_stored() -> None:
    log = InMemoryEventLog()
    a = LeaderElection(log, GROUP, "a", lease_ms=200)
    b = LeaderElection(log, GROUP, "b", lease_ms=200, clock=ahead(10_000))
    first = await a.try_acquire()
    assert first is not None
    written = await a.append_fenced(work(1))
    assert not written.duplicate
    second = await b.try_acquire()
    assert second is not None
    before = await log.last_seq(STREAM)

    with pytest.raises(DeposedError) as caught:
        await a.append_fenced(work(2))

    assert caught.value.group == GROUP
    assert caught.value.holder == "a"
    assert caught.value.term == first.term
    assert caught.value.actual == second.term
    assert isinstance(caught.value, AqeError)
    assert f"term {first.term}" in str(caught.value)
    assert not a.is_leader
    assert a.lease is None
    with pytest.raises(DeposedError):
        await a.renew()
    with pytest.raises(DeposedError):
        await a.append_fenced(work(3))
    assert await log.last_seq(STREAM) == before
    assert not await a.release()
    # The new leader's fenced writes go through.
    assert not (await b.append_fenced(work(4, "b"))).duplicate


async def test_deposed_renewal_raises_and_stores_nothing() -> None:
    log = InMemoryEventLog()
    a = LeaderElection(log, GROUP, "a", lease_ms=200)
    b = LeaderElection(log, GROUP, "b", lease_ms=200, clock=ahead(10_000))
    first = await a.try_acquire()
    second = await b.try_acquire()
    assert first is not None
    assert second is not None
    before = await log.last_seq(STREAM)

    with pytest.raises(DeposedError) as caught:
        await a.renew()

    assert caught.value.term == first.term
    assert await log.last_seq(STREAM) == before
    current = await read_lease(log, GROUP)
    assert current is not None
    assert current.holder == "b"


async def test_renewals_keep_the_fence_on_the_latest_lease_message() -> None:
    log = InMemoryEventLog()
    a = LeaderElection(log, GROUP, "a", lease_ms=1000)
    first = await a.try_acquire()
    assert first is not None
    renewed = await a.renew()
    again = await a.renew()

    assert renewed.term == again.term == first.term
    assert first.last_seq < renewed.last_seq < again.last_seq
    assert (await a.append_fenced(work(1))).seq > again.last_seq
    renewals = [e for e in await lease_events(log) if isinstance(e, LeaseRenewed)]
    assert [r.renewal for r in renewals] == [1, 2]
    assert {r.term for r in renewals} == {first.term}


async def test_a_renewal_racing_a_fenced_write_does_not_depose_the_leader() -> None:
    log = YieldingLog()
    a = LeaderElection(log, GROUP, "a", lease_ms=1000)
    assert await a.try_acquire() is not None
    # The write's condition is taken before the renewal lands; the write then fails its
    # condition, sees that the lease moved to our own renewal, and goes through.
    stale = a.lease
    renewed = await a.renew()
    assert stale is not None
    a._lease = stale  # the writer's view from before the renewal's reply
    result = await a.append_fenced(work(1))

    assert result.seq > renewed.last_seq
    assert a.lease is not None
    assert a.lease.last_seq == renewed.last_seq


async def test_release_frees_the_lease_at_once() -> None:
    log = InMemoryEventLog()
    a = LeaderElection(log, GROUP, "a", lease_ms=60_000)
    b = LeaderElection(log, GROUP, "b", lease_ms=60_000)
    first = await a.try_acquire()
    assert first is not None

    assert await a.release("handing over")

    released = await read_lease(log, GROUP)
    assert released is not None
    assert released.released
    assert released.expired(0)
    assert (released.holder, released.term) == ("a", first.term)
    assert not a.is_leader
    second = await b.try_acquire()
    assert second is not None
    assert second.term > released.last_seq
    assert not await a.release()  # nothing held any more
    events = await lease_events(log)
    assert events[1] == LeaseReleased(
        group=GROUP, holder="a", term=first.term, reason="handing over"
    )


async def test_a_lost_reply_to_an_acquisition_that_landed_still_wins() -> None:
    log = LostReplyLog()
    a = LeaderElection(log, GROUP, "a", lease_ms=1000, unavailable_s=5)
    log.lose = 1

    lease = await a.try_acquire()

    assert lease is not None
    assert lease.holder == "a"
    assert len(await lease_events(log)) == 1


async def test_acquisition_whose_outcome_was_never_heard_is_adopted_on_the_next_try() -> None:
    log = LostReplyLog()
    a = LeaderElection(log, GROUP, "a", lease_ms=60_000, unavailable_s=0)
    log.lose = 1
    with pytest.raises(LogUnavailableError):
        await a.try_acquire()
    assert a.lease is None

    lease = await a.try_acquire()

    assert lease is not None
    assert lease.holder == "a"
    assert a.is_leader
    # Another candidate with the same rules sees the lease as held.
    assert await LeaderElection(log, GROUP, "b", lease_ms=60_000).try_acquire() is None
    assert len(await lease_events(log)) == 1


async def test_a_lost_reply_to_a_renewal_that_landed_is_recognised() -> None:
    log = LostReplyLog()
    a = LeaderElection(log, GROUP, "a", lease_ms=1000, unavailable_s=5)
    first = await a.try_acquire()
    assert first is not None
    log.lose = 1

    renewed = await a.renew()

    assert renewed.term == first.term
    renewals = [e for e in await lease_events(log) if isinstance(e, LeaseRenewed)]
    assert len(renewals) == 1
    assert renewed.last_seq == await log.last_seq(STREAM)


async def test_fenced_write_to_another_stream_is_refused() -> None:
    log = InMemoryEventLog()
    a = LeaderElection(log, GROUP, "a")
    assert await a.try_acquire() is not None
    beat = AgentHeartbeat(agent_id="a", beat=1, session="s")

    with pytest.raises(ValueError, match="AQE_AGENTS"):
        await a.append_fenced(beat)


async def test_leader_only_calls_without_a_lease_raise_deposed() -> None:
    a = LeaderElection(InMemoryEventLog(), GROUP, "a")

    with pytest.raises(DeposedError, match="does not hold the lease of group 'coordinators'"):
        await a.append_fenced(work(1))
    with pytest.raises(DeposedError):
        await a.renew()
    assert not await a.release()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lease_ms": 5}, "lease_ms"),
        ({"lease_ms": 1000, "renew_every_ms": 1000}, "renew_every_ms"),
        ({"lease_ms": 1000, "renew_every_ms": 0}, "renew_every_ms"),
        ({"lease_ms": 1000, "poll_ms": 0}, "poll_ms"),
    ],
)
async def test_bad_periods_are_rejected(kwargs: Mapping[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LeaderElection(InMemoryEventLog(), GROUP, "a", **kwargs)  # type: ignore[arg-type]


async def test_defaults_derive_from_the_lease() -> None:
    election = LeaderElection(InMemoryEventLog(), GROUP, "a", lease_ms=1200)
    assert (election.renew_every_ms, election.poll_ms) == (400, 300)
    with pytest.raises(ValueError, match="candidate"):
        LeaderElection(InMemoryEventLog(), GROUP, "")


async def test_every_reader_derives_the_same_lease_from_the_same_prefix() -> None:
    log = InMemoryEventLog()
    a = LeaderElection(log, GROUP, "a", lease_ms=100)
    b = LeaderElection(log, GROUP, "b", lease_ms=100, clock=ahead(1000))
    other = LeaderElection(log, "other", "z", lease_ms=100)
    await a.try_acquire()
    await other.try_acquire()
    await a.renew()
    await a.append_fenced(work(1))
    await b.try_acquire()
    await b.renew()
    await b.release()
    await a.try_acquire()

    envelopes = [env async for env in log.read(STREAM)]
    for cut in range(len(envelopes) + 1):
        prefix = envelopes[:cut]
        once = fold_leases(prefix)
        again = fold_leases(list(prefix))
        assert once == again
        for group in (GROUP, "other"):
            lease_envs = [e for e in prefix if e.subject.startswith(f"aqe.coord.lease.{group}.")]
            expected = lease_from(lease_envs[-1]) if lease_envs else None
            assert once.get(group) == expected
    final = fold_leases(envelopes)
    assert final[GROUP] == await read_lease(log, GROUP)
    assert final["other"] == await read_lease(log, "other")
    assert final[GROUP].holder == "a"
    terms = [env.seq for env in envelopes if isinstance(env.decode(), LeaseAcquired)]
    assert terms == sorted(terms)


async def test_lease_expiry_is_judged_against_the_last_lease_message() -> None:
    lease = Lease(
        group=GROUP, holder="a", term=3, last_seq=5, lease_ms=100, renewed_at_ns=1_000_000_000
    )
    assert not lease.expired(1_000_000_000 + 99_999_999)
    assert lease.expired(1_000_000_000 + 100_000_000)
    assert lease.expires_at_ns == 1_100_000_000
    assert lease.fencing_token == 3


async def test_run_campaigns_renews_and_campaigns_again_after_deposition() -> None:
    log = InMemoryEventLog()
    stop = asyncio.Event()
    elected: list[Lease] = []
    deposed: list[DeposedError] = []
    a = LeaderElection(log, GROUP, "a", lease_ms=150)

    async def on_elected(lease: Lease) -> None:
        elected.append(lease)

    runner = asyncio.create_task(a.run(stop, on_elected=on_elected, on_deposed=deposed.append))
    while not elected:
        await asyncio.sleep(0.01)

    async def renewals() -> list[LeaseRenewed]:
        return [e for e in await lease_events(log) if isinstance(e, LeaseRenewed)]

    # Two renewals (two lease periods at least) keep the same term: no new election and
    # no deposition. Waiting on them, not on a duration, holds on a starved machine.
    async with asyncio.timeout(30):
        while len(await renewals()) < 2:
            await asyncio.sleep(0.01)
    assert {(r.holder, r.term) for r in await renewals()} == {("a", elected[0].term)}
    assert len(elected) == 1
    assert not deposed
    assert a.fencing_token == elected[0].term

    usurper = LeaderElection(log, GROUP, "b", lease_ms=150, clock=ahead(10_000))
    taken = await usurper.try_acquire()
    assert taken is not None
    async with asyncio.timeout(5):
        while not deposed:
            await asyncio.sleep(0.01)
    assert deposed[0].term == elected[0].term
    # "b" never renews; "a" takes the lease back once it has expired.
    async with asyncio.timeout(5):
        while len(elected) < 2:
            await asyncio.sleep(0.01)
    assert elected[1].term > taken.term

    stop.set()
    await asyncio.wait_for(runner, 5)
    final = await read_lease(log, GROUP)
    assert final is not None
    assert final.released
    assert final.term == elected[1].term


async def test_run_stops_while_campaigning_without_writing() -> None:
    log = InMemoryEventLog()
    holder = LeaderElection(log, GROUP, "a", lease_ms=60_000)
    assert await holder.try_acquire() is not None
    follower = LeaderElection(log, GROUP, "b", lease_ms=60_000, poll_ms=10)
    stop = asyncio.Event()
    runner = asyncio.create_task(follower.run(stop))
    await asyncio.sleep(0.05)

    stop.set()
    await asyncio.wait_for(runner, 5)

    assert len(await lease_events(log)) == 1


async def test_a_fenced_write_refused_by_a_stale_replica_is_asked_again_not_reported_lost() -> None:
    log = StaleRefusalLog()
    a = LeaderElection(log, GROUP, "a", lease_ms=60_000)
    held = await a.try_acquire()
    assert held is not None
    log.lose = 1

    result = await a.append_fenced(work(1))

    # Stored once, by the first try; the second try is reported as its duplicate.
    assert result.duplicate
    stored = [env async for env in log.read(STREAM, subjects=result.subject)]
    assert [env.seq for env in stored] == [result.seq]
    assert a.is_leader
    assert a.lease is not None
    assert a.lease.term == held.term


async def test_a_fenced_write_whose_fence_moved_to_another_term_is_still_refused() -> None:
    log = InMemoryEventLog()
    a = LeaderElection(log, GROUP, "a", lease_ms=60_000)
    b = LeaderElection(log, GROUP, "b", lease_ms=60_000)
    assert await a.try_acquire() is not None
    stale = a.lease
    await a.release("handover")
    assert await b.try_acquire() is not None
    a._lease = stale  # a writer that has not heard of its own release yet
    with pytest.raises(DeposedError):
        await a.append_fenced(work(1))
    assert [env async for env in log.read(STREAM, subjects="aqe.coord.task.>")] == []
