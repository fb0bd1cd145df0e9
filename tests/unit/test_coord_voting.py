"""Voting: signed votes, the pure tally fold, and the commands over an in-memory log.

Byzantine scenarios follow the issue: among ``n = 3f + 1`` voters, ``f`` forge
signatures, vote twice, vote both ways and vote on proposals that do not exist; the
verdict must be the honest one and the same from every reader and every prefix. With
``f + 1`` voters caught equivocating the tally must say ``unsafe`` instead of deciding.
"""

from __future__ import annotations

import base64
import json
import os
import random
import stat
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import msgspec
import pytest

from aqe.coordination.identity import KeyBook, sign_proposal, sign_registration
from aqe.coordination.voting import (
    FINAL_STATUSES,
    KeyPair,
    Tally,
    Verdict,
    await_verdict,
    cast_vote,
    decision_threshold,
    electorate_from_agents,
    generate_keypair,
    load_private_key,
    load_public_key,
    open_proposal,
    proposal_problems,
    public_key_b64,
    sign_vote,
    tally,
    verify_vote,
    vote_bytes,
    write_keypair,
)
from aqe.errors import CommandRejectedError, ConfigError, LogUnavailableError
from aqe.events import (
    AgentRegistered,
    AgentRetired,
    Envelope,
    Event,
    ProposalOpened,
    VoteCast,
    Voter,
)
from aqe.log import InMemoryEventLog
from aqe.log.port import AppendResult

# -- helpers ----------------------------------------------------------------------------------


def signed_registration(agent: str, pair: KeyPair, role: str = "voter") -> AgentRegistered:
    event = AgentRegistered(agent_id=agent, role=role, public_key=pair.public_key, nonce="n1")
    return sign_registration(event, pair.private_key)


class Electorate:
    """``n`` voters with keys and a ``chair`` that opens proposals; ``proposal`` builds a
    ProposalOpened over them signed by the chair. Their registrations make ``book``;
    the helpers below use the latest electorate's."""

    latest: ClassVar[Electorate]

    def __init__(self, n: int, prefix: str = "agent") -> None:
        self.ids = [f"{prefix}-{i}" for i in range(n)]
        self.keys: dict[str, KeyPair] = {a: generate_keypair() for a in self.ids}
        self.chair = generate_keypair()
        self.registrations = [
            signed_registration(a, pair) for a, pair in [*self.keys.items(), ("chair", self.chair)]
        ]
        self.book = KeyBook()
        for i, reg in enumerate(self.registrations):
            assert self.book.admit(reg, i + 1) is None
        Electorate.latest = self

    async def register(self, log: InMemoryEventLog) -> None:
        for reg in self.registrations:
            await log.append(reg)

    async def open(self, log: InMemoryEventLog, *args: object, **kw: object) -> AppendResult:
        return await open_proposal(
            log,
            *args,  # type: ignore[arg-type]
            opened_by="chair",
            private_key=self.chair.private_key,
            **kw,  # type: ignore[arg-type]
        )

    @property
    def voters(self) -> tuple[Voter, ...]:
        return tuple(Voter(agent_id=a, public_key=self.keys[a].public_key) for a in self.ids)

    def proposal(self, pid: str = "p1", mode: str = "majority", **kw: object) -> ProposalOpened:
        event = ProposalOpened(
            proposal_id=pid,
            question=kw.pop("question", f"decide {pid}?"),  # type: ignore[arg-type]
            options=kw.pop("options", ("ship", "block")),  # type: ignore[arg-type]
            mode=mode,  # type: ignore[arg-type]
            voters=kw.pop("voters", self.voters),  # type: ignore[arg-type]
            opened_by="chair",
            **kw,  # type: ignore[arg-type]
        )
        return sign_proposal(event, self.chair.private_key)

    def vote(self, voter: str, choice: str, pid: str = "p1", signer: str | None = None) -> VoteCast:
        key = self.keys[signer or voter].private_key
        return VoteCast(
            proposal_id=pid,
            voter=voter,
            choice=choice,
            signature=sign_vote(key, pid, voter, choice),
        )


class Resent:
    """The same event sent again under another message id (outside the dedup window)."""

    def __init__(self, event: Event) -> None:
        self.event = event


async def registered_log() -> InMemoryEventLog:
    """A log holding the latest electorate's registrations (in ``AQE_AGENTS``)."""
    log = InMemoryEventLog()
    await Electorate.latest.register(log)
    return log


