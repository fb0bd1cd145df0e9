"""Seal and verify logic over the in-memory log: changed and reordered messages, leaves,
signatures. (Deletions, purges, forged origins, replaced seals and file-store damage
are tested against a real server in tests/integration/test_audit_tamper.py.)"""

from __future__ import annotations

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aqe.audit.leaf import envelope_leaf, leaf_bytes
from aqe.audit.proof import Prover, check_proof, decode_proof, encode_proof
from aqe.audit.seal import runs_of, seal_bytes, seal_problem, seal_stream, trusted_keys
from aqe.audit.verify import verify_stream
from aqe.coordination.voting import public_key_b64
from aqe.events import Envelope, TestCaseExecuted
from aqe.log import InMemoryEventLog

STREAM = "AQE_TESTS"
KEY = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
TRUSTED = trusted_keys([public_key_b64(KEY)])


async def sealed_memory_log(count: int = 12) -> InMemoryEventLog:
    log = InMemoryEventLog()
    for i in range(1, count + 1):
        await log.append(TestCaseExecuted(test_id=f"t{i}", run_id="r", outcome="passed"))
    await seal_stream(log, STREAM, KEY, max_leaves=5)
    return log


def stored(log: InMemoryEventLog) -> list[Envelope]:
    return log._streams[STREAM].messages  # the test tampers with the memory store itself


async def test_changed_and_reordered_messages_are_told_apart() -> None:
    log = await sealed_memory_log()
    messages = stored(log)
    # seq 3 and seq 4 swap their contents; seq 9's payload changes.
    a, b = messages[2], messages[3]
    messages[2] = msgspec.structs.replace(a, data=b.data, subject=b.subject, headers=b.headers)
    messages[3] = msgspec.structs.replace(b, data=a.data, subject=a.subject, headers=a.headers)
    messages[8] = msgspec.structs.replace(
        messages[8], data=messages[8].data.replace(b"passed", b"failed")
    )
    verdict = await verify_stream(log, STREAM, TRUSTED)
    found = [(c.last_seq, d.kind, d.seq) for c in verdict.seals for d in c.divergences]
    assert found == [
        (5, "reordered", 3),
        (5, "reordered", 4),
        (10, "changed", 9),
        (12, "root-mismatch", None),
    ]
    assert "holds the message sealed at seq 4" in verdict.seals[0].divergences[0].detail
    assert verdict.first_divergence is not None
    assert verdict.first_divergence.seq == 3


async def test_three_seals_of_at_most_five_and_an_intact_verdict() -> None:
    log = await sealed_memory_log()
    verdict = await verify_stream(log, STREAM, TRUSTED)
    assert verdict.intact
    assert [(c.first_seq, c.last_seq, c.tree_size) for c in verdict.seals] == [
        (1, 5, 5),
        (6, 10, 10),
        (11, 12, 12),
    ]


async def test_proofs_round_trip_and_a_changed_event_fails() -> None:
    log = await sealed_memory_log()
    prover = await Prover.load(log, STREAM)
    for seq in range(1, 13):
        proof = decode_proof(encode_proof(await prover.prove(log, seq)))
        assert check_proof(proof, TRUSTED) == []
    proof = await prover.prove(log, 6)
    changed = msgspec.structs.replace(
        proof, leaf=msgspec.structs.replace(proof.leaf, subject="aqe.tests.case.t0.executed")
    )
    assert check_proof(changed, TRUSTED) == [
        "seq 6: the audit path does not lead from this event to the seal's root "
        "(the event or the path was changed)"
    ]
    forged_seal = msgspec.structs.replace(
        proof, seal=msgspec.structs.replace(proof.seal, sealed_at="x")
    )
    assert check_proof(forged_seal, TRUSTED)[0].startswith("seal: signature does not verify")


def test_leaf_ignores_server_headers_but_not_the_message_id() -> None:
    env = Envelope(
        stream=STREAM,
        seq=4,
        subject="aqe.tests.case.t.executed",
        event_id="id1",
        event_type="tests.case.executed.v1",
        recorded_at_ns=1,
        data=b"{}",
        headers={"Nats-Msg-Id": "id1", "Aqe-Event-Type": "x"},
    )
    with_server = msgspec.structs.replace(
        env, headers={**env.headers, "Nats-Sequence": "4", "Nats-Time-Stamp": "t"}, recorded_at_ns=2
    )
    assert envelope_leaf(env) == envelope_leaf(with_server)
    assert envelope_leaf(env) != envelope_leaf(msgspec.structs.replace(env, headers={}))
    # Hand-computed: domain, stream, seq, subject, 2 headers sorted, data.
    expected = (
        b"aqe.audit.leaf.v1\x00"
        + b"\x00\x00\x00\x09AQE_TESTS"
        + b"\x00" * 7
        + b"\x04"
        + b"\x00\x00\x00\x19aqe.tests.case.t.executed"
        + b"\x00\x00\x00\x02"
        + b"\x00\x00\x00\x0eAqe-Event-Type\x00\x00\x00\x01x"
        + b"\x00\x00\x00\x0bNats-Msg-Id\x00\x00\x00\x03id1"
        + b"\x00\x00\x00\x02{}"
    )
    assert leaf_bytes(env.stream, env.seq, env.subject, env.headers, env.data) == expected


async def test_seal_signature_covers_every_field() -> None:
    log = await sealed_memory_log(3)
    [(_, seal)] = [(e, e.decode()) async for e in log.read("AQE_AUDIT")]
    assert seal_problem(seal, TRUSTED) is None  # type: ignore[arg-type]
    for field, value in [("digests", ""), ("runs", ((1, 2),)), ("frontier", ()), ("root", "00")]:
        changed = msgspec.structs.replace(seal, **{field: value})  # type: ignore[type-var]
        assert seal_bytes(changed) != seal_bytes(seal)  # type: ignore[arg-type]
        assert seal_problem(changed, TRUSTED) is not None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seqs", "runs"),
    [([], ()), ([3], ((3, 3),)), ([1, 2, 3, 7, 8, 10], ((1, 3), (7, 8), (10, 10)))],
)
def test_runs_of(seqs: list[int], runs: tuple[tuple[int, int], ...]) -> None:
    assert runs_of(seqs) == runs
