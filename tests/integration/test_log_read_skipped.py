"""A bounded read ends when nats-server skips a record it cannot read.

A record whose bytes changed in the file store (checksum mismatch) is still counted in
the stream's state and in a consumer's pending count, but never delivered: a read that
waited for the ack reply's ``pending == 0`` (or for ``until_seq``) waited forever when
that record was the last one left to read. The stream is ``AQE_TESTS`` without s2
compression so the test finds a message's payload in the ``.blk`` file and changes it
while the server is stopped (the technique of ``test_audit_tamper.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import msgspec
import nats
import pytest

from aqe.events import TestCaseExecuted
from aqe.log import load_stream_specs
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.log.streams import StreamSpec
from aqe.server import NatsServerProcess

pytestmark = pytest.mark.nats

STREAM = "AQE_TESTS"
COUNT = 10
READ_TIMEOUT_S = 30.0
"""A read not ended by then hangs (a fixed read ends within a few seconds, under load)."""


async def open_log(url: str) -> JetStreamEventLog:
    specs: list[StreamSpec] = [
        msgspec.structs.replace(s, compression="none") if s.name == STREAM else s
        for s in load_stream_specs()
    ]
    nc = await nats.connect(url)
    await apply_streams(nc, specs)
    return JetStreamEventLog(nc, specs)


def corrupt(store: Path, needle: bytes) -> None:
    """Change one byte of the one record holding ``needle`` (server stopped)."""
    for blk in (store / "jetstream").rglob("*.blk"):
        raw = blk.read_bytes()
        if STREAM in blk.parts and needle in raw:
            assert raw.count(needle) == 1
            blk.write_bytes(raw.replace(needle, needle[:-1] + b"X"))
            return
    raise AssertionError(f"{needle!r} not found in any {STREAM} block file")


@pytest.fixture
async def tampered(
    request: pytest.FixtureRequest, nats_server: NatsServerProcess, tmp_path: Path
) -> AsyncIterator[JetStreamEventLog]:
    """COUNT events (seq i is test ``t{i}``), the sequences in ``request.param``
    corrupted in the file store, and a log on the restarted server."""
    log = await open_log(nats_server.url)
    try:
        for i in range(1, COUNT + 1):
            event = TestCaseExecuted(
                test_id=f"t{i}", run_id="r1", outcome="passed", message=f"needle-{i:03d}"
            )
            await log.append(event)
    finally:
        await log.close()
    nats_server.stop_sync()
    broken: Sequence[int] = request.param
    for seq in broken:
        corrupt(nats_server.store_dir, f"needle-{seq:03d}".encode())
    restarted = NatsServerProcess.start_sync(
        nats_server.store_dir, log_file=tmp_path / "nats-restarted.log"
    )
    try:
        log = await open_log(restarted.url)
        try:
            info = await log.connection.jetstream().stream_info(STREAM)
            # The server still counts the broken records: the read cannot just count.
            assert (info.state.messages, info.state.last_seq) == (COUNT, COUNT)
            yield log
        finally:
            await log.close()
    finally:
        restarted.stop_sync()


async def seqs(log: JetStreamEventLog, **kwargs: object) -> list[int]:
    """The sequences a non-follow read yields; fails (not hangs) if it never ends."""

    async def collect() -> list[int]:
        return [env.seq async for env in log.read(STREAM, **kwargs)]  # type: ignore[arg-type]

    return await asyncio.wait_for(collect(), READ_TIMEOUT_S)


def every(*skipped: int) -> list[int]:
    return [s for s in range(1, COUNT + 1) if s not in skipped]


@pytest.mark.parametrize("tampered", [(COUNT,)], indirect=True)
async def test_read_ends_when_the_last_record_is_skipped(tampered: JetStreamEventLog) -> None:
    assert await seqs(tampered) == every(COUNT)
    assert await seqs(tampered, until_seq=COUNT) == every(COUNT)
    assert await seqs(tampered, after_seq=5) == [6, 7, 8, 9]
    # Only the broken record is left to read.
    assert await seqs(tampered, after_seq=COUNT - 1) == []
    # A filter whose only message is the broken one.
    assert await seqs(tampered, subjects=f"aqe.tests.case.t{COUNT}.>") == []
    assert await seqs(tampered, subjects="aqe.tests.case.t9.>") == [9]


@pytest.mark.parametrize("tampered", [(8, 9, 10)], indirect=True)
async def test_read_ends_when_every_record_after_the_last_delivered_is_skipped(
    tampered: JetStreamEventLog,
) -> None:
    assert await seqs(tampered) == every(8, 9, 10)
    assert await seqs(tampered, until_seq=9) == every(8, 9, 10)
    assert await seqs(tampered, after_seq=2, until_seq=8) == [3, 4, 5, 6, 7]


@pytest.mark.parametrize("tampered", [(5,)], indirect=True)
async def test_a_skipped_record_in_the_middle_is_passed_over(tampered: JetStreamEventLog) -> None:
    assert await seqs(tampered) == every(5)
    assert await seqs(tampered, until_seq=5) == [1, 2, 3, 4]
    assert await seqs(tampered, until_seq=6) == [1, 2, 3, 4, 6]
    assert await seqs(tampered, after_seq=4) == [6, 7, 8, 9, 10]
