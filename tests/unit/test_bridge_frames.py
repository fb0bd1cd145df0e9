"""The bridge wire protocol (frames.py) and the in-memory stream pair (channel.memory_pair)."""

from __future__ import annotations

import asyncio
import zlib

import msgspec
import pytest

from aqe.bridge.channel import memory_pair
from aqe.bridge.frames import (
    MAX_FRAME,
    PACK_AT,
    Ack,
    Data,
    DataBatch,
    Error,
    Frame,
    FrameDecoder,
    Gap,
    Hello,
    Marks,
    Open,
    Resume,
    chain_key,
    encode_frame,
    partition_of,
)
from aqe.errors import BridgeError, FrameError, StreamClosedError

EVERY_FRAME: list[Frame] = [
    Open(origin="alpha", stream="AQE_TESTS", partition=3, partitions=16, source="beta"),
    Resume(applied_seq=0),
    Resume(applied_seq=2**53),
    Data(seq=1, prev=0, subject="aqe.tests.case.a.executed", data=b""),
    Data(
        seq=10,
        prev=7,
        subject="aqe.tests.case.b.executed",
        data=bytes(range(256)),
        headers={"Nats-Msg-Id": "evt-10", "Aqe-Origin-Cluster": "alpha"},
        recorded_at_ns=1_700_000_000_123_456_789,
    ),
    Ack(applied_seq=10),
    Gap(applied_seq=7, got_prev=9, got_seq=10),
    Error(code="malformed", message="frame length 99 exceeds the limit"),
    Hello(cluster="gamma"),
    Marks(cluster="alpha", marks={"alpha/AQE_TESTS/0": 5, "beta/AQE_RUNS/1": 9}),
    Marks(cluster="alpha", marks={}),
    DataBatch(
        events=(
            Data(seq=11, prev=10, subject="aqe.tests.case.b.executed", data=b"{}"),
            Data(seq=12, prev=11, subject="aqe.tests.case.b.executed", data=b"[]"),
        )
    ),
]


def batch(count: int, start: int = 1) -> DataBatch:
    """A batch of ``count`` consecutive, JSON-like events (they compress well)."""
    return DataBatch(
        events=tuple(
            Data(
                seq=seq,
                prev=seq - 1,
                subject=f"aqe.tests.case.t{seq % 7}.executed",
                data=b'{"event":"tests.case.executed.v1","test_id":"t%d","outcome":"passed"}' % seq,
                headers={"Nats-Msg-Id": f"id-{seq:08d}", "Aqe-Event-Type": "tests.case.v1"},
                recorded_at_ns=1_700_000_000_000_000_000 + seq,
            )
            for seq in range(start, start + count)
        )
    )


def _body(frame: Frame) -> bytes:
    return encode_frame(frame)[4:]


# -- encode / decode ----------------------------------------------------------------------


@pytest.mark.parametrize("frame", EVERY_FRAME, ids=lambda f: type(f).__name__)
def test_every_frame_round_trips(frame: Frame) -> None:
    wire = encode_frame(frame)
    assert int.from_bytes(wire[:4], "big") == len(wire) - 4
    decoder = FrameDecoder()
    assert decoder.feed(wire) == [frame]
    assert decoder.pending == 0


def test_frames_carry_their_kind_in_the_k_field() -> None:
    raw = msgspec.msgpack.decode(_body(Ack(applied_seq=3)))
    assert raw == {"k": "ack", "applied_seq": 3}


def test_many_frames_in_one_chunk_come_out_in_order() -> None:
    wire = b"".join(encode_frame(f) for f in EVERY_FRAME)
    assert FrameDecoder().feed(wire) == EVERY_FRAME


def test_frames_fed_one_byte_at_a_time_come_out_whole() -> None:
    wire = b"".join(encode_frame(f) for f in EVERY_FRAME)
    decoder = FrameDecoder()
    got: list[Frame] = []
    for i in range(len(wire)):
        got += decoder.feed(wire[i : i + 1])
    assert got == EVERY_FRAME
    assert decoder.pending == 0


def test_chunks_that_split_the_length_prefix_and_the_body() -> None:
    first, second = encode_frame(EVERY_FRAME[4]), encode_frame(EVERY_FRAME[9])
    wire = first + second
    decoder = FrameDecoder()
    assert decoder.feed(wire[:2]) == []
    assert decoder.pending == 2
    assert decoder.feed(wire[2 : len(first) + 3]) == [EVERY_FRAME[4]]
    assert decoder.pending == 3
    assert decoder.feed(wire[len(first) + 3 :]) == [EVERY_FRAME[9]]