def tally_of(envs: Sequence[Envelope]) -> Tally:
    return Tally.from_envelopes(envs, Electorate.latest.book)


async def store(events: Sequence[Event | Resent]) -> tuple[InMemoryEventLog, list[Envelope]]:
    log = await registered_log()
    for i, item in enumerate(events):
        if isinstance(item, Resent):
            await log.append(item.event, event_id=f"resent-{i}")
        else:
            await log.append(item)
    return log, [env async for env in log.read("AQE_COORD")]


def verdict_of(envs: Sequence[Envelope], pid: str = "p1") -> Verdict:
    return tally_of(envs).verdict(pid)


def seq_of(envs: Sequence[Envelope], event: Event) -> int:
    return next(e.seq for e in envs if e.event_id == event.default_id())


def assert_monotone(envs: Sequence[Envelope], pid: str = "p1") -> list[Verdict]:
    """Verdicts of every prefix: once decided, the choice and deciding seq never change."""
    verdicts = [verdict_of(envs[:k], pid) for k in range(len(envs) + 1)]
    decided = None
    for v in verdicts:
        if decided is not None:
            assert v.status in ("decided", "unsafe")
            assert (v.choice, v.decided_at_seq) == decided
        elif v.status == "decided":
            decided = (v.choice, v.decided_at_seq)
    return verdicts


def byzantine_attack(e: Electorate, bad: Sequence[str], pid: str = "p1") -> list[Event | Resent]:
    """What ``bad`` voters do: forge, vote for nothing, invalid choice, vote twice."""
    outsider = generate_keypair()
    events: list[Event | Resent] = []
    for i, b in enumerate(bad):
        honest = e.ids[-1 - i]
        events += [
            # A forged vote in an honest voter's name, signed with the attacker's key.
            e.vote(honest, "block", pid, signer=b),
            # A vote with a syntactically broken signature.
            VoteCast(proposal_id=pid, voter=honest, choice="block", signature="!!not-base64"),
            # A vote on a proposal that was never opened.
            e.vote(b, "block", pid=f"ghost-{b}"),
            # A signed vote for something that is not an option.
            e.vote(b, "maybe", pid),
            # An agent outside the electorate.
            VoteCast(
                proposal_id=pid,
                voter=f"outsider-{i}",
                choice="block",
                signature=sign_vote(outsider.private_key, pid, f"outsider-{i}", "block"),
            ),
            # Its own vote, then the same vote again under another message id.
            e.vote(b, "block", pid),
            Resent(e.vote(b, "block", pid)),
        ]
    return events


def conflicting(
    e: Electorate, bad: Sequence[str], choice: str = "ship", pid: str = "p1"
) -> list[Event]:
    return [e.vote(b, choice, pid) for b in bad]


# -- signatures and keys ----------------------------------------------------------------------


def test_vote_bytes_are_domain_separated_and_injective() -> None:
    data = vote_bytes("p", "ab", "c")
    assert data.startswith(b"aqe.coord.vote.v1\x00")
    assert data != vote_bytes("p", "a", "bc")
    assert data != vote_bytes("pa", "b", "c")
    assert data.endswith(b"\x00\x00\x00\x02ab\x00\x00\x00\x01c")
    assert vote_bytes("é", "v", "x") == b"aqe.coord.vote.v1\x00\x00\x00\x00\x02\xc3\xa9" + (
        b"\x00\x00\x00\x01v\x00\x00\x00\x01x"
    )


def test_sign_and_verify() -> None:
    key = generate_keypair()
    public = load_public_key(key.public_key)
    sig = sign_vote(key.private_key, "p", "v", "ship")
    assert sign_vote(key.private_key, "p", "v", "ship") == sig  # deterministic
    good = VoteCast(proposal_id="p", voter="v", choice="ship", signature=sig)
    assert verify_vote(public, good)
    for bad in (
        VoteCast(proposal_id="p", voter="v", choice="block", signature=sig),
        VoteCast(proposal_id="p2", voter="v", choice="ship", signature=sig),
        VoteCast(proposal_id="p", voter="w", choice="ship", signature=sig),
        VoteCast(proposal_id="p", voter="v", choice="ship", signature="AAAA"),
        VoteCast(proposal_id="p", voter="v", choice="ship", signature="not base64!"),
    ):
        assert not verify_vote(public, bad)
    assert not verify_vote(load_public_key(generate_keypair().public_key), good)


