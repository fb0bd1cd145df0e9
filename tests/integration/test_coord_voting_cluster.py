"""Voting against real servers: a Byzantine vote on the 3-node cluster while the
``AQE_COORD`` stream leader is killed, and the ``aqe vote`` commands end to end.

The cluster test has 7 voters (f = 2) casting concurrently, each over its own
connection; two of them forge signatures and vote both ways. Mid-vote the stream's Raft
leader is SIGKILLed, so appends time out for a few seconds and are retried with the same
event id. Afterwards the verdict is read through a connection to each surviving node and,
once it is restarted, through the killed node too: all equal, down to ``decided_at_seq``,
and no vote is stored twice.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from click.testing import CliRunner

from aqe.app import AppContext
from aqe.cli._vote import vote
from aqe.config import Settings
from aqe.coordination.identity import sign_registration
from aqe.coordination.voting import (
    KeyPair,
    Verdict,
    cast_vote,
    generate_keypair,
    load_private_key,
    open_proposal,
    proposal_subjects,
    public_key_b64,
    sign_vote,
    tally,
)
from aqe.errors import LogUnavailableError
from aqe.events import AgentRegistered, Envelope, VoteCast, Voter
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.log.retry import while_unavailable
from aqe.server import LocalCluster

T = TypeVar("T")
STREAM = "AQE_COORD"


def registered(agent: str, key: Any) -> AgentRegistered:
    """``agent``'s signed registration, binding the public key of ``key`` (a private key
    or a :class:`KeyPair`)."""
    private = key.private_key if isinstance(key, KeyPair) else key
    event = AgentRegistered(
        agent_id=agent, role="qe", public_key=public_key_b64(private), nonce=f"{agent}-1"
    )
    return sign_registration(event, private)


async def connect(*urls: str) -> JetStreamEventLog:
    """A log over the project's connection path, to the given node(s) only."""
    settings = Settings.from_env(env={}, nats_url=",".join(urls))
    return await JetStreamEventLog.connect(settings)


