"""Every way parking a dead letter can fail, on a real nats-server: no fold is stuck.

Each poison here is a message any NATS client may publish on an aqe subject. Before the
fix each one stopped the fold for good: the dead letter resent the original's
``Nats-*`` headers (an expected stream the DLQ is not), went over the DLQ stream's
``max_msg_size``, or had no stream to go to, and the error ended every run at the same
checkpoint.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import StreamConfig

from aqe.events import TestCaseExecuted
from aqe.log import load_stream_specs
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.projections import CatalogProjection, ProjectionRunner, RunStats, SnapshotStore
from aqe.projections.deadletter import DeadLetter, JetStreamDeadLetters
from aqe.server import NatsServerProcess
from support.servers import server_with_config

pytestmark = pytest.mark.nats

POISON = "aqe.tests.case.poison.executed"


async def poison_between_two_events(
    nc: Client, data: bytes, headers: dict[str, str] | None = None
) -> int:
    """Store a good event, the poison, and another good event; the poison's sequence."""
    log = JetStreamEventLog(nc)
    await log.append(TestCaseExecuted(test_id="before", run_id="r", outcome="passed"))
    ack = await nc.jetstream().publish(POISON, data, headers=headers, timeout=10)
    await log.append(TestCaseExecuted(test_id="after", run_id="r", outcome="passed"))
    return int(ack.seq)


async def fold(nc: Client, root: Path) -> tuple[RunStats, list[DeadLetter]]:
    parked: list[DeadLetter] = []
    projection = CatalogProjection()
    stats = await ProjectionRunner(
        projection,
        JetStreamEventLog(nc),
        SnapshotStore(projection, root / projection.name),
        JetStreamDeadLetters(nc, parked.append, unavailable_s=2.0),
    ).run()
    return stats, parked


async def dlq_messages(nc: Client) -> list[tuple[dict[str, str], bytes]]:
    js = nc.jetstream()
    last = (await js.stream_info("AQE_DLQ")).state.last_seq
    out = []
    for seq in range(1, last + 1):
        msg = await js.get_msg("AQE_DLQ", seq)
        out.append((dict(msg.headers or {}), msg.data or b""))
    return out


def assert_folded_past(stats: RunStats, poison_seq: int) -> None:
    assert stats.dead_letters == 1
    assert stats.applied == 2  # both good events, the one after the poison included
    assert stats.checkpoints["AQE_TESTS"] == poison_seq + 1


async def test_server_instructions_in_the_poisons_headers_are_not_resent(
    nc: Client, tmp_path: Path
) -> None:
    # The original publish honours these (it is on AQE_TESTS); resent on the dead
    # letter, the expected stream would be refused by AQE_DLQ (server error 10060).
    headers = {
        "Nats-Expected-Stream": "AQE_TESTS",
        "Nats-Msg-Id": "poison-1",
        "X-Junk": "j" * 50_000,  # under JetStream's 64 KiB header limit, over our budget
        "X-Small": "kept",
    }
    seq = await poison_between_two_events(nc, b"\x00garbage", headers)
    stats, parked = await fold(nc, tmp_path)
    assert_folded_past(stats, seq)
    assert [p.copy for p in parked] == ["full"]
    [(dlq_headers, data)] = await dlq_messages(nc)
    assert data == b"\x00garbage"
    assert dlq_headers["Aqe-Dlq-Seq"] == str(seq)
    assert dlq_headers["Aqe-Dlq-Msg-Id"] == "poison-1"
    assert dlq_headers["X-Small"] == "kept"
    assert "X-Junk" not in dlq_headers
    assert "Nats-Expected-Stream" not in dlq_headers


async def test_a_dlq_with_a_small_max_msg_size_gets_a_reference(nc: Client, tmp_path: Path) -> None:
    js = nc.jetstream()
    config = (await js.stream_info("AQE_DLQ")).config
    config.max_msg_size = 1024
    await js.update_stream(config)
    poison = b"\xff" * 10_000
    seq = await poison_between_two_events(nc, poison)
    stats, parked = await fold(nc, tmp_path)
    assert_folded_past(stats, seq)
    assert [p.copy for p in parked] == ["reference"]
    assert "10054" in parked[0].error or "size" in parked[0].error
    [(dlq_headers, data)] = await dlq_messages(nc)
    assert data == b""
    assert dlq_headers["Aqe-Dlq-Copy"] == "reference"
    assert dlq_headers["Aqe-Dlq-Stream"] == "AQE_TESTS"
    assert dlq_headers["Aqe-Dlq-Seq"] == str(seq)
    assert dlq_headers["Aqe-Dlq-Size"] == "10000"
    assert dlq_headers["Aqe-Dlq-Digest"] == "sha256:" + hashlib.sha256(poison).hexdigest()