def test_public_key_parsing_names_the_field() -> None:
    with pytest.raises(ConfigError, match="voters: a1: not base64"):
        load_public_key("%%%", field="voters: a1")
    with pytest.raises(ConfigError, match="32 bytes, got 3"):
        load_public_key(base64.b64encode(b"abc").decode())


def test_key_files_round_trip_with_private_mode(tmp_path: Path) -> None:
    files = write_keypair(tmp_path / "keys", "agent/1 x")
    private = Path(files.private_path)
    assert private.name == "agent~2F1~20x.key"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert Path(files.public_path).read_text().strip() == files.public_key
    assert public_key_b64(load_private_key(private)) == files.public_key
    with pytest.raises(ConfigError, match="already exists for agent 'agent/1 x'"):
        write_keypair(tmp_path / "keys", "agent/1 x")
    again = write_keypair(tmp_path / "keys", "agent/1 x", overwrite=True)
    assert again.public_key != files.public_key


def test_raw_seed_key_files_and_bad_files(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    pair = generate_keypair()
    seed = pair.private_key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    raw = tmp_path / "raw.key"
    raw.write_text(base64.b64encode(seed).decode())
    raw.chmod(0o600)
    assert public_key_b64(load_private_key(raw)) == pair.public_key
    raw.chmod(0o644)
    with pytest.raises(ConfigError, match=r"accessible by others \(mode 644\).*chmod 600"):
        load_private_key(raw)
    junk = tmp_path / "junk.key"
    junk.write_text("hello there")
    junk.chmod(0o600)
    with pytest.raises(ConfigError, match=r"junk\.key: neither PEM nor base64"):
        load_private_key(junk)
    with pytest.raises(ConfigError, match=r"missing\.key"):
        load_private_key(tmp_path / "missing.key")


# -- proposal validity --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "f", "threshold"), [(4, 1, 3), (7, 2, 5), (10, 3, 7), (7, 1, 4), (1, 0, 1), (5, 1, 3)]
)
def test_byzantine_threshold(n: int, f: int, threshold: int) -> None:
    proposal = Electorate(n).proposal(mode="byzantine", faulty=f)
    assert not proposal_problems(proposal)
    assert decision_threshold(proposal) == threshold
    # Two options can never both reach it, and it leaves f+1 honest votes behind a decision.
    assert 2 * threshold > n
    assert threshold - f >= f + 1
    # Liveness: the honest voters alone can reach it.
    assert n - f >= threshold


def test_invalid_proposals_name_the_field() -> None:
    e = Electorate(3)
    assert "voters: byzantine mode with faulty=1 needs n >= 4, got 3" in proposal_problems(
        e.proposal(mode="byzantine", faulty=1)
    )
    assert proposal_problems(e.proposal(mode="quorum")) == [
        "quorum: must be between 1 and the 3 voters, got None"
    ]
    assert proposal_problems(e.proposal(mode="majority", quorum=2, faulty=0)) == [
        "quorum: only mode quorum takes one (mode is majority)",
        "faulty: only mode byzantine takes one (mode is majority)",
    ]
    twice = (*e.voters, e.voters[0])
    problems = proposal_problems(e.proposal(voters=twice, options=("a", "a")))
    assert "options: need at least 2, got 2" not in problems
    assert "options: listed twice: a" in problems
    assert "voters: listed twice: agent-0" in problems
    assert any("share a public key" in p for p in problems)
    bad_key = (Voter(agent_id="x", public_key="%%%"), *e.voters)
    assert any(
        p.startswith("voters: x: not base64") for p in proposal_problems(e.proposal(voters=bad_key))
    )


async def test_an_invalid_proposal_counts_no_votes() -> None:
    e = Electorate(3)
    _, envs = await store([e.proposal(mode="byzantine", faulty=1), e.vote("agent-0", "ship")])
    v = verdict_of(envs)
    assert v.status == "invalid"
    assert "n >= 4" in v.reason
    assert [r.reason for r in v.rejected] == ["invalid-proposal"]
    assert v.voters_voted == ()


# -- majority and quorum ------------------------------------------------------------------------


async def test_majority_decides_at_the_first_vote_over_half() -> None:
    e = Electorate(5)
    votes = [
        e.vote(a, c) for a, c in zip(e.ids, ["ship", "block", "ship", "ship", "block"], strict=True)
    ]
    _, envs = await store([e.proposal(), *votes])
    v = verdict_of(envs)
    assert v.status == "decided"
    assert v.choice == "ship"
    assert v.decided_at_seq == seq_of(envs, votes[3])
    assert v.counts == {"ship": 3, "block": 2}
    assert v.threshold == 3
    assert v.voters_voted == tuple(e.ids)
    verdicts = assert_monotone(envs)
    assert [x.status for x in verdicts] == ["unknown", *["open"] * 4, "decided", "decided"]