def test_an_empty_chunk_is_harmless() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"") == []
    assert decoder.feed(encode_frame(Ack(applied_seq=1))) == [Ack(applied_seq=1)]


# -- data batches -------------------------------------------------------------------------


def test_a_small_batch_travels_as_its_events() -> None:
    small = batch(3)
    assert len(msgspec.msgpack.encode(small.events)) < PACK_AT
    raw = msgspec.msgpack.decode(_body(small))
    assert raw["k"] == "batch"
    assert len(raw["events"]) == 3
    assert "deflated" not in raw or not raw["deflated"]
    assert FrameDecoder().feed(encode_frame(small)) == [small]


def test_a_large_batch_travels_deflated_and_arrives_expanded() -> None:
    large = batch(200)
    expanded = msgspec.msgpack.encode(large.events)
    wire = encode_frame(large)
    raw = msgspec.msgpack.decode(wire[4:])
    assert raw["k"] == "batch"
    assert raw.get("events", []) == []
    assert zlib.decompress(raw["deflated"]) == expanded
    assert len(wire) * 4 < len(expanded)
    decoder = FrameDecoder()
    got: list[Frame] = []
    for i in range(0, len(wire), 1200):  # as QUIC delivers it, packet by packet
        got += decoder.feed(wire[i : i + 1200])
    assert got == [large]
    assert decoder.pending == 0


def _deflated_body(payload: bytes, **extra: object) -> bytes:
    return msgspec.msgpack.encode({"k": "batch", "deflated": payload, **extra})


def test_a_batch_that_expands_past_the_limit_is_refused() -> None:
    bomb = zlib.compress(b"\x00" * (2 * 1024 * 1024), 9)
    with pytest.raises(FrameError, match="expands past"):
        FrameDecoder(max_frame=1024 * 1024).feed(_framed(_deflated_body(bomb)))


@pytest.mark.parametrize(
    "body",
    [
        _deflated_body(b"not deflate data"),
        _deflated_body(zlib.compress(msgspec.msgpack.encode(batch(40).events))[:-9]),
        _deflated_body(zlib.compress(b"\x93\x01\x02\x03")),  # deflated, but not events
        _deflated_body(
            zlib.compress(msgspec.msgpack.encode(batch(2).events)),
            events=msgspec.to_builtins(batch(2).events),
        ),
    ],
    ids=["not-deflate", "cut-short", "not-events", "events-and-deflated"],
)
def test_a_bad_deflated_batch_is_a_frame_error(body: bytes) -> None:
    with pytest.raises(FrameError, match="malformed"):
        FrameDecoder().feed(_framed(body))


