"""Proofs of 1,000 random events of a real stream verify offline; a modified event fails."""

from __future__ import annotations

import base64
import random

import msgspec
import nats
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aqe.audit.proof import Prover, check_proof, decode_proof, encode_proof
from aqe.audit.seal import seal_stream, trusted_keys
from aqe.coordination.voting import public_key_b64
from aqe.events import TestCaseExecuted
from aqe.log import NewEvent, load_stream_specs
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog

pytestmark = pytest.mark.nats

STREAM = "AQE_TESTS"
EVENTS = 5_000


async def test_a_thousand_random_proofs_verify_offline(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    await apply_streams(nc, load_stream_specs())
    log = JetStreamEventLog(nc)
    key = Ed25519PrivateKey.generate()
    trusted = trusted_keys([public_key_b64(key)])
    try:
        items = [
            NewEvent(
                event=TestCaseExecuted(
                    test_id=f"t{i % 300}",
                    run_id=f"r{i // 300}",
                    outcome="failed" if i % 7 == 0 else "passed",
                )
            )
            for i in range(EVENTS)
        ]
        await log.append_many(items)
        seals = await seal_stream(log, STREAM, key, max_leaves=2_048)
        assert [s.tree_size for s in seals] == [2_048, 4_096, 5_000]
        prover = await Prover.load(log, STREAM)
        picked = random.Random(17).sample(range(1, EVENTS + 1), 1_000)
        documents = [encode_proof(await prover.prove(log, seq)) for seq in picked]
    finally:
        await log.close()
    # Offline: only the JSON documents and the trusted key.
    for seq, doc in zip(picked, documents, strict=True):
        proof = decode_proof(doc)
        assert proof.leaf.seq == seq
        assert check_proof(proof, trusted) == []
    proof = decode_proof(documents[0])
    data = base64.b64decode(proof.leaf.data)
    flipped = (
        data.replace(b'"passed"', b'"failed"')
        if b'"passed"' in data
        else data.replace(b'"failed"', b'"passed"')
    )
    modified = msgspec.structs.replace(
        proof, leaf=msgspec.structs.replace(proof.leaf, data=base64.b64encode(flipped).decode())
    )
    problems = check_proof(modified, trusted)
    assert len(problems) == 1
    assert problems[0].startswith(f"seq {picked[0]}: the audit path does not lead")