async def test_majority_no_decision_once_no_option_can_win() -> None:
    e = Electorate(5)
    choices = ["a", "b", "a", "b", "c"]
    votes = [e.vote(x, c) for x, c in zip(e.ids, choices, strict=True)]
    _, envs = await store([e.proposal(options=("a", "b", "c")), *votes])
    verdicts = assert_monotone(envs)
    assert verdicts[-2].status == "open"  # a or b could still reach 3
    assert verdicts[-1].status == "no-decision"
    assert verdicts[-1].choice is None


async def test_quorum_waits_for_quorum_then_a_unique_leader() -> None:
    e = Electorate(5)
    votes = [
        e.vote(x, c) for x, c in zip(e.ids, ["ship", "block", "block", "ship", "ship"], strict=True)
    ]
    _, envs = await store([e.proposal(mode="quorum", quorum=2), *votes])
    v = verdict_of(envs)
    # After 2 votes it is 1:1 (no unique leader); the third breaks the tie.
    assert (v.status, v.choice, v.decided_at_seq) == ("decided", "block", seq_of(envs, votes[2]))
    assert v.counts == {"ship": 3, "block": 2}  # later votes count, the decision stands
    assert_monotone(envs)


async def test_quorum_all_voted_and_tied_is_no_decision() -> None:
    e = Electorate(4)
    votes = [e.vote(x, c) for x, c in zip(e.ids, ["ship", "block", "block", "ship"], strict=True)]
    _, envs = await store([e.proposal(mode="quorum", quorum=4), *votes])
    assert verdict_of(envs).status == "no-decision"
    assert verdict_of(envs[:-1]).status == "open"


async def test_first_vote_counts_and_equivocation_is_recorded_in_every_mode() -> None:
    e = Electorate(3)
    first, dup, flip = (
        e.vote("agent-0", "ship"),
        e.vote("agent-0", "ship"),
        e.vote("agent-0", "block"),
    )
    log, _ = await store([e.proposal(), first])
    await log.append(dup, event_id="resent-later")  # outside the dedup window: stored again
    await log.append(flip)
    envs = [env async for env in log.read("AQE_COORD")]
    v = verdict_of(envs)
    assert v.counts == {"ship": 1, "block": 0}
    assert [(r.reason, r.seq) for r in v.rejected] == [("duplicate", 3), ("equivocation", 4)]
    assert v.faulty == ("agent-0",)
    assert v.status == "open"  # majority mode assumes no Byzantine voters: no unsafe state


async def test_forged_and_invalid_votes_do_not_use_up_the_vote() -> None:
    e = Electorate(3)
    events: list[Event] = [
        e.proposal(),
        e.vote("agent-0", "block", signer="agent-1"),
        e.vote("agent-0", "maybe"),
        e.vote("agent-0", "ship"),
    ]
    _, envs = await store(events)
    v = verdict_of(envs)
    assert [r.reason for r in v.rejected] == ["bad-signature", "invalid-choice"]
    assert v.counts == {"ship": 1, "block": 0}
    assert v.faulty == ()


async def test_votes_before_the_proposal_and_second_openings_do_not_count() -> None:
    e = Electorate(3)
    early = e.vote("agent-0", "ship")
    other = e.proposal(question="a different question")
    log = await registered_log()
    await log.append(early)
    await log.append(e.proposal())
    await log.append(other)
    await log.append(e.vote("agent-1", "ship"))
    envs = [env async for env in log.read("AQE_COORD")]
    assert verdict_of(envs[:1]).status == "unknown"
    v = verdict_of(envs)
    assert [r.reason for r in v.rejected] == ["unknown-proposal", "duplicate-proposal"]
    assert v.question == "decide p1?"
    assert v.voters_voted == ("agent-1",)


async def test_undecodable_messages_are_rejected_not_fatal() -> None:
    e = Electorate(3)
    log = await registered_log()
    await log.append(e.proposal())
    await log.append_raw("aqe.coord.proposal.p1.voted", b"{not json")
    await log.append(e.vote("agent-0", "ship"))
    await log.append(e.vote("agent-1", "ship"))
    envs = [env async for env in log.read("AQE_COORD")]
    v = verdict_of(envs)
    assert v.status == "decided"
    assert [(r.reason, r.seq) for r in v.rejected] == [("undecodable", 2)]


