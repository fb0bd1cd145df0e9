"""One contract suite for the EventLog port, run against every adapter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from aqe.errors import ConcurrencyError, EventNotFoundError, PayloadTooLargeError
from aqe.events import AgentHeartbeat, PatternAdded, TestCaseExecuted
from aqe.log import MAX_BATCH, EventLog, InMemoryEventLog, NewEvent, load_stream_specs
from aqe.log.subjects import subject_for


def case(test_id: str, run: str = "r1", outcome: str = "passed") -> TestCaseExecuted:
    return TestCaseExecuted(test_id=test_id, run_id=run, outcome=outcome)  # type: ignore[arg-type]


async def collect(log: EventLog, stream: str, **kw: object) -> list[int]:
    return [env.seq async for env in log.read(stream, **kw)]  # type: ignore[arg-type]


class EventLogContract:
    """Subclasses provide a ``log`` fixture yielding a fresh, empty EventLog."""

    async def test_append_then_read_round_trips(self, log: EventLog) -> None:
        event = case("tests/test_a.py::test_x[1 2]")
        result = await log.append(event)
        assert result.seq == 1
        assert result.stream == "AQE_TESTS"
        assert result.subject == subject_for(event)
        assert not result.duplicate
        envs = [env async for env in log.read("AQE_TESTS")]
        assert len(envs) == 1
        assert envs[0].decode() == event
        assert envs[0].event_id == event.default_id()
        assert envs[0].event_type == "tests.case.executed.v1"
        assert envs[0].recorded_at_ns > 0

    async def test_same_event_id_is_stored_once(self, log: EventLog) -> None:
        first = await log.append(case("t1"), event_id="fixed-id")
        again = await log.append(case("t1", run="r2"), event_id="fixed-id")
        assert again.duplicate
        assert again.seq == first.seq
        assert await log.last_seq("AQE_TESTS") == 1

    async def test_default_id_deduplicates_identical_facts(self, log: EventLog) -> None:
        await log.append(case("t1"))
        again = await log.append(case("t1"))
        assert again.duplicate
        other = await log.append(case("t1", run="r2"))
        assert not other.duplicate
        assert await log.last_seq("AQE_TESTS") == 2

    async def test_conditional_append_on_empty_subject(self, log: EventLog) -> None:
        ok = await log.append(case("t1"), expected_last_seq=0)
        with pytest.raises(ConcurrencyError) as info:
            await log.append(case("t1", run="r2"), expected_last_seq=0)
        assert info.value.expected == 0
        assert info.value.actual == ok.seq
        assert info.value.subject == ok.subject
        follow_up = await log.append(case("t1", run="r3"), expected_last_seq=ok.seq)
        assert follow_up.seq == ok.seq + 1

    async def test_racing_writers_exactly_one_wins(self, log: EventLog) -> None:
        base = await log.append(case("race"))
        outcomes = await asyncio.gather(
            *(
                log.append(case("race", run=f"writer-{i}"), expected_last_seq=base.seq)
                for i in range(5)
            ),
            return_exceptions=True,
        )
        wins = [o for o in outcomes if not isinstance(o, BaseException)]
        losses = [o for o in outcomes if isinstance(o, ConcurrencyError)]
        assert len(wins) == 1
        assert len(losses) == 4
        assert await log.last_subject_seq(subject_for(case("race"))) == wins[0].seq

    async def test_condition_on_a_subject_filter_fences_writes_elsewhere(
        self, log: EventLog
    ) -> None:
        # A lease on one set of subjects guards a write on another: the write carries
        # the last sequence the writer saw under the filter (its fencing token).
        guard = "aqe.tests.case.*.executed"
        token = await log.append(case("lease-a"))
        assert await log.last_subject_seq(guard) == token.seq
        ok = await log.append(
            case("work", run="r1"), expected_last_seq=token.seq, expected_subject=guard
        )
        taken = await log.append(case("lease-b"))  # someone else moved the filter on
        with pytest.raises(ConcurrencyError) as info:
            await log.append(
                case("late", run="r2"), expected_last_seq=token.seq, expected_subject=guard
            )
        assert info.value.subject == guard
        assert info.value.actual == taken.seq
        last = await log.last(guard)
        assert last is not None
        assert last.seq == taken.seq
        assert ok.seq == token.seq + 1
        assert await log.last("aqe.patterns.>") is None

    async def test_batch_condition_on_a_subject_filter(self, log: EventLog) -> None:
        first = await log.append(case("x"))

        def guarded(test_id: str, seq: int) -> NewEvent:
            return NewEvent(event=case(test_id), expected_last_seq=seq, expected_subject=">")

        with pytest.raises(ConcurrencyError):
            await log.append_batch([guarded("y", first.seq), guarded("z", first.seq + 7)])
        assert await log.last_seq("AQE_TESTS") == first.seq
        # Unlike a condition on the message's own subject, a filter condition is checked
        # against what was stored before the batch (nats-server 2.15), not earlier
        # messages of the same batch.
        result = await log.append_batch([guarded("y", first.seq), guarded("z", first.seq)])
        assert (result.first_seq, result.last_seq) == (first.seq + 1, first.seq + 2)

    async def test_other_subjects_do_not_conflict(self, log: EventLog) -> None:
        await log.append(case("a"), expected_last_seq=0)
        await log.append(case("b"), expected_last_seq=0)
        assert await log.last_seq("AQE_TESTS") == 2

    async def test_batch_is_stored_whole(self, log: EventLog) -> None:
        items = [NewEvent(event=case(f"t{i}")) for i in range(10)]
        result = await log.append_batch(items)
        assert (result.first_seq, result.last_seq, result.count, result.chunks) == (1, 10, 10, 1)
        assert await collect(log, "AQE_TESTS") == list(range(1, 11))

    async def test_batch_whose_last_condition_fails_stores_nothing(self, log: EventLog) -> None:
        await log.append(case("guarded"))
        items = [NewEvent(event=case(f"t{i}")) for i in range(5)]
        items.append(NewEvent(event=case("guarded", run="r2"), expected_last_seq=0))
        with pytest.raises(ConcurrencyError):
            await log.append_batch(items)
        assert await log.last_seq("AQE_TESTS") == 1

    async def test_batch_conditions_see_earlier_messages_of_the_batch(self, log: EventLog) -> None:
        items = [
            NewEvent(event=case("same"), expected_last_seq=0),
            NewEvent(event=case("same", run="r2"), expected_last_seq=0),
        ]
        with pytest.raises(ConcurrencyError):
            await log.append_batch(items)
        assert await log.last_seq("AQE_TESTS") == 0

    async def test_large_batch_is_split_into_atomic_chunks(self, log: EventLog) -> None:
        n = MAX_BATCH * 2 + 500
        items = [NewEvent(event=case(f"t{i}")) for i in range(n)]
        result = await log.append_batch(items)
        assert result.chunks == 3
        assert result.count == n
        assert (result.first_seq, result.last_seq) == (1, n)
        assert len(await collect(log, "AQE_TESTS")) == n

    async def test_repeating_a_batch_adds_nothing(self, log: EventLog) -> None:
        items = [NewEvent(event=case(f"t{i}")) for i in range(20)]
        await log.append_batch(items)
        again = await log.append_batch(items)
        assert again.duplicates == 20
        assert await log.last_seq("AQE_TESTS") == 20

    async def test_batch_must_stay_in_one_stream(self, log: EventLog) -> None:
        mixed = [
            NewEvent(event=case("t")),
            NewEvent(event=AgentHeartbeat(agent_id="a", beat=1)),
        ]
        with pytest.raises(ValueError, match="one stream"):
            await log.append_batch(mixed)

    async def test_append_many_keeps_order(self, log: EventLog) -> None:
        items = [NewEvent(event=case(f"t{i}")) for i in range(50)]
        results = await log.append_many(items)
        assert [r.seq for r in results] == list(range(1, 51))
        assert [r.event_id for r in results] == [i.resolved_id() for i in items]

    async def test_append_many_again_reports_duplicates(self, log: EventLog) -> None:
        items = [NewEvent(event=case(f"t{i}")) for i in range(30)]
        first = await log.append_many(items)
        again = await log.append_many(items)
        assert all(r.duplicate for r in again)
        assert [r.seq for r in again] == [r.seq for r in first]
        assert await log.last_seq("AQE_TESTS") == 30

    async def test_append_many_raises_the_first_failed_condition(self, log: EventLog) -> None:
        taken = await log.append(case("taken"))
        items = [NewEvent(event=case(f"t{i}")) for i in range(3)]
        items.append(NewEvent(event=case("taken", run="r2"), expected_last_seq=0))
        items.append(NewEvent(event=case("late", run="r2"), expected_last_seq=7))
        async with asyncio.timeout(60):
            with pytest.raises(ConcurrencyError) as info:
                await log.append_many(items)
        assert info.value.subject == taken.subject
        assert (info.value.expected, info.value.actual) == (0, taken.seq)
        # The events before it are stored; the ones after it may be.
        stored = [env.event_id async for env in log.read("AQE_TESTS")]
        assert stored[: len(items) - 1] == [taken.event_id] + [i.resolved_id() for i in items[:3]]

    async def test_bounded_reads_never_come_back_short(self, log: EventLog) -> None:
        # Regression: a read could end empty when its first messages were delivered
        # but not yet handed to the callback when it checked for pending messages.
        await log.append_batch([NewEvent(event=case(f"t{i}")) for i in range(600)])
        for start in range(0, 300, 5):
            seqs = await collect(log, "AQE_TESTS", after_seq=start, until_seq=start + 200)
            assert seqs == list(range(start + 1, start + 201))

    async def test_read_from_after_seq_until_seq_and_filter(self, log: EventLog) -> None:
        for i in range(6):
            await log.append(case("even" if i % 2 == 0 else "odd", run=f"r{i}"))
        assert await collect(log, "AQE_TESTS", after_seq=2) == [3, 4, 5, 6]
        assert await collect(log, "AQE_TESTS", after_seq=1, until_seq=4) == [2, 3, 4]
        even = subject_for(case("even"))
        assert await collect(log, "AQE_TESTS", subjects=even) == [1, 3, 5]
        assert await collect(log, "AQE_TESTS", after_seq=6) == []

    async def test_read_of_empty_stream_ends(self, log: EventLog) -> None:
        assert await collect(log, "AQE_PATTERNS") == []

    async def test_read_follow_sees_later_appends(self, log: EventLog) -> None:
        await log.append(case("t0"))
        seen: list[int] = []

        async def follower() -> None:
            async for env in log.read("AQE_TESTS", follow=True):
                seen.append(env.seq)
                if len(seen) == 3:
                    return

        task = asyncio.create_task(follower())
        # The follower has read what was there; what comes next arrives while it waits.
        async with asyncio.timeout(10):
            while not seen:
                await asyncio.sleep(0.01)
        await log.append(case("t1"))
        await log.append(case("t2"))
        await asyncio.wait_for(task, timeout=10)
        assert seen == [1, 2, 3]

    async def test_get_and_missing_seq(self, log: EventLog) -> None:
        event = PatternAdded(pattern_id="p1", name="tmp dir fixture", code="def f(): ...")
        result = await log.append(event)
        env = await log.get("AQE_PATTERNS", result.seq)
        assert env.decode() == event
        assert env.subject == "aqe.patterns.pattern.p1.added"
        with pytest.raises(EventNotFoundError):
            await log.get("AQE_PATTERNS", 99)

    async def test_last_subject_seq(self, log: EventLog) -> None:
        subject = subject_for(case("x"))
        assert await log.last_subject_seq(subject) == 0
        await log.append(case("y"))
        r = await log.append(case("x"))
        assert await log.last_subject_seq(subject) == r.seq

    async def test_oversized_payload_is_refused(self, log: EventLog) -> None:
        huge = PatternAdded(pattern_id="big", name="big", code="x" * (2 * 1024 * 1024))
        with pytest.raises(PayloadTooLargeError) as info:
            await log.append(huge)
        assert info.value.size > info.value.limit > 0
        assert await log.last_seq("AQE_PATTERNS") == 0


class TestInMemoryEventLog(EventLogContract):
    @pytest.fixture
    async def log(self) -> AsyncIterator[EventLog]:
        mem = InMemoryEventLog(load_stream_specs())
        yield mem
        await mem.close()


@pytest.mark.nats
class TestJetStreamEventLog(EventLogContract):
    @pytest.fixture
    async def log(self, nats_url: str) -> AsyncIterator[EventLog]:
        import nats

        from aqe.log.admin import apply_streams
        from aqe.log.jetstream import JetStreamEventLog

        nc = await nats.connect(nats_url)
        specs = load_stream_specs()
        await apply_streams(nc, specs)
        js_log = JetStreamEventLog(nc, specs)
        yield js_log
        await js_log.close()
