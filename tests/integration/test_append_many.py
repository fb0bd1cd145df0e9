"""Pipelined appends (``JetStreamEventLog.append_many``) always come back (issue 21).

nats-py 2.16's ``publish_async`` raises inside its reply callback when the server
answers an error, so the append's future never resolved: a failed condition or a
stream at its limit hung the caller forever, and a publish whose ack never came was
awaited without a bound. Each test gives the log an ack timeout far longer than its
own guard (``asyncio.timeout``), so only the server's answer itself can end the call
in time, except where the silence is the point.
"""

from __future__ import annotations

import asyncio
import time

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import DiscardPolicy

from aqe.errors import ConcurrencyError, LimitExceededError, LogUnavailableError
from aqe.events import TestCaseExecuted
from aqe.log import NewEvent, load_stream_specs
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.log.retry import while_unavailable
from aqe.log.streams import with_replicas
from aqe.log.subjects import subject_for
from aqe.server import LocalCluster, NatsServerProcess
from support.processes import paused
from support.waiting import until

pytestmark = pytest.mark.nats

_NEVER_S = 600.0
"""An ack timeout no test waits for: the answer must come from the server."""
_GUARD_S = 60.0
"""How long a call may take before the test calls it a hang (generous: loaded CI)."""


def case(test_id: str, run: str = "r1") -> TestCaseExecuted:
    return TestCaseExecuted(test_id=test_id, run_id=run, outcome="passed")


@pytest.fixture
def log(nc: Client) -> JetStreamEventLog:
    return JetStreamEventLog(nc, load_stream_specs(), ack_timeout_s=_NEVER_S)


async def test_a_failed_condition_raises_at_once_and_the_rest_is_stored(
    log: JetStreamEventLog,
) -> None:
    first = await log.append(case("t0"))
    items = [NewEvent(event=case(f"t{i}")) for i in range(1, 4)]
    items.append(NewEvent(event=case("t0", run="r2"), expected_last_seq=0))
    items += [NewEvent(event=case(f"t{i}")) for i in range(4, 6)]
    async with asyncio.timeout(_GUARD_S):
        with pytest.raises(ConcurrencyError) as caught:
            await log.append_many(items)
    assert caught.value.subject == subject_for(case("t0"))
    assert (caught.value.expected, caught.value.actual) == (0, first.seq)
    # Not atomic: the events before and after the failing one were sent and stored.
    assert await log.last_seq("AQE_TESTS") == 6

    # Nothing is left waiting: the same log appends again, conditionally or not.
    async with asyncio.timeout(_GUARD_S):
        again = await log.append_many(
            [NewEvent(event=case("t0", run="r3"), expected_last_seq=first.seq)]
            + [NewEvent(event=case(f"u{i}")) for i in range(5000)]
        )
    assert [r.seq for r in again] == list(range(7, 5008))
    assert not any(r.duplicate for r in again)


async def test_the_first_failure_in_input_order_is_raised(log: JetStreamEventLog) -> None:
    await log.append(case("a"))
    await log.append(case("b"))
    items = [
        NewEvent(event=case("x")),
        NewEvent(event=case("b", run="r2"), expected_last_seq=0),
        NewEvent(event=case("a", run="r2"), expected_last_seq=0),
    ]
    async with asyncio.timeout(_GUARD_S):
        with pytest.raises(ConcurrencyError) as caught:
            await log.append_many(items)
    assert caught.value.subject == subject_for(case("b"))


async def test_a_stream_at_its_limit_raises_the_limit_at_once(
    nc: Client, log: JetStreamEventLog
) -> None:
    js = nc.jetstream()
    config = (await js.stream_info("AQE_TESTS")).config
    config.max_msgs = 3
    config.discard = DiscardPolicy.NEW
    await js.update_stream(config)
    items = [NewEvent(event=case(f"t{i}")) for i in range(5)]
    async with asyncio.timeout(_GUARD_S):
        with pytest.raises(LimitExceededError) as caught:
            await log.append_many(items)
    assert not isinstance(caught.value, LogUnavailableError)  # an answer, not an outage
    assert subject_for(case("t3")) in str(caught.value)
    assert "maximum messages" in str(caught.value)
    assert await log.last_seq("AQE_TESTS") == 3