async def retry(op: Callable[[], Awaitable[T]], deadline_s: float = 30.0) -> T:
    """What a Byzantine writer does too: resend the same message until it lands."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return await op()
        except LogUnavailableError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


@pytest.mark.cluster
async def test_vote_is_unique_and_identical_when_the_stream_leader_dies(
    nats_cluster: LocalCluster,
) -> None:
    n, f = 7, 2
    ids = [f"agent-{i}" for i in range(n)]
    keys: dict[str, KeyPair] = {a: generate_keypair() for a in ids}
    bad, honest = ids[:f], ids[f:]
    admin = await connect(*nats_cluster.urls)
    logs: list[JetStreamEventLog] = []
    try:
        await apply_streams(admin.connection, admin.specs)
        for agent in ids:
            await admin.append(registered(agent, keys[agent]))
        await open_proposal(
            admin,
            "release-42",
            question="ship release 42?",
            options=["ship", "block"],
            mode="byzantine",
            faulty=f,
            voters=[Voter(agent_id=a, public_key=keys[a].public_key) for a in ids],
            opened_by=ids[-1],
            private_key=keys[ids[-1]].private_key,
        )
        leader = await nats_cluster.stream_leader(STREAM)
        logs = [await connect(*nats_cluster.urls) for _ in ids]
        spans: list[tuple[float, float]] = []
        # The first honest vote lands before the kill; every other cast starts as the
        # kill begins (conditions, not a timetable: a loaded machine keeps the order).
        killing = asyncio.Event()

        async def honest_voter(i: int, agent: str) -> None:
            if i > f:
                await killing.wait()
            start = time.monotonic()
            await cast_vote(logs[i], "release-42", agent, "ship", keys[agent].private_key)
            spans.append((start, time.monotonic()))

        async def byzantine_voter(i: int, agent: str) -> None:
            log = logs[i]
            victim = honest[i]
            forged = VoteCast(
                proposal_id="release-42",
                voter=victim,
                choice="block",
                signature=sign_vote(keys[agent].private_key, "release-42", victim, "block"),
            )
            await retry(lambda: log.append(forged))
            await cast_vote(log, "release-42", agent, "block", keys[agent].private_key)
            await killing.wait()  # conflicting votes during the outage
            start = time.monotonic()
            await cast_vote(
                log, "release-42", agent, "ship", keys[agent].private_key, refuse_change=False
            )
            spans.append((start, time.monotonic()))

        async def killer() -> tuple[float, float]:
            async with asyncio.timeout(60):
                while not spans:  # one vote stored before the kill
                    await asyncio.sleep(0.05)
            killing.set()
            before = time.monotonic()
            await asyncio.to_thread(nats_cluster.kill, leader)
            return before, time.monotonic()

        casters = [byzantine_voter(i, a) for i, a in enumerate(bad)]
        casters += [honest_voter(i, a) for i, a in enumerate(honest, start=f)]
        (kill_start, kill_done), *_ = await asyncio.gather(killer(), *casters)
        # The kill landed mid-vote: some votes were stored before it, and casts begun
        # around it waited (retrying) for the new stream leader.
        assert any(end < kill_start for _, end in spans), spans
        waited = [(s, e) for s, e in spans if s < kill_done + 1.0 and e - s > 1.0]
        assert waited, (kill_start, kill_done, spans)
        assert await nats_cluster.stream_leader(STREAM) != leader

        verdicts: dict[str, Verdict] = {}
        for node in nats_cluster.running():
            reader = await connect(nats_cluster.url(node))
            try:
                # A replica may still be settling after the kill: start the read over.
                verdicts[node] = await while_unavailable(
                    lambda r=reader: tally(r, "release-42"), within_s=45
                )
            finally:
                await reader.close()
        await asyncio.to_thread(nats_cluster.restart, leader)
        reader = await connect(nats_cluster.url(leader))
        try:
            verdicts[leader] = await while_unavailable(
                lambda: tally(reader, "release-42"), within_s=45
            )

            async def read_stored() -> list[Envelope]:
                subjects = proposal_subjects("release-42")
                return [env async for env in reader.read(STREAM, subjects=subjects)]

            stored = await while_unavailable(read_stored, within_s=45)
        finally:
            await reader.close()

        first = verdicts[leader]
        assert len(verdicts) == 3
        assert all(v == first for v in verdicts.values()), verdicts
        assert (first.status, first.choice) == ("decided", "ship")
        assert first.decided_at_seq is not None
        assert first.counts == {"ship": n - f, "block": f}
        assert set(first.faulty) == set(bad)
        assert [r.reason for r in first.rejected].count("bad-signature") == f
        # Exactly once: the proposal, f forgeries, n first votes and f conflicting votes.
        assert len({env.event_id for env in stored}) == len(stored) == 1 + f + n + f
        votes = [env.decode() for env in stored[1:]]
        assert len({(v.voter, v.choice, v.signature) for v in votes}) == len(votes)  # type: ignore[attr-defined]
    finally:
        for log in [admin, *logs]:
            await log.close()


# -- the CLI ------------------------------------------------------------------------------------


@pytest.mark.nats
def test_vote_cli_keygen_propose_cast_tally(nats_url: str, tmp_path: Path) -> None:
    app = AppContext(str(tmp_path / "data"), nats_url)
    runner = CliRunner()

    def aqe(*args: str) -> Any:
        result = runner.invoke(vote, list(args), obj=app, catch_exceptions=True)
        return result

    keys_dir = tmp_path / "keys"
    pubs = {}
    for agent in ("a1", "a2", "a3", "a4"):
        done = aqe("keygen", agent, "--dir", str(keys_dir), "--json")
        assert done.exit_code == 0, done.output
        pubs[agent] = json.loads(done.output)["public_key"]
    assert (keys_dir / "a1.key").stat().st_mode & 0o777 == 0o600
    assert "already exists" in str(aqe("keygen", "a1", "--dir", str(keys_dir)).exception)

    # Every agent binds its key by a signed registration; a4's key is then taken from it.
    async def register() -> None:
        log = await connect(nats_url)
        try:
            await apply_streams(log.connection, log.specs)
            for agent in pubs:
                await log.append(registered(agent, load_private_key(keys_dir / f"{agent}.key")))
        finally:
            await log.close()

    asyncio.run(register())

    voters = ["--voter", f"a1={pubs['a1']}", "--voter", f"a2=@{keys_dir / 'a2.pub'}"]
    voters += ["--voter", f"a3={pubs['a3']}", "--voter", "a4"]
    propose = ["propose", "p-7", "--question", "Is test_x flaky?", "--option", "flaky"]
    propose += ["--option", "stable", "--mode", "byzantine", *voters]
    propose += ["--by", "a1", "--dir", str(keys_dir)]
    done = aqe(*propose, "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.output) == {
        "proposal_id": "p-7",
        "seq": 1,
        "duplicate": False,
        "voters": ["a1", "a2", "a3", "a4"],
    }
    assert "already open" in aqe(*propose).output

    bad = aqe("propose", "p-8", "-q", "?", "--option", "x", "--option", "y", "--by", "a1")
    assert bad.exit_code == 2
    assert "--voter AGENT=PUBKEY" in bad.output
    bad = aqe("propose", "p-8", "-q", "?", "--option", "x", "--option", "y", "--mode", "byzantine",
              "--faulty", "1", "--voter", f"a1={pubs['a1']}", "--by", "a1",
              "--dir", str(keys_dir))  # fmt: skip
    assert "voters: byzantine mode with faulty=1 needs n >= 4, got 1" in str(bad.exception)

    for agent in ("a1", "a2", "a4"):
        done = aqe("cast", "p-7", "--as", agent, "--choice", "flaky", "--dir", str(keys_dir))
        assert done.exit_code == 0, done.output
    assert "decided: flaky" in done.output
    refused = aqe("cast", "p-7", "--as", "a1", "--choice", "stable", "--dir", str(keys_dir))
    assert "already voted 'flaky'" in str(refused.exception)
    wrong_key = ["--key", str(keys_dir / "a1.key")]
    refused = aqe("cast", "p-7", "--as", "a3", "--choice", "stable", *wrong_key)
    assert "does not match its public key" in str(refused.exception)

    done = aqe("tally", "p-7", "--json")
    assert done.exit_code == 0, done.output
    verdict = json.loads(done.output)
    assert verdict["status"] == "decided"
    assert verdict["choice"] == "flaky"
    assert verdict["decided_at_seq"] == 4
    assert verdict["counts"] == {"flaky": 3, "stable": 0}
    assert verdict["threshold"] == 3
    early = json.loads(aqe("tally", "p-7", "--until-seq", "3", "--json").output)
    assert early["status"] == "open"
    table = aqe("tally", "p-7")
    assert "decided: flaky at seq 4" in table.output
    assert "voted: 3 of 4" in table.output
    waited = json.loads(aqe("tally", "p-7", "--wait", "5", "--json").output)
    assert waited == verdict
    missing = aqe("tally", "nope")
    assert "proposal 'nope' has not been opened" in str(missing.exception)
