"""`explain` names the events behind a row or a decision, with proofs where sealed."""

from __future__ import annotations

import nats
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aqe.audit.explain import explain
from aqe.audit.proof import check_proof
from aqe.audit.seal import seal_stream, trusted_keys
from aqe.coordination.voting import public_key_b64, sign_vote
from aqe.errors import AuditError
from aqe.events import (
    ProposalOpened,
    TestCaseExecuted,
    TestRunFinished,
    TestRunStarted,
    VoteCast,
    Voter,
)
from aqe.log import load_stream_specs
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.projections import HistoryProjection

pytestmark = pytest.mark.nats


async def test_explain_a_test_row_and_a_vote(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    await apply_streams(nc, load_stream_specs())
    log = JetStreamEventLog(nc)
    key = Ed25519PrivateKey.generate()
    trusted = trusted_keys([public_key_b64(key)])
    voter = Ed25519PrivateKey.generate()
    try:
        await log.append(TestRunStarted(run_id="r1"))
        await log.append(TestCaseExecuted(test_id="pkg.test_x", run_id="r1", outcome="failed"))
        await log.append(TestCaseExecuted(test_id="pkg.test_y", run_id="r1", outcome="passed"))
        await log.append(TestRunFinished(run_id="r1", total=2, passed=1, failed=1))
        await log.append(
            ProposalOpened(
                proposal_id="ship-42",
                question="Ship?",
                options=("ship", "block"),
                mode="majority",
                voters=(Voter(agent_id="a1", public_key=public_key_b64(voter)),),
            )
        )
        await log.append(
            VoteCast(
                proposal_id="ship-42",
                voter="a1",
                choice="block",
                signature=sign_vote(voter, "ship-42", "a1", "block"),
            )
        )
        await seal_stream(log, "AQE_TESTS", key)
        # One more execution after the seal: listed, without a proof.
        await log.append(TestCaseExecuted(test_id="pkg.test_x", run_id="r2", outcome="passed"))

        row = await explain(log, "history", HistoryProjection.streams, log.specs, "pkg.test_x")
        assert [(e.seq, e.event_type) for e in row.events] == [
            (1, "tests.run.started.v1"),
            (2, "tests.case.executed.v1"),
            (4, "tests.run.finished.v1"),
            (5, "tests.case.executed.v1"),
        ]
        assert row.unsealed == 1
        for e in row.events[:3]:
            assert e.proof is not None
            assert check_proof(e.proof, trusted) == []

        vote = await explain(log, "AQE_COORD", ("AQE_COORD",), log.specs, "ship-42")
        assert [e.event_type for e in vote.events] == [
            "coord.proposal.opened.v1",
            "coord.proposal.voted.v1",
        ]
        assert vote.unsealed == 2  # AQE_COORD was not sealed
        with pytest.raises(AuditError, match="is about 'nobody'"):
            await explain(log, "history", ("AQE_TESTS",), log.specs, "nobody")
    finally:
        await log.close()