async def test_no_stream_for_the_subject_is_unavailable_at_once(
    nc: Client, log: JetStreamEventLog
) -> None:
    await nc.jetstream().delete_stream("AQE_TESTS")
    async with asyncio.timeout(_GUARD_S):
        with pytest.raises(LogUnavailableError, match="no stream answered"):
            await log.append_many([NewEvent(event=case(f"t{i}")) for i in range(3)])


async def test_an_ack_that_never_comes_is_unavailable_and_a_retry_reports_duplicates(
    nats_server: NatsServerProcess, nc: Client
) -> None:
    log = JetStreamEventLog(nc, load_stream_specs(), ack_timeout_s=1.0)
    stored = await log.append(case("before"))
    items = [NewEvent(event=case(f"t{i}")) for i in range(20)]
    with paused(nats_server.pid):
        started = time.monotonic()
        async with asyncio.timeout(_GUARD_S):
            with pytest.raises(LogUnavailableError, match="may or may not be stored"):
                await log.append_many(items)
        assert time.monotonic() - started >= 1.0
    # Resumed, the server stores what it was sent while paused; the retry with the same
    # ids (as while_unavailable does) is answered as duplicates, not new events.
    async with asyncio.timeout(_GUARD_S):
        results = await while_unavailable(lambda: log.append_many(items), within_s=_GUARD_S)
    assert all(r.duplicate for r in results)
    assert [r.seq for r in results] == list(range(stored.seq + 1, stored.seq + 21))
    assert [r.event_id for r in results] == [i.resolved_id() for i in items]
    assert await log.last_seq("AQE_TESTS") == stored.seq + 20


@pytest.mark.cluster
@pytest.mark.timeout(300)
async def test_a_paused_stream_leader_never_hangs_and_retries_store_once(
    nats_cluster: LocalCluster,
) -> None:
    # The client sits on a follower; the R3 leader of AQE_TESTS stops answering right
    # after appends were routed to it. The call comes back (ack timeout or 503s) and
    # retrying the same ids lands every event exactly once.
    specs = with_replicas(load_stream_specs(), 3)
    admin = await nats.connect(nats_cluster.urls)
    try:
        await while_unavailable(lambda: apply_streams(admin, specs), within_s=_GUARD_S)
    finally:
        await admin.close()
    leader = await nats_cluster.stream_leader("AQE_TESTS", wait_s=_GUARD_S)
    follower = next(n for n in nats_cluster.names if n != leader)
    nc = await nats.connect(nats_cluster.url(follower), max_reconnect_attempts=0)
    log = JetStreamEventLog(nc, specs, ack_timeout_s=2.0)
    try:
        await while_unavailable(lambda: log.append(case("before")), within_s=_GUARD_S)
        items = [NewEvent(event=case(f"t{i}")) for i in range(200)]
        leader_process = nats_cluster.nodes[leader]
        assert leader_process is not None
        with paused(leader_process.pid):
            async with asyncio.timeout(_GUARD_S * 2):
                results = await while_unavailable(
                    lambda: log.append_many(items), within_s=_GUARD_S * 2
                )
        assert [r.event_id for r in results] == [i.resolved_id() for i in items]

        async def stored_ids() -> list[str]:
            return [env.event_id async for env in log.read("AQE_TESTS")]

        expected = sorted([case("before").default_id()] + [r.event_id for r in results])

        async def caught_up() -> list[str] | None:
            # Right after the resume, the old leader can still answer a read from its own,
            # older state until it hears of the new term: wait until a read reaches the
            # acked writes, then check that each landed exactly once.
            ids = await while_unavailable(stored_ids, within_s=_GUARD_S)
            return ids if len(ids) >= len(expected) else None

        ids = await until(caught_up, "a read that reaches every acked write", timeout_s=_GUARD_S)
        assert sorted(ids) == expected
    finally:
        await log.close()