async def test_a_vote_published_on_another_proposals_subject_counts_nowhere() -> None:
    e = Electorate(3)
    log = await registered_log()
    await log.append(e.proposal("p1"))
    await log.append(e.proposal("p2"))
    # A raw publisher puts p1's vote on p2's subject: a whole-stream reader and a
    # reader of p1's subjects must still agree, so it counts for neither.
    await log.append_raw("aqe.coord.proposal.p2.voted", e.vote("agent-0", "ship", "p1").to_json())
    envs = [env async for env in log.read("AQE_COORD")]
    whole = tally_of(envs)
    assert whole.verdict("p1") == await tally(log, "p1")
    assert whole.verdict("p1").voters_voted == ()
    assert [r.reason for r in whole.verdict("p2").rejected] == ["wrong-subject"]
    assert whole.verdict("p2") == await tally(log, "p2")


# -- byzantine -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "f"), [(4, 1), (7, 2), (10, 3)])
async def test_f_byzantine_voters_cannot_change_the_verdict(n: int, f: int) -> None:
    e = Electorate(n)
    bad, honest = e.ids[:f], e.ids[f:]
    honest_votes = [e.vote(h, "ship") for h in honest]
    # Attack first, honest votes interleaved, equivocations at the end.
    events: list[Event | Resent] = [e.proposal(mode="byzantine", faulty=f)]
    events += byzantine_attack(e, bad)
    events += honest_votes[:1] + conflicting(e, bad) + honest_votes[1:]
    log, envs = await store(events)
    v = verdict_of(envs)
    assert v.status == "decided"
    assert v.choice == "ship"
    assert v.threshold == n - f  # n = 3f+1: every honest vote is needed
    assert v.decided_at_seq == seq_of(envs, honest_votes[-1])
    assert v.counts == {"ship": n - f, "block": f}
    assert v.faulty == tuple(bad)
    reasons = {r.reason for r in v.rejected}
    assert reasons == {
        "bad-signature",
        "invalid-choice",
        "not-in-electorate",
        "duplicate",
        "equivocation",
    }
    # Votes for proposals nobody opened are rejected by their own tallies.
    ghosts = tally_of(envs)
    for b in bad:
        ghost = ghosts.verdict(f"ghost-{b}")
        assert ghost.status == "unknown"
        assert [r.reason for r in ghost.rejected] == ["unknown-proposal"]
    # Every reader, however it reads, gets the same verdict.
    assert await tally(log, "p1") == v
    assert tally_of(envs).verdict("p1") == v
    assert_monotone(envs)
    for seq in range(1, envs[-1].seq + 1):
        prefix = [env for env in envs if env.seq <= seq]
        assert await tally(log, "p1", until_seq=seq) == verdict_of(prefix)


@pytest.mark.parametrize(("n", "f"), [(4, 1), (7, 2), (10, 3)])
async def test_honest_vote_order_does_not_change_the_choice(n: int, f: int) -> None:
    rng = random.Random(n * 1000 + f)
    e = Electorate(n)
    bad, honest = e.ids[:f], e.ids[f:]
    attack = byzantine_attack(e, bad) + conflicting(e, bad)
    for _ in range(8):
        honest_votes = [e.vote(h, "ship") for h in honest]
        rng.shuffle(honest_votes)
        mixed = list(attack)
        for vote in honest_votes:  # honest votes at random places among the attack
            mixed.insert(rng.randrange(len(mixed) + 1), vote)
        _, envs = await store([e.proposal(mode="byzantine", faulty=f), *mixed])
        v = verdict_of(envs)
        # The equivocations may come before the bad voters' first votes in this order,
        # so which of their votes counts varies; the honest choice does not.
        assert (v.status, v.choice) == ("decided", "ship")
        assert set(v.faulty) == set(bad)
        assert_monotone(envs)


@pytest.mark.parametrize(("n", "f"), [(4, 1), (7, 2), (10, 3)])
async def test_more_than_f_equivocators_before_a_decision_is_unsafe(n: int, f: int) -> None:
    e = Electorate(n)
    bad = e.ids[: f + 1]
    events: list[Event] = [e.proposal(mode="byzantine", faulty=f)]
    events += [e.vote(b, "ship") for b in bad] + conflicting(e, bad, "block")
    events += [e.vote(h, "ship") for h in e.ids[f + 1 :]]
    _, envs = await store(events)
    v = verdict_of(envs)
    assert v.status == "unsafe"
    assert v.choice is None
    assert v.decided_at_seq is None
    assert v.faulty == tuple(bad)
    assert v.unsafe_at_seq == seq_of(envs, events[2 * (f + 1)])
    assert "more than the" in v.reason
    assert {x.status for x in assert_monotone(envs)} <= {"unknown", "open", "unsafe"}


