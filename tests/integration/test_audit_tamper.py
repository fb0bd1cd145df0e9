"""Seals and verify against a real nats-server: every kind of tampering is named.

The stream under audit is ``AQE_TESTS`` created *without* s2 compression, so a test can
find one message's payload in the file store's ``.blk`` file and change bytes in place
while the server is stopped.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import nats
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aqe.audit.seal import AUDIT_STREAM, key_id, seal_stream, sign_seal, trusted_keys
from aqe.audit.verify import StreamVerdict, verify_stream
from aqe.coordination.voting import public_key_b64
from aqe.events import Headers, TestCaseExecuted
from aqe.events.audit import StreamSealed
from aqe.log import load_stream_specs
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.log.streams import StreamSpec
from aqe.server import NatsServerProcess

pytestmark = pytest.mark.nats

STREAM = "AQE_TESTS"
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
TRUSTED = trusted_keys([public_key_b64(KEY)])


def audit_specs(*, deny_seal_delete: bool = True) -> list[StreamSpec]:
    """The repo's streams; AQE_TESTS uncompressed (bytes findable in the file store)."""
    out = []
    for spec in load_stream_specs():
        if spec.name == STREAM:
            spec = msgspec.structs.replace(spec, compression="none")
        if spec.name == AUDIT_STREAM and not deny_seal_delete:
            spec = msgspec.structs.replace(spec, deny_delete=False, deny_purge=False, audit=False)
        out.append(spec)
    return out


async def open_log(url: str, specs: list[StreamSpec]) -> JetStreamEventLog:
    nc = await nats.connect(url)
    await apply_streams(nc, specs)
    return JetStreamEventLog(nc, specs)


@pytest.fixture
async def log(nats_url: str) -> AsyncIterator[JetStreamEventLog]:
    log = await open_log(nats_url, audit_specs())
    try:
        yield log
    finally:
        await log.close()


async def append_runs(log: JetStreamEventLog, first: int, count: int) -> None:
    for i in range(first, first + count):
        await log.append(
            TestCaseExecuted(
                test_id=f"t{i}", run_id="r1", outcome="passed", message=f"needle-{i:03d}"
            )
        )


async def sealed_log(log: JetStreamEventLog) -> None:
    """20 events sealed, 10 more sealed: two seals (sequences 1..20 and 21..30)."""
    await append_runs(log, 1, 20)
    assert len(await seal_stream(log, STREAM, KEY)) == 1
    await append_runs(log, 21, 10)
    assert len(await seal_stream(log, STREAM, KEY)) == 1


def findings(verdict: StreamVerdict) -> list[tuple[str, int | None]]:
    out = [(d.kind, d.seq) for check in verdict.seals for d in check.divergences]
    return out + [(d.kind, d.seq) for d in verdict.origin]


async def test_untouched_log_verifies(log: JetStreamEventLog) -> None:
    await sealed_log(log)
    await append_runs(log, 31, 3)
    verdict = await verify_stream(log, STREAM, TRUSTED)
    assert verdict.intact, findings(verdict)
    assert [(c.first_seq, c.last_seq, c.tree_size) for c in verdict.seals] == [
        (1, 20, 20),
        (21, 30, 30),
    ]
    assert verdict.unsealed == 3
    # Nothing new: no seal; a seal of the tail continues the chain.
    assert len(await seal_stream(log, STREAM, KEY, max_leaves=2)) == 2
    assert await seal_stream(log, STREAM, KEY) == []
    verdict = await verify_stream(log, STREAM, TRUSTED)
    assert verdict.intact
    assert (verdict.unsealed, len(verdict.seals)) == (0, 4)
    # --from starts at the seal before it, from its frontier.
    partial = await verify_stream(log, STREAM, TRUSTED, from_seq=25)
    assert partial.intact
    assert [c.last_seq for c in partial.seals] == [30, 32, 33]


async def test_an_untrusted_key_fails_every_seal(log: JetStreamEventLog) -> None:
    await sealed_log(log)
    other = trusted_keys([public_key_b64(Ed25519PrivateKey.generate())])
    verdict = await verify_stream(log, STREAM, other)
    assert findings(verdict) == [("bad-signature", None), ("bad-signature", None)]


async def test_deleted_message_is_named(log: JetStreamEventLog) -> None:
    await sealed_log(log)
    await log.connection.jetstream().delete_msg(STREAM, 7)
    verdict = await verify_stream(log, STREAM, TRUSTED)
    assert not verdict.intact
    assert findings(verdict) == [("deleted", 7), ("root-mismatch", None)]
    assert "first divergence at seq 7" in verdict.seals[1].divergences[0].detail