def test_encoding_a_batch_over_the_limit_fails() -> None:
    huge = DataBatch(
        events=tuple(
            Data(seq=i, prev=i - 1, subject="s", data=b"x" * (MAX_FRAME // 4)) for i in range(1, 6)
        )
    )
    with pytest.raises(FrameError, match="exceeds"):
        encode_frame(huge)


async def test_memory_pair_carries_a_large_batch_whole() -> None:
    a, b = memory_pair("alpha", "beta")
    await a.send(batch(300))
    assert await b.recv() == batch(300)


# -- bad input ----------------------------------------------------------------------------


def test_a_length_over_the_limit_is_refused_before_the_body_arrives() -> None:
    decoder = FrameDecoder(max_frame=1024)
    with pytest.raises(FrameError, match="1025"):
        decoder.feed((1025).to_bytes(4, "big"))


def test_the_default_limit_is_max_frame() -> None:
    with pytest.raises(FrameError, match="exceeds"):
        FrameDecoder().feed((MAX_FRAME + 1).to_bytes(4, "big"))
    # exactly MAX_FRAME is allowed (it waits for the body)
    decoder = FrameDecoder()
    assert decoder.feed(MAX_FRAME.to_bytes(4, "big")) == []


def test_encoding_a_frame_over_the_limit_fails() -> None:
    huge = Data(seq=1, prev=0, subject="s", data=b"x" * MAX_FRAME)
    with pytest.raises(FrameError, match="exceeds"):
        encode_frame(huge)


def _framed(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


@pytest.mark.parametrize(
    "body",
    [
        b"garbage",  # not msgpack
        msgspec.msgpack.encode({"k": "nope", "x": 1}),  # unknown kind
        msgspec.msgpack.encode({"applied_seq": 1}),  # no kind
        msgspec.msgpack.encode({"k": "ack", "applied_seq": "ten"}),  # wrong type
        msgspec.msgpack.encode({"k": "data", "seq": 1}),  # missing fields
        msgspec.msgpack.encode([1, 2, 3]),  # not a map
        b"",  # empty body
    ],
    ids=["not-msgpack", "unknown-kind", "no-kind", "wrong-type", "missing", "array", "empty"],
)
def test_a_malformed_body_is_a_frame_error(body: bytes) -> None:
    with pytest.raises(FrameError, match="malformed"):
        FrameDecoder().feed(_framed(body))


def test_frame_error_is_a_bridge_error_and_a_value_error() -> None:
    with pytest.raises(BridgeError):
        FrameDecoder().feed(_framed(b"\xc1"))
    assert issubclass(FrameError, ValueError)


def test_frames_before_a_malformed_one_in_a_later_chunk_were_delivered() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(Ack(applied_seq=1))) == [Ack(applied_seq=1)]
    with pytest.raises(FrameError):
        decoder.feed(_framed(b"junk"))


# -- partitions and chain keys --------------------------------------------------------------


def test_partition_of_is_crc32_mod_partitions() -> None:
    subject = "aqe.tests.case.tests%2Funit%2Ftest_x.py::test_a.executed"
    assert partition_of(subject, 16) == zlib.crc32(subject.encode()) % 16


def test_partition_of_is_stable_across_processes_and_hosts() -> None:
    # Pinned values: CRC-32 (IEEE) does not depend on PYTHONHASHSEED, platform or version.
    # 0xCBF43926 is the published CRC-32 check value of "123456789".
    assert partition_of("123456789", 1000) == 0xCBF43926 % 1000 == 262
    assert partition_of("aqe.tests.case.a.executed", 16) == 14
    assert partition_of("", 7) == 0
    assert [partition_of(f"s.{i}", 1) for i in range(5)] == [0] * 5


def test_partition_of_spreads_subjects_over_every_partition() -> None:
    seen = {partition_of(f"aqe.tests.case.{i}.executed", 8) for i in range(400)}
    assert seen == set(range(8))


def test_chain_key_names_origin_stream_and_partition() -> None:
    assert chain_key("alpha", "AQE_TESTS", 3) == "alpha/AQE_TESTS/3"


# -- memory_pair ----------------------------------------------------------------------------


async def test_memory_pair_carries_frames_both_ways_with_peer_names() -> None:
    a, b = memory_pair("alpha", "beta")
    assert (a.peer, b.peer) == ("beta", "alpha")
    for frame in EVERY_FRAME:
        await a.send(frame)
        assert await b.recv() == frame
    await b.send(Ack(applied_seq=4))
    assert await a.recv() == Ack(applied_seq=4)


async def test_memory_pair_close_sends_the_error_then_ends_the_stream() -> None:
    a, b = memory_pair("alpha", "beta")
    await a.close(Error(code="bye", message="done"))
    await a.close()  # idempotent
    assert await b.recv() == Error(code="bye", message="done")
    with pytest.raises(StreamClosedError):
        await b.recv()
    with pytest.raises(StreamClosedError):
        await b.recv()
    with pytest.raises(StreamClosedError):
        await a.send(Ack(applied_seq=1))
    with pytest.raises(StreamClosedError):
        await b.send(Ack(applied_seq=1))  # the peer finished: nothing more to say


async def test_memory_pair_send_waits_when_the_budget_is_used_up() -> None:
    a, b = memory_pair("alpha", "beta", budget=2)
    await a.send(Ack(applied_seq=1))
    await a.send(Ack(applied_seq=2))
    third = asyncio.ensure_future(a.send(Ack(applied_seq=3)))
    for _ in range(10):
        await asyncio.sleep(0)
    assert not third.done()
    assert await b.recv() == Ack(applied_seq=1)
    await third
    assert [await b.recv(), await b.recv()] == [Ack(applied_seq=2), Ack(applied_seq=3)]