async def test_a_decision_later_shown_to_rest_on_too_many_faults_turns_unsafe() -> None:
    e = Electorate(4)
    a, b, c, d = e.ids
    events: list[Event] = [
        e.proposal(mode="byzantine", faulty=1),
        e.vote(a, "ship"),
        e.vote(b, "ship"),
        e.vote(c, "ship"),  # decides: 3 = 2f+1
        e.vote(d, "block"),
        e.vote(a, "block"),  # one equivocator: tolerated
        e.vote(b, "block"),  # two: the decision may have been carried by faulty votes
    ]
    _, envs = await store(events)
    verdicts = assert_monotone(envs)
    assert [x.status for x in verdicts] == [
        "unknown",
        "open",
        "open",
        "open",
        "decided",
        "decided",
        "decided",
        "unsafe",
    ]
    final = verdicts[-1]
    assert (final.choice, final.decided_at_seq, final.unsafe_at_seq) == ("ship", 4, 7)
    assert final.faulty == (a, b)


async def test_no_decision_when_the_honest_split() -> None:
    e = Electorate(4)
    events: list[Event] = [e.proposal(mode="byzantine", faulty=1)]
    events += [e.vote(x, c) for x, c in zip(e.ids, ["ship", "block", "ship", "block"], strict=True)]
    _, envs = await store(events)
    assert verdict_of(envs[:-1]).status == "open"
    assert verdict_of(envs).status == "no-decision"


# -- commands over a log ---------------------------------------------------------------------------


async def test_open_cast_and_tally() -> None:
    log = InMemoryEventLog()
    e = Electorate(4)
    await e.register(log)
    opened = await e.open(
        log, "p1", question="ship?", options=["ship", "block"], mode="byzantine", voters=e.voters
    )
    assert opened.seq == 1
    stored = (await log.get("AQE_COORD", 1)).decode()
    assert isinstance(stored, ProposalOpened)
    assert stored.faulty == 1  # recorded explicitly
    again = await e.open(
        log, "p1", question="ship?", options=["ship", "block"], mode="byzantine", voters=e.voters
    )
    assert (again.duplicate, again.seq) == (True, 1)
    with pytest.raises(CommandRejectedError, match="proposal 'p1' is already open at seq 1"):
        await e.open(
            log,
            "p1",
            question="other",
            options=["ship", "block"],
            mode="byzantine",
            voters=e.voters,
        )
    for agent in e.ids[:3]:
        await cast_vote(log, "p1", agent, "ship", e.keys[agent].private_key)
    repeat = await cast_vote(log, "p1", "agent-0", "ship", e.keys["agent-0"].private_key)
    assert (repeat.duplicate, repeat.seq) == (True, 2)
    assert await log.last_seq("AQE_COORD") == 4
    v = await tally(log, "p1")
    assert (v.status, v.choice, v.decided_at_seq) == ("decided", "ship", 4)


async def test_cast_vote_errors_name_the_proposal_voter_and_field() -> None:
    log = InMemoryEventLog()
    e = Electorate(3)
    await e.register(log)
    key = e.keys["agent-0"].private_key
    with pytest.raises(CommandRejectedError, match="proposal 'nope' has not been opened"):
        await cast_vote(log, "nope", "agent-0", "ship", key)
    await e.open(
        log, "p1", question="q", options=["ship", "block"], mode="majority", voters=e.voters
    )
    with pytest.raises(CommandRejectedError, match="'mallory' is not in the electorate"):
        await cast_vote(log, "p1", "mallory", "ship", key)
    with pytest.raises(CommandRejectedError, match="choice 'maybe' is not an option"):
        await cast_vote(log, "p1", "agent-0", "maybe", key)
    with pytest.raises(CommandRejectedError, match="key given for voter 'agent-1' does not match"):
        await cast_vote(log, "p1", "agent-1", "ship", key)
    await cast_vote(log, "p1", "agent-0", "ship", key)
    with pytest.raises(CommandRejectedError, match=r"already voted 'ship'.*equivocation"):
        await cast_vote(log, "p1", "agent-0", "block", key)
    # Without the check the conflicting vote lands and proves the voter faulty.
    await cast_vote(log, "p1", "agent-0", "block", key, refuse_change=False)
    assert (await tally(log, "p1")).faulty == ("agent-0",)