async def test_purged_range_is_named(log: JetStreamEventLog) -> None:
    await sealed_log(log)
    # Purge everything below sequence 18: 1..17 go.
    await log.connection.jetstream().purge_stream(STREAM, seq=18)
    verdict = await verify_stream(log, STREAM, TRUSTED)
    assert findings(verdict) == [("deleted", s) for s in range(1, 18)] + [("root-mismatch", None)]


async def test_forged_origin_is_named(log: JetStreamEventLog) -> None:
    await sealed_log(log)
    js = log.connection.jetstream()
    event = TestCaseExecuted(test_id="t-forged", run_id="r1", outcome="passed")
    forged = {
        Headers.MSG_ID: "east:AQE_TESTS:7",
        Headers.EVENT_TYPE: event.type_tag(),
        Headers.ORIGIN_CLUSTER: "east",
        Headers.ORIGIN_STREAM: STREAM,
        Headers.ORIGIN_SEQ: "7",
    }
    ack = await js.publish("aqe.tests.case.t-forged.executed", event.to_json(), headers=forged)
    mismatched = {**forged, Headers.MSG_ID: "made-up", Headers.ORIGIN_CLUSTER: "west"}
    ack2 = await js.publish("aqe.tests.case.t-forged.executed", event.to_json(), headers=mismatched)
    verdict = await verify_stream(log, STREAM, TRUSTED, trusted_origins={"west"})
    # The seals still hold; the claims are what is forged: "east" is not trusted, and the
    # "west" copy's id is not the id the bridge gives a copy of west/AQE_TESTS/7.
    assert all(c.intact for c in verdict.seals)
    assert findings(verdict) == [("forged-origin", ack.seq), ("forged-origin", ack2.seq)]
    assert "not a trusted origin" in verdict.origin[0].detail
    assert "not that copy's id" in verdict.origin[1].detail


async def test_replaced_seal_is_named(nats_url: str) -> None:
    log = await open_log(nats_url, audit_specs(deny_seal_delete=False))
    try:
        await sealed_log(log)
        js = log.connection.jetstream()
        seals = [m async for m in log.read(AUDIT_STREAM)]
        first = seals[0].decode()
        assert isinstance(first, StreamSealed)
        # The attacker removes the first seal and puts one of their own in its place,
        # claiming the same size over other contents.
        await js.delete_msg(AUDIT_STREAM, seals[0].seq)
        attacker = Ed25519PrivateKey.generate()
        fake = sign_seal(msgspec.structs.replace(first, root="00" * 32), attacker)
        # ...even naming the trusted key's id does not help: the signature fails.
        fake = msgspec.structs.replace(fake, signer=key_id(public_key_b64(KEY)))
        ack = await log.append(fake, event_id="forged-seal")
        verdict = await verify_stream(log, STREAM, TRUSTED)
        kinds = [(c.seal_seq, [d.kind for d in c.divergences]) for c in verdict.seals]
        assert kinds == [
            (seals[1].seq, ["broken-chain"]),
            (ack.seq, ["bad-signature", "broken-chain"]),
        ]
    finally:
        await log.close()


def _blk_with(store: Path, needle: bytes) -> Path:
    for blk in (store / "jetstream").rglob("*.blk"):
        if STREAM in blk.parts and needle in blk.read_bytes():
            return blk
    raise AssertionError(f"{needle!r} not found in any {STREAM} block file")


async def test_bytes_changed_in_the_file_store_are_named(
    nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    log = await open_log(nats_server.url, audit_specs())
    try:
        await sealed_log(log)
    finally:
        await log.close()
    nats_server.stop_sync()
    blk = _blk_with(nats_server.store_dir, b"needle-012")
    raw = blk.read_bytes()
    assert raw.count(b"needle-012") == 1
    blk.write_bytes(raw.replace(b"needle-012", b"needle-912"))
    restarted = NatsServerProcess.start_sync(
        nats_server.store_dir, log_file=tmp_path / "nats-restarted.log"
    )
    try:
        log = await open_log(restarted.url, audit_specs())
        try:
            verdict = await verify_stream(log, STREAM, TRUSTED)
            # nats-server 2.15 keeps counting the record whose checksum no longer
            # matches (30 messages) but never delivers it (a get answers "not found",
            # consumers skip it): to the log, and so to verify, it is deleted.
            assert findings(verdict) == [("deleted", 12), ("root-mismatch", None)]
            info = await log.connection.jetstream().stream_info(STREAM)
            assert info.state.messages == 30
        finally:
            await log.close()
    finally:
        restarted.stop_sync()


def test_key_id_is_the_sha256_prefix_of_the_raw_key() -> None:
    import hashlib

    raw = base64.b64decode(public_key_b64(KEY))
    assert key_id(public_key_b64(KEY)) == hashlib.sha256(raw).hexdigest()[:16]
