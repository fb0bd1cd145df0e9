"""The pure chain logic of bridge replication: copies, the target's plan, the source's books."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aqe.bridge._chains import pack_frames
from aqe.bridge.frames import Data, DataBatch, Gap, chain_key, partition_of
from aqe.bridge.replication import (
    Holdings,
    SourceChain,
    copy_headers,
    copy_msg_id,
    is_marker,
    marker_subject,
    plan_batch,
)
from aqe.events import BridgeApplied, Envelope, Headers
from aqe.log import InMemoryEventLog, load_stream_specs


def data(seq: int, prev: int) -> Data:
    return Data(seq=seq, prev=prev, subject="aqe.tests.case.x.executed", data=b"{}")


def env(seq: int, subject: str = "aqe.tests.case.x.executed") -> Envelope:
    return Envelope(
        stream="AQE_TESTS",
        seq=seq,
        subject=subject,
        event_id=f"id-{seq}",
        event_type="tests.case.executed.v1",
        recorded_at_ns=1_000 + seq,
        data=b"{}",
        headers={Headers.MSG_ID: f"id-{seq}"},
    )


# -- names and copies -----------------------------------------------------------------------


def test_marker_subject_is_one_token_per_chain_in_the_domain() -> None:
    subject = marker_subject("tests", "east/AQE_TESTS/3")
    assert subject == "aqe.tests.bridge.east~2FAQE_TESTS~2F3.applied"
    assert is_marker(subject)
    assert is_marker("aqe.tests.anything.x.y", BridgeApplied.type_tag())
    assert not is_marker("aqe.tests.case.x.executed", "tests.case.executed.v1")


def test_copy_of_a_local_event_gets_origin_headers_and_an_origin_msg_id() -> None:
    headers = {
        Headers.MSG_ID: "evt-1",
        Headers.EVENT_TYPE: "tests.case.executed.v1",
        Headers.EXPECTED_LAST_SUBJECT_SEQ: "4",
        Headers.EXPECTED_LAST_SUBJECT_SEQ_SUBJECT: "aqe.tests.>",
        "Nats-Batch-Id": "b1",
        "Nats-Batch-Sequence": "2",
        Headers.CORRELATION_ID: "corr",
    }
    out = copy_headers(headers, "east", "AQE_TESTS", 17)
    assert out == {
        Headers.EVENT_TYPE: "tests.case.executed.v1",
        Headers.CORRELATION_ID: "corr",
        Headers.EVENT_ID: "evt-1",
        Headers.ORIGIN_CLUSTER: "east",
        Headers.ORIGIN_STREAM: "AQE_TESTS",
        Headers.ORIGIN_SEQ: "17",
        Headers.MSG_ID: copy_msg_id("east", "AQE_TESTS", 17),
    }
    assert out[Headers.MSG_ID] == "east:AQE_TESTS:17"


def test_copy_of_a_copy_keeps_its_origin_and_event_id() -> None:
    first = copy_headers({Headers.MSG_ID: "evt-1"}, "east", "AQE_TESTS", 17)
    relayed = copy_headers(first, "east", "AQE_TESTS", 17)
    assert relayed == first


@pytest.mark.parametrize(
    ("origin", "stream", "seq"),
    [("west", "AQE_TESTS", 17), ("east", "AQE_PATTERNS", 17), ("east", "AQE_TESTS", 18)],
)
def test_copy_whose_origin_headers_contradict_the_chain_is_refused(
    origin: str, stream: str, seq: int
) -> None:
    first = copy_headers({Headers.MSG_ID: "evt-1"}, "east", "AQE_TESTS", 17)
    with pytest.raises(ValueError, match="origin headers"):
        copy_headers(first, origin, stream, seq)


# -- the target's plan ----------------------------------------------------------------------


def test_plan_accepts_frames_that_follow_the_chain() -> None:
    plan = plan_batch([data(3, 0), data(7, 3), data(9, 7)], applied=0, in_gap=False)
    assert [f.seq for f in plan.accepted] == [3, 7, 9]
    assert (plan.duplicates, plan.gap, plan.in_gap, plan.cursor) == (0, None, False, 9)


def test_plan_skips_what_is_applied() -> None:
    plan = plan_batch([data(3, 0), data(7, 3), data(9, 7)], applied=7, in_gap=False)
    assert [f.seq for f in plan.accepted] == [9]
    assert plan.duplicates == 2
    assert plan.cursor == 9


def test_plan_reports_a_gap_once_and_drops_until_the_chain_resumes() -> None:
    plan = plan_batch([data(3, 0), data(9, 7), data(12, 9)], applied=0, in_gap=False)
    assert [f.seq for f in plan.accepted] == [3]
    assert plan.gap == (7, 9)
    assert plan.in_gap
    assert plan.cursor == 3
    # The stale frames still on the way are dropped silently; the resent one is taken.
    later = plan_batch([data(14, 12), data(7, 3), data(9, 7)], applied=3, in_gap=True)
    assert later.gap is None
    assert [f.seq for f in later.accepted] == [7, 9]
    assert not later.in_gap


def test_plan_of_a_reorder_is_a_gap() -> None:
    plan = plan_batch([data(7, 3), data(3, 0)], applied=0, in_gap=False)
    assert plan.gap == (3, 7)
    assert [f.seq for f in plan.accepted] == [3]


# -- the source's books ---------------------------------------------------------------------


def sent_chain(*seqs: int) -> SourceChain:
    chain = SourceChain("east/AQE_TESTS/0")
    for seq in seqs:
        chain.push(env(seq))
    return chain


def test_push_chains_prev_and_keeps_frames_in_flight() -> None:
    chain = sent_chain(3, 7, 9)
    assert [(f.prev, f.seq) for f in chain.in_flight] == [(0, 3), (3, 7), (7, 9)]
    assert chain.sent == 9
    assert chain.in_flight[0].headers[Headers.MSG_ID] == "id-3"
    assert chain.oldest_unacked_ns() == 1_003


def test_ack_retires_frames_and_moves_acked_only() -> None:
    chain = sent_chain(3, 7, 9)
    assert chain.on_ack(7) == 2
    assert (chain.acked, chain.sent, len(chain.in_flight)) == (7, 9, 1)
    assert chain.on_ack(5) == 0  # a late, smaller ack changes nothing
    assert chain.acked == 7
    assert chain.on_ack(9) == 1
    assert chain.oldest_unacked_ns() == 0


def test_ack_beyond_what_was_sent_skips_ahead() -> None:
    chain = sent_chain(3)
    assert chain.on_ack(12) == 1  # another link applied more
    assert chain.sent == 12


def test_resume_keeps_early_frames_that_continue_the_chain() -> None:
    chain = sent_chain(3, 7, 9)
    assert chain.on_resume(3) == 1
    assert (chain.acked, chain.sent) == (3, 9)
    assert [f.seq for f in chain.in_flight] == [7, 9]


def test_resume_below_the_early_frames_rewinds_and_expects_one_gap() -> None:
    chain = sent_chain(3, 7, 9)
    chain.on_ack(3)
    assert chain.on_resume(0) == 2  # the target lost what it had acknowledged
    assert (chain.acked, chain.sent, len(chain.in_flight)) == (0, 0, 0)
    # The target answers the early frames with a gap at 0: already handled.
    assert chain.on_gap(Gap(applied_seq=0, got_prev=3, got_seq=7)) == (0, False)
    # A later gap at the same place is real again.
    assert chain.on_gap(Gap(applied_seq=0, got_prev=3, got_seq=7)) == (0, True)


def test_resume_with_nothing_in_flight_takes_the_targets_position() -> None:
    chain = sent_chain()
    chain.on_resume(40)
    assert (chain.acked, chain.sent) == (40, 40)


def test_gap_drops_flight_after_the_targets_position() -> None:
    chain = sent_chain(3, 7, 9, 12)
    released, rewind = chain.on_gap(Gap(applied_seq=7, got_prev=9, got_seq=12))
    assert (released, rewind) == (4, True)
    assert (chain.acked, chain.sent, len(chain.in_flight)) == (7, 7, 0)
    assert chain.events_acked == 2
    assert chain.rewinds == 1


def test_floor_follows_the_reader_while_the_chain_is_unchanged() -> None:
    chain = sent_chain(3)
    start = chain.generation
    chain.advance(50, start)  # the reader went to 50 without another event of the chain
    assert (chain.sent, chain.floor) == (3, 50)
    chain.down()
    chain.advance(80, start)  # a run that began before the chain went down
    assert chain.floor == 50


def test_floor_falls_back_on_a_rewind_but_not_on_a_resume_that_continues() -> None:
    chain = sent_chain(3, 7)
    chain.advance(20, chain.generation)
    chain.down()
    chain.on_resume(3)  # frame 7 continues from 3: kept in flight, nothing to re-read
    assert (chain.sent, chain.floor) == (7, 20)
    chain.on_gap(Gap(applied_seq=3, got_prev=5, got_seq=7))
    assert (chain.sent, chain.floor) == (3, 3)


def test_resume_below_what_was_acknowledged_re_reads_from_there() -> None:
    chain = sent_chain(3, 7)
    chain.on_ack(7)
    chain.advance(30, chain.generation)
    chain.on_resume(3)  # the target lost 7
    assert (chain.acked, chain.sent, chain.floor) == (3, 3, 3)
    chain.on_resume(3)
    chain.on_ack(9)
    assert (chain.sent, chain.floor) == (9, 9)


async def test_memory_log_envelopes_take_the_events_own_id_from_a_copy() -> None:
    log = InMemoryEventLog(load_stream_specs())
    subject = "aqe.tests.case.t.executed"
    await log.append_raw(subject, b"{}", {Headers.MSG_ID: "A:AQE_TESTS:4", Headers.EVENT_ID: "e4"})
    await log.append_raw(subject, b"{}", {Headers.MSG_ID: "own"})
    assert [e.event_id async for e in log.read("AQE_TESTS")] == ["e4", "own"]


# -- packing a chain's frames for the wire ----------------------------------------------------


def sized(seq: int, size: int) -> Data:
    return Data(seq=seq, prev=seq - 1, subject="aqe.tests.case.x.executed", data=b"x" * size)


def test_pack_sends_a_lone_frame_as_itself_and_nothing_for_nothing() -> None:
    assert pack_frames([]) == []
    assert pack_frames([data(3, 0)]) == [data(3, 0)]


def test_pack_batches_runs_by_count_in_order() -> None:
    frames = [sized(seq, 10) for seq in range(1, 12)]
    packed = pack_frames(frames, max_events=4)
    assert [type(f) for f in packed] == [DataBatch, DataBatch, DataBatch]
    assert [e for f in packed if isinstance(f, DataBatch) for e in f.events] == frames
    assert [len(f.events) for f in packed if isinstance(f, DataBatch)] == [4, 4, 3]


def test_pack_batches_runs_by_bytes_and_sends_a_big_event_alone() -> None:
    frames = [sized(1, 100), sized(2, 100), sized(3, 5000), sized(4, 100), sized(5, 100)]
    packed = pack_frames(frames, max_events=100, max_bytes=1000)
    assert packed == [
        DataBatch(events=(frames[0], frames[1])),
        frames[2],
        DataBatch(events=(frames[3], frames[4])),
    ]


# -- holdings: marks from markers -------------------------------------------------------------


class GatedLog:
    """An in-memory log whose reads wait at a gate (a server slow to set up a consumer)."""

    def __init__(self) -> None:
        self.memory = InMemoryEventLog(load_stream_specs())
        self.specs = tuple(load_stream_specs())
        self.gate = asyncio.Event()
        self.gate.set()

    async def read(self, stream: str, **kw: Any) -> AsyncIterator[Envelope]:
        await self.gate.wait()
        async for env in self.memory.read(stream, **kw):
            yield env


async def test_gossip_marks_come_from_markers_and_need_not_wait_for_a_slow_read() -> None:
    log = GatedLog()
    key = "A/AQE_TESTS/2"
    marker = BridgeApplied(
        chain=key, origin="A", stream="AQE_TESTS", partition=2, partitions=8,
        first_seq=4, last_seq=9, prev_seq=0, count=2, via="A",
    )  # fmt: skip
    copy = copy_headers({Headers.MSG_ID: "e9"}, "A", "AQE_TESTS", 9)
    await log.memory.append_raw("aqe.tests.case.t.executed", b"{}", {Headers.MSG_ID: "own"})
    await log.memory.append_raw("aqe.tests.case.t.executed", b"{}", copy)
    await log.memory.append_raw(
        marker_subject("tests", key), marker.to_json(), {Headers.EVENT_TYPE: marker.type_tag()}
    )
    holdings = Holdings(log, "B", ["AQE_TESTS"])  # type: ignore[arg-type]

    log.gate.clear()
    assert await holdings.refresh_copies(wait_s=0) == {}  # the read goes on meanwhile
    log.gate.set()
    assert await holdings.refresh_copies() == {key: 9}
    assert holdings.copies_after(key, 3) == 0  # read from the start: no earlier marker
    assert holdings.copies_after(key, 9) is None
    own = chain_key("B", "AQE_TESTS", partition_of("aqe.tests.case.t.executed", 8))
    assert await holdings.refresh() == {key: 9, own: 1}