async def test_open_proposal_rejects_invalid_proposals_before_appending() -> None:
    log = InMemoryEventLog()
    e = Electorate(3)
    await e.register(log)
    with pytest.raises(
        CommandRejectedError, match=r"proposal 'p1': voters: byzantine .* n >= 4, got 3"
    ):
        await e.open(
            log, "p1", question="q", options=["a", "b"], mode="byzantine", voters=e.voters, faulty=1
        )
    with pytest.raises(CommandRejectedError, match="quorum: must be between 1 and the 3 voters"):
        await e.open(
            log, "p1", question="q", options=["a", "b"], mode="quorum", voters=e.voters, quorum=5
        )
    assert await log.last_seq("AQE_COORD") == 0


class FlakyLog(InMemoryEventLog):
    """Stores the first append but answers as if it timed out, then fails once more."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 0
        self.ids: list[str | None] = []

    async def append(self, event: Event, **kw: object) -> AppendResult:  # type: ignore[override]
        self.ids.append(kw.get("event_id"))  # type: ignore[arg-type]
        if self.failures < 2 and isinstance(event, VoteCast | ProposalOpened):
            self.failures += 1
            if self.failures == 1:
                await super().append(event, **kw)  # type: ignore[arg-type]
                raise LogUnavailableError("timed out waiting for the server")
            # What the JetStream adapter raises for 503 during a leader election.
            raise LogUnavailableError("JetStream temporarily unavailable")
        return await super().append(event, **kw)  # type: ignore[arg-type]


async def test_unavailable_log_is_retried_with_the_same_event_id() -> None:
    e = Electorate(3)
    log = FlakyLog()
    await e.register(log)
    log.ids = []
    opened = await e.open(
        log, "p1", question="q", options=["ship", "block"], mode="majority", voters=e.voters
    )
    assert opened.duplicate  # the first attempt had landed; the condition saw it
    assert len(set(log.ids)) == 1
    log.failures, log.ids = 0, []
    result = await cast_vote(log, "p1", "agent-0", "ship", e.keys["agent-0"].private_key)
    assert result.duplicate
    assert len(set(log.ids)) == 1
    assert await log.last_seq("AQE_COORD") == 2


async def test_await_verdict_follows_votes_until_decided() -> None:
    import asyncio

    log = InMemoryEventLog()
    e = Electorate(4)
    await e.register(log)
    await e.open(
        log, "p1", question="q", options=["ship", "block"], mode="byzantine", voters=e.voters
    )
    waiter = asyncio.create_task(await_verdict(log, "p1", timeout_s=10))
    await asyncio.sleep(0)
    for agent in e.ids[:3]:
        await cast_vote(log, "p1", agent, "ship", e.keys[agent].private_key, refuse_change=False)
    v = await waiter
    assert (v.status, v.choice) == ("decided", "ship")
    assert v.status in FINAL_STATUSES
    open_one = await await_verdict(log, "p2", timeout_s=0.05)
    assert open_one.status == "unknown"


async def test_electorate_from_registered_agents() -> None:
    log = InMemoryEventLog()
    pairs = {a: generate_keypair() for a in ("a1", "a2", "a3", "gone", "mallory")}
    keys = {a: p.public_key for a, p in pairs.items()}
    await log.append(signed_registration("a2", pairs["a2"]))
    await log.append(signed_registration("a1", pairs["a1"]))
    await log.append(signed_registration("a3", pairs["a3"], role="runner"))
    await log.append(AgentRegistered(agent_id="nokey", role="voter"))
    await log.append(signed_registration("gone", pairs["gone"]))
    await log.append(AgentRetired(agent_id="gone"))
    # A forged re-registration of a1 with mallory's key (self-signed) is refused:
    # a1's electorate key stays a1's own.
    forged = AgentRegistered(agent_id="a1", role="voter", public_key=keys["mallory"], nonce="x")
    await log.append(sign_registration(forged, pairs["mallory"].private_key))
    everyone = await electorate_from_agents(log)
    assert [v.agent_id for v in everyone] == ["a2", "a1", "a3"]
    voters = await electorate_from_agents(log, role="voter")
    assert [(v.agent_id, v.public_key) for v in voters] == [("a2", keys["a2"]), ("a1", keys["a1"])]
    assert [v.agent_id for v in await electorate_from_agents(log, ["a3", "a1"])] == ["a3", "a1"]
    with pytest.raises(CommandRejectedError, match="'nokey' registered without a public key"):
        await electorate_from_agents(log, ["nokey"])
    with pytest.raises(CommandRejectedError, match="'gone' is retired"):
        await electorate_from_agents(log, ["gone"])
    with pytest.raises(CommandRejectedError, match="'who' has never registered"):
        await electorate_from_agents(log, ["who"])


# -- authenticity: forged proposals ------------------------------------------------------------


async def test_forged_proposals_are_refused_and_do_not_use_up_the_id() -> None:
    e = Electorate(4)
    mallory = generate_keypair()
    fake_voters = tuple(Voter(agent_id=a, public_key=generate_keypair().public_key) for a in e.ids)
    unsigned = ProposalOpened(
        proposal_id="p1",
        question="ship?",
        options=("ship", "block"),
        mode="majority",
        voters=e.voters,
        opened_by="chair",
    )
    # Signed, but by a key that is not the chair's bound key.
    impostor = sign_proposal(msgspec.structs.replace(unsigned, question="x"), mallory.private_key)
    # Signed by the real chair key, then the electorate swapped for keys nobody bound.
    swapped = msgspec.structs.replace(e.proposal(), voters=fake_voters)
    # The chair's own proposal naming keys not bound to the voters it lists.
    bad_electorate = e.proposal(voters=fake_voters)
    honest = e.proposal()
    log, envs = await store(
        [unsigned, impostor, swapped, bad_electorate, honest, e.vote("agent-0", "ship")]
    )
    v = verdict_of(envs)
    assert [(r.reason, r.seq) for r in v.rejected] == [("forged-proposal", s) for s in (1, 2, 3, 4)]
    details = [r.detail for r in v.rejected]
    assert details[0].startswith("unsigned")
    assert "not a key bound to 'chair'" in details[1]
    assert "does not verify" in details[2]
    assert "voter 'agent-0': its key is not one bound to it" in details[3]
    assert (v.status, v.opened_at_seq, v.voters_voted) == ("open", 5, ("agent-0",))
    assert await tally(log, "p1") == v


async def test_a_forged_proposal_alone_counts_no_votes_and_open_proposal_goes_after_it() -> None:
    e = Electorate(3)
    mallory = generate_keypair()
    log = await registered_log()
    # mallory registers itself properly, then opens p1 naming itself as proposer but
    # the voters' ids with keys it holds, and votes as them.
    await log.append(signed_registration("mallory", mallory))
    puppets = {a: generate_keypair() for a in e.ids}
    forged = sign_proposal(
        ProposalOpened(
            proposal_id="p1",
            question="ship?",
            options=("ship", "block"),
            mode="majority",
            voters=tuple(Voter(agent_id=a, public_key=k.public_key) for a, k in puppets.items()),
            opened_by="mallory",
        ),
        mallory.private_key,
    )
    await log.append(forged)
    for a, k in puppets.items():
        await log.append(
            VoteCast(
                proposal_id="p1",
                voter=a,
                choice="block",
                signature=sign_vote(k.private_key, "p1", a, "block"),
            )
        )
    v = await tally(log, "p1")
    assert v.status == "unknown"
    assert [r.reason for r in v.rejected] == ["forged-proposal"] + ["unknown-proposal"] * 3
    # open_proposal refuses to sign for an unbound proposer...
    with pytest.raises(CommandRejectedError, match="proposer_key is not a key bound to 'mallory'"):
        await open_proposal(
            log,
            "p2",
            question="q",
            options=["a", "b"],
            mode="majority",
            voters=e.voters,
            opened_by="mallory",
            private_key=generate_keypair().private_key,
        )
    # ...and the honest proposal lands after the forged one on the same subject.
    opened = await e.open(
        log, "p1", question="ship?", options=["ship", "block"], mode="majority", voters=e.voters
    )
    assert not opened.duplicate
    for a in e.ids[:2]:
        await cast_vote(log, "p1", a, "ship", e.keys[a].private_key)
    v = await tally(log, "p1")
    assert (v.status, v.choice, v.opened_at_seq) == ("decided", "ship", opened.seq)


def test_voting_does_not_import_nats() -> None:
    probe = "import json, sys, aqe.coordination.voting; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ},
    )
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout))
    assert not {m for m in loaded if m == "nats" or m.startswith("nats.")}