@pytest.mark.parametrize("dlq", ["deleted", "takes other subjects"])
async def test_with_no_stream_for_dead_letters_the_reference_stays_in_the_snapshot(
    nc: Client, tmp_path: Path, dlq: str
) -> None:
    js = nc.jetstream()
    await js.delete_stream("AQE_DLQ")
    if dlq == "takes other subjects":
        await js.add_stream(StreamConfig(name="AQE_DLQ", subjects=["aqe.dlq.elsewhere.>"]))
    seq = await poison_between_two_events(nc, b"not json")
    stats, parked = await fold(nc, tmp_path)
    assert_folded_past(stats, seq)
    assert stats.unparked == 1
    assert [p.copy for p in parked] == ["none"]
    assert "no stream takes aqe.dlq.catalog.AQE_TESTS" in parked[0].error
    snap = SnapshotStore(CatalogProjection(), tmp_path / "catalog").load()
    assert snap.unparked_total == 1
    [kept] = snap.unparked
    assert (kept.stream, kept.seq, kept.subject) == ("AQE_TESTS", seq, POISON)
    assert "not JSON" in kept.reason
    # The next run resumes after the poison and keeps the reference.
    log = JetStreamEventLog(nc)
    await log.append(TestCaseExecuted(test_id="later", run_id="r", outcome="passed"))
    again, _ = await fold(nc, tmp_path)
    assert (again.applied, again.dead_letters, again.unparked) == (1, 0, 0)
    assert SnapshotStore(CatalogProjection(), tmp_path / "catalog").load().unparked_total == 1


PASSWORD = "pw-for-a-throwaway-server"  # noqa: S105 - a throwaway test server's
DLQ_DENIED = f"""
authorization {{
    users = [
        {{user: admin, password: "{PASSWORD}"}}
        # Folds projections, may not park dead letters.
        {{user: folder, password: "{PASSWORD}", permissions: {{
            publish: {{deny: ["aqe.dlq.>"]}}
        }}}}
    ]
}}
"""


@pytest.fixture
def dlq_denied_server(tmp_path: Path) -> Iterator[NatsServerProcess]:
    with server_with_config(tmp_path, DLQ_DENIED) as proc:
        yield proc


async def test_a_user_who_may_not_park_keeps_the_reference_in_the_snapshot(
    dlq_denied_server: NatsServerProcess, tmp_path: Path
) -> None:
    # Before, the DLQ publish was refused by the server ("Permissions Violation"), which
    # nats-py only hands to the error callback: the park timed out, was taken for an
    # outage and every fold stopped at the poison (exit 2). Now the refusal arrives as
    # PermissionDeniedError at once, and the reference is kept in the snapshot.
    admin = await nats.connect(dlq_denied_server.url, user="admin", password=PASSWORD)
    folder = await nats.connect(dlq_denied_server.url, user="folder", password=PASSWORD)
    try:
        await apply_streams(admin, load_stream_specs())
        seq = await poison_between_two_events(admin, b"\x00not an event")
        stats, parked = await fold(folder, tmp_path)
        assert_folded_past(stats, seq)
        assert stats.unparked == 1
        [letter] = parked
        assert letter.copy == "none"
        assert "permission denied" in letter.error
        assert "aqe.dlq.catalog.aqe_tests" in letter.error.lower()
        assert "timed out" not in letter.error
        snap = SnapshotStore(CatalogProjection(), tmp_path / "catalog").load()
        [kept] = snap.unparked
        assert (kept.stream, kept.seq, kept.subject) == ("AQE_TESTS", seq, POISON)
        # Nothing reached the dead-letter stream, and the next fold goes on past it.
        assert (await admin.jetstream().stream_info("AQE_DLQ")).state.messages == 0
        log = JetStreamEventLog(admin)
        await log.append(TestCaseExecuted(test_id="later", run_id="r", outcome="passed"))
        again, _ = await fold(folder, tmp_path)
        assert (again.applied, again.dead_letters) == (1, 0)
    finally:
        await folder.close()
        await admin.close()
