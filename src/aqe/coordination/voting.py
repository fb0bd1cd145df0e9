"""Proposals and Ed25519-signed votes as events; one pure fold turns them into a verdict.

A proposal (:class:`~aqe.events.ProposalOpened`) fixes the question, the options, the
electorate (agent ids with their Ed25519 public keys) and the rule; votes
(:class:`~aqe.events.VoteCast`) are appended by each voter, unconditionally and in any
order. :class:`Tally` folds the envelopes in stream order, so every reader of the same
prefix of ``AQE_COORD`` derives the same :class:`Verdict`, down to ``decided_at_seq``.

Signed bytes (:func:`vote_bytes`)::

    b"aqe.coord.vote.v1\\x00" + field(proposal_id) + field(voter) + field(choice)
    field(s) = len(utf8(s)).to_bytes(4, "big") + utf8(s)

The domain prefix keeps a vote signature from ever being valid as anything else, and
the length prefixes make the encoding injective (``("ab", "c")`` and ``("a", "bc")``
differ). Ed25519 signatures are deterministic, so the same voter casting the same
choice twice produces the same event and the same content-hash id: the server stores it
once.

Fold rules, per proposal:

* A ``ProposalOpened`` that is not authentic (unsigned, not signed by a key bound to
  its ``opened_by``, or naming a voter key not bound to that voter; rules in
  :mod:`aqe.coordination.identity`) is rejected as ``forged-proposal`` and does not use
  up the id. The key book comes from ``AQE_AGENTS``, so :func:`tally` reads the
  registrations first.
* A vote for a proposal not (yet) opened, or for an invalid one, is rejected. Only the
  first authentic ``ProposalOpened`` per id counts (:func:`open_proposal` also makes
  the server refuse a second one).
* A vote whose voter is not in the electorate, whose choice is not an option, or whose
  signature does not verify is rejected and does **not** use up the voter's vote: anyone
  can write such a message under any name.
* The first valid vote per voter in stream order counts. A later valid vote with the
  same choice is a harmless duplicate; with a different choice it is *equivocation*: two
  conflicting statements signed by the voter's key prove it faulty.
* ``majority`` decides for an option backed by more than ``n/2`` voters; ``quorum`` once
  ``quorum`` voters have voted, for the option with most votes if it is the only one
  (later votes may break a tie; all ``n`` in and still tied is no decision);
  ``byzantine`` needs ``n >= 3f + 1`` (else the proposal is invalid) and decides for an
  option with ``max(2f + 1, n // 2 + 1)`` valid first votes. For ``n = 3f + 1`` that is
  exactly ``2f + 1``; for larger electorates the strict majority term keeps two options
  from both being able to reach the threshold (with ``n >= 4f + 2`` plain ``2f + 1``
  could be met by two options, and which one won would be up to the faulty voters'
  timing). Every decision is backed by at least ``f + 1`` honest voters while at most
  ``f`` are faulty, and the ``n - f`` honest voters alone can reach the threshold.
* Once an option reaches the threshold the verdict is fixed at that vote's sequence;
  later votes change the counts but never the choice. When no option can reach the
  threshold any more the status is ``no-decision``.
* ``byzantine`` only: when more than ``f`` voters are *proven* faulty (equivocation) the
  status becomes ``unsafe``: no safe decision exists. This also applies after a
  decision: BFT safety of a ``2f + 1`` decision rests on at most ``f`` actual faults,
  and ``f + 1`` equivocators prove that assumption false, so the decision may have been
  carried by faulty votes (e.g. ``n = 4, f = 1``: two of the three deciding voters
  equivocate). The verdict then keeps the earlier ``choice`` and ``decided_at_seq`` for
  the record, sets ``unsafe_at_seq`` and reports ``unsafe``; the status only ever moves
  ``open -> decided | no-decision -> unsafe``, never to a different choice.

Commands over an :class:`~aqe.log.EventLog`: :func:`open_proposal`, :func:`cast_vote`,
:func:`tally` (reads only ``aqe.coord.proposal.<id>.*``), :func:`await_verdict` and
:func:`electorate_from_agents`. They retry while the log is unavailable (a stream leader
election takes seconds) with the same event id, so a vote is stored exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from typing import Literal, TypeVar

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from aqe.coordination._votekeys import (
    KeyFiles,
    KeyPair,
    generate_keypair,
    key_file_stem,
    load_private_key,
    load_public_key,
    public_key_b64,
    sign_vote,
    verify_vote,
    vote_bytes,
    write_keypair,
)
from aqe.coordination.identity import KeyBook, sign_proposal
from aqe.errors import (
    CommandRejectedError,
    ConcurrencyError,
    ConfigError,
    EventDecodeError,
    LogUnavailableError,
)
from aqe.events import (
    AgentRegistered,
    AgentRetired,
    Envelope,
    ProposalOpened,
    VoteCast,
    Voter,
    VotingMode,
)
from aqe.log.port import AppendResult, EventLog
from aqe.log.retry import DEFAULT_UNAVAILABLE_S, while_unavailable
from aqe.log.subjects import encode_token, parse_subject, subject_for

__all__ = [
    "COORD_STREAM",
    "FINAL_STATUSES",
    "KeyFiles",
    "KeyPair",
    "RejectReason",
    "Rejection",
    "Tally",
    "Verdict",
    "VerdictStatus",
    "await_verdict",
    "cast_vote",
    "decision_threshold",
    "electorate_from_agents",
    "generate_keypair",
    "key_book",
    "key_file_stem",
    "load_private_key",
    "load_public_key",
    "open_proposal",
    "proposal_problems",
    "proposal_subjects",
    "public_key_b64",
    "sign_vote",
    "tally",
    "verify_vote",
    "vote_bytes",
    "write_keypair",
]

COORD_STREAM = "AQE_COORD"
_AGENTS_STREAM = "AQE_AGENTS"
_RETRY_DEADLINE_S = DEFAULT_UNAVAILABLE_S
_REGISTERED = "aqe.agents.agent.*.registered"
# Forged messages racing onto a proposal's subject: appends after them this many times.
_SQUAT_ATTEMPTS = 5

T = TypeVar("T")

VerdictStatus = Literal["unknown", "invalid", "open", "decided", "no-decision", "unsafe"]
"""``unknown``: no proposal opened under that id (in the prefix read)."""

FINAL_STATUSES: frozenset[str] = frozenset({"invalid", "decided", "no-decision", "unsafe"})
"""Statuses no later vote turns back to ``open`` (``decided``/``no-decision`` may still
become ``unsafe`` in byzantine mode)."""

RejectReason = Literal[
    "unknown-proposal",
    "invalid-proposal",
    "duplicate-proposal",
    "forged-proposal",
    "not-in-electorate",
    "invalid-choice",
    "bad-signature",
    "duplicate",
    "equivocation",
    "undecodable",
    "wrong-subject",
]


# -- the rules -----------------------------------------------------------------------------


def _tolerated(proposal: ProposalOpened) -> int:
    """``f``: as recorded, else the most ``n >= 3f + 1`` allows."""
    if proposal.faulty is not None:
        return proposal.faulty
    return max(0, (len(proposal.voters) - 1) // 3)


def decision_threshold(proposal: ProposalOpened) -> int:
    """Votes one option needs: majority and byzantine; ``quorum`` voters for quorum."""
    n = len(proposal.voters)
    if proposal.mode == "quorum":
        return proposal.quorum or n
    if proposal.mode == "byzantine":
        return max(2 * _tolerated(proposal) + 1, n // 2 + 1)
    return n // 2 + 1


def proposal_problems(proposal: ProposalOpened) -> list[str]:
    """Why a proposal cannot be decided by its own rule (empty when it is valid).

    Each problem names the field: ``options``, ``voters``, ``quorum`` or ``faulty``.
    """
    problems: list[str] = []
    n = len(proposal.voters)
    if len(proposal.options) < 2:
        problems.append(f"options: need at least 2, got {len(proposal.options)}")
    if any(not o for o in proposal.options):
        problems.append("options: an option cannot be empty")
    if len(set(proposal.options)) != len(proposal.options):
        problems.append("options: listed twice: " + ", ".join(_repeated(proposal.options)))
    if n == 0:
        problems.append("voters: the electorate is empty")
    ids = [v.agent_id for v in proposal.voters]
    if any(not i for i in ids):
        problems.append("voters: an agent id cannot be empty")
    if len(set(ids)) != n:
        problems.append("voters: listed twice: " + ", ".join(_repeated(ids)))
    keys = [v.public_key for v in proposal.voters]
    if len(set(keys)) != n:
        problems.append("voters: two voters share a public key (one key could vote twice)")
    for voter in proposal.voters:
        try:
            load_public_key(voter.public_key, field=f"voters: {voter.agent_id}")
        except ConfigError as exc:
            problems.append(str(exc))
    mode = proposal.mode
    if proposal.quorum is not None and mode != "quorum":
        problems.append(f"quorum: only mode quorum takes one (mode is {mode})")
    if proposal.faulty is not None and mode != "byzantine":
        problems.append(f"faulty: only mode byzantine takes one (mode is {mode})")
    if mode == "quorum" and (proposal.quorum is None or not 1 <= proposal.quorum <= n):
        problems.append(f"quorum: must be between 1 and the {n} voters, got {proposal.quorum}")
    if mode == "byzantine":
        f = _tolerated(proposal)
        if f < 0:
            problems.append(f"faulty: cannot be negative, got {f}")
        elif n < 3 * f + 1:
            problems.append(
                f"voters: byzantine mode with faulty={f} needs n >= {3 * f + 1}, got {n}"
            )
    return problems


def _repeated(values: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    twice: list[str] = []
    for value in values:
        if value in seen and value not in twice:
            twice.append(value)
        seen.add(value)
    return twice


# -- the fold ---------------------------------------------------------------------------------


class Rejection(msgspec.Struct, frozen=True, kw_only=True):
    """A message on a proposal's subjects that did not count, and why."""

    seq: int
    reason: RejectReason
    voter: str = ""
    choice: str = ""
    detail: str = ""


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    """What a prefix of the log says about one proposal; equal for equal prefixes."""

    proposal_id: str
    status: VerdictStatus
    choice: str | None = None
    decided_at_seq: int | None = None
    """Stream sequence of the vote that decided (kept when the status turns unsafe)."""
    unsafe_at_seq: int | None = None
    """Stream sequence of the equivocation that proved more than ``f`` voters faulty."""
    reason: str = ""
    mode: VotingMode | None = None
    question: str = ""
    options: tuple[str, ...] = ()
    electorate: int = 0
    faulty_tolerated: int | None = None
    threshold: int | None = None
    counts: dict[str, int] = msgspec.field(default_factory=dict)
    """Valid first votes per option (every option listed, zeros included)."""
    voters_voted: tuple[str, ...] = ()
    """Voters whose first valid vote counts, in stream order."""
    faulty: tuple[str, ...] = ()
    """Voters proven faulty by equivocation, in the order they were caught."""
    rejected: tuple[Rejection, ...] = ()
    opened_at_seq: int | None = None
    as_of_seq: int = 0
    """The last stream sequence on the proposal's subjects this verdict has seen."""


class _State:
    """One proposal's mutable fold state (private to :class:`Tally`)."""

    def __init__(self, proposal_id: str) -> None:
        self.proposal_id = proposal_id
        self.proposal: ProposalOpened | None = None
        self.opened_seq: int | None = None
        self.invalid: str = ""
        self.keys: dict[str, Ed25519PublicKey] = {}
        self.first: dict[str, tuple[str, int]] = {}
        self.counts: dict[str, int] = {}
        self.rejected: list[Rejection] = []
        self.faulty: list[str] = []
        self.status: VerdictStatus = "unknown"
        self.choice: str | None = None
        self.decided_at: int | None = None
        self.unsafe_at: int | None = None
        self.reason = ""
        self.as_of = 0


class Tally:
    """The pure fold: ``apply`` envelopes in stream order, then ask for a :meth:`verdict`.

    Folds any envelopes of ``AQE_COORD`` (other events are skipped), for any number of
    proposals. No I/O, clock or randomness: equal prefixes (and equal key books) give
    equal verdicts.

    Args:
        keys: the keys bound to agents (:class:`~aqe.coordination.identity.KeyBook`,
            folded from ``AQE_AGENTS``); a proposal counts only when its proposer's
            bound key signed it over an electorate of bound keys.
    """

    def __init__(self, keys: KeyBook) -> None:
        self._states: dict[str, _State] = {}
        self._book = keys

    @classmethod
    def from_envelopes(cls, envelopes: Iterable[Envelope], keys: KeyBook) -> Tally:
        """A tally of ``envelopes`` (in stream order) under the key book ``keys``."""
        tally = cls(keys)
        for env in envelopes:
            tally.apply(env)
        return tally

    def proposal_ids(self) -> tuple[str, ...]:
        """Every proposal id seen (opened or only voted on), in order of first sight."""
        return tuple(self._states)

    def proposal(self, proposal_id: str) -> ProposalOpened | None:
        """The proposal as opened (None: not opened in the prefix folded)."""
        state = self._states.get(proposal_id)
        return state.proposal if state else None

    def first_vote(self, proposal_id: str, voter: str) -> tuple[str, int] | None:
        """The counted choice of ``voter`` and its sequence, None when it has none."""
        state = self._states.get(proposal_id)
        return state.first.get(voter) if state else None

    def status(self, proposal_id: str) -> VerdictStatus:
        """The proposal's status alone (cheaper than a whole :meth:`verdict`)."""
        state = self._states.get(proposal_id)
        return state.status if state else "unknown"

    def apply(self, env: Envelope) -> None:
        """Fold one envelope (must come after every envelope applied before)."""
        if not env.subject.startswith("aqe.coord.proposal."):
            return
        try:
            event = env.decode()
        except EventDecodeError as exc:
            try:
                proposal_id = parse_subject(env.subject)[2]
            except ValueError:
                return
            state = self._state(proposal_id, env.seq)
            state.rejected.append(Rejection(seq=env.seq, reason="undecodable", detail=exc.detail))
            return
        if not isinstance(event, ProposalOpened | VoteCast):
            return
        if subject_for(event) != env.subject:
            # Only a raw publisher can do this. Counting it would make readers of the
            # whole stream and readers of one proposal's subjects disagree.
            try:
                proposal_id = parse_subject(env.subject)[2]
            except ValueError:
                return
            self._state(proposal_id, env.seq).rejected.append(
                Rejection(
                    seq=env.seq,
                    reason="wrong-subject",
                    voter=event.voter if isinstance(event, VoteCast) else event.opened_by,
                    detail=f"a {event.type_tag()} for {event.proposal_id!r} on {env.subject}",
                )
            )
        elif isinstance(event, ProposalOpened):
            self._open(self._state(event.proposal_id, env.seq), event, env.seq)
        else:
            self._vote(self._state(event.proposal_id, env.seq), event, env.seq)

    def _state(self, proposal_id: str, seq: int) -> _State:
        state = self._states.get(proposal_id)
        if state is None:
            state = self._states[proposal_id] = _State(proposal_id)
        state.as_of = max(state.as_of, seq)
        return state

    def _open(self, state: _State, event: ProposalOpened, seq: int) -> None:
        forged = self._book.proposal_problem(event)
        if forged is not None:
            # Anyone able to publish could write this; it must not use up the id.
            state.rejected.append(
                Rejection(seq=seq, reason="forged-proposal", voter=event.opened_by, detail=forged)
            )
            return
        if state.proposal is not None:
            state.rejected.append(
                Rejection(
                    seq=seq,
                    reason="duplicate-proposal",
                    voter=event.opened_by,
                    detail=f"already opened at seq {state.opened_seq}",
                )
            )
            return
        state.proposal, state.opened_seq = event, seq
        state.counts = dict.fromkeys(event.options, 0)
        problems = proposal_problems(event)
        if problems:
            state.status, state.invalid = "invalid", "; ".join(problems)
            state.reason = state.invalid
            return
        state.keys = {v.agent_id: load_public_key(v.public_key) for v in event.voters}
        state.status = "open"

    def _vote(self, state: _State, vote: VoteCast, seq: int) -> None:
        def reject(reason: RejectReason, detail: str = "") -> None:
            state.rejected.append(
                Rejection(
                    seq=seq, reason=reason, voter=vote.voter, choice=vote.choice, detail=detail
                )
            )

        proposal = state.proposal
        if proposal is None:
            reject("unknown-proposal", f"proposal {vote.proposal_id!r} is not open")
            return
        if state.invalid:
            reject("invalid-proposal", state.invalid)
            return
        key = state.keys.get(vote.voter)
        if key is None:
            reject("not-in-electorate")
            return
        if vote.choice not in state.counts:
            reject("invalid-choice", f"options are {', '.join(proposal.options)}")
            return
        if not verify_vote(key, vote):
            reject("bad-signature")
            return
        first = state.first.get(vote.voter)
        if first is not None:
            if first[0] == vote.choice:
                reject("duplicate", f"same choice as seq {first[1]}")
                return
            reject("equivocation", f"voted {first[0]!r} at seq {first[1]}")
            if vote.voter not in state.faulty:
                state.faulty.append(vote.voter)
                self._check_faults(state, proposal, seq)
            return
        state.first[vote.voter] = (vote.choice, seq)
        state.counts[vote.choice] += 1
        self._decide(state, proposal, seq)

    def _check_faults(self, state: _State, proposal: ProposalOpened, seq: int) -> None:
        if proposal.mode != "byzantine" or state.status == "unsafe":
            return
        f = _tolerated(proposal)
        if len(state.faulty) > f:
            state.status, state.unsafe_at = "unsafe", seq
            state.reason = (
                f"{len(state.faulty)} voters proven faulty ({', '.join(state.faulty)}), "
                f"more than the {f} tolerated: no safe decision"
            )

    def _decide(self, state: _State, proposal: ProposalOpened, seq: int) -> None:
        if state.status != "open":
            return
        n = len(proposal.voters)
        voted = len(state.first)
        remaining = n - voted
        threshold = decision_threshold(proposal)
        best = max(state.counts.values())
        leaders = [o for o, c in state.counts.items() if c == best]
        if proposal.mode == "quorum":
            if voted < threshold:
                return
            if len(leaders) == 1:
                state.status, state.choice, state.decided_at = "decided", leaders[0], seq
                state.reason = (
                    f"{voted} of {n} voted (quorum {threshold}); {leaders[0]!r} leads with {best}"
                )
            elif remaining == 0:
                state.status = "no-decision"
                state.reason = f"all {n} voted and {', '.join(map(repr, leaders))} tie at {best}"
            return
        if best >= threshold:
            state.status, state.choice, state.decided_at = "decided", leaders[0], seq
            state.reason = f"{best} of {n} voted {leaders[0]!r} (threshold {threshold})"
        elif best + remaining < threshold:
            state.status = "no-decision"
            state.reason = f"no option can reach {threshold} votes any more ({voted} of {n} voted)"

    def verdict(self, proposal_id: str) -> Verdict:
        """The verdict on ``proposal_id`` after everything applied so far."""
        state = self._states.get(proposal_id)
        if state is None:
            return Verdict(proposal_id=proposal_id, status="unknown", reason="no such proposal")
        proposal = state.proposal
        if proposal is None:
            return Verdict(
                proposal_id=proposal_id,
                status="unknown",
                reason="votes but no proposal",
                rejected=tuple(state.rejected),
                as_of_seq=state.as_of,
            )
        valid = not state.invalid
        reason = state.reason
        if state.status == "open":
            threshold = decision_threshold(proposal)
            needs = (
                f"decides once {threshold} have voted and one option leads"
                if proposal.mode == "quorum"
                else f"an option needs {threshold}"
            )
            reason = f"{len(state.first)} of {len(proposal.voters)} voted; {needs}"
        return Verdict(
            proposal_id=proposal_id,
            status=state.status,
            choice=state.choice,
            decided_at_seq=state.decided_at,
            unsafe_at_seq=state.unsafe_at,
            reason=reason,
            mode=proposal.mode,
            question=proposal.question,
            options=proposal.options,
            electorate=len(proposal.voters),
            faulty_tolerated=_tolerated(proposal) if proposal.mode == "byzantine" else None,
            threshold=decision_threshold(proposal) if valid else None,
            counts=dict(state.counts),
            voters_voted=tuple(state.first),
            faulty=tuple(state.faulty),
            rejected=tuple(state.rejected),
            opened_at_seq=state.opened_seq,
            as_of_seq=state.as_of,
        )


# -- commands over the log -----------------------------------------------------------------------


def proposal_subjects(proposal_id: str) -> str:
    """The subject filter holding one proposal's events: ``aqe.coord.proposal.<id>.*``."""
    return f"aqe.coord.proposal.{encode_token(proposal_id)}.*"


async def key_book(log: EventLog, *, deadline_s: float = _RETRY_DEADLINE_S) -> KeyBook:
    """The keys bound to agents: every registration in ``AQE_AGENTS`` folded by the rules
    of :mod:`aqe.coordination.identity`.

    Raises:
        LogUnavailableError: the log stayed unavailable for ``deadline_s``.
    """

    async def read() -> KeyBook:
        envelopes = log.read(_AGENTS_STREAM, subjects=_REGISTERED)
        return KeyBook.from_envelopes([env async for env in envelopes])

    return await while_unavailable(read, within_s=deadline_s)


async def _authentic_opening(
    log: EventLog, proposal_id: str, book: KeyBook
) -> tuple[Envelope | None, ProposalOpened | None, int]:
    """The first authentic ``ProposalOpened`` of the id (its envelope and event) and the
    last sequence on its ``opened`` subject (0: none)."""
    subject = f"aqe.coord.proposal.{encode_token(proposal_id)}.opened"
    last = 0
    found: tuple[Envelope, ProposalOpened] | None = None
    async for env in log.read(COORD_STREAM, subjects=subject):
        last = env.seq
        if found is not None:
            continue
        try:
            event = env.decode()
        except EventDecodeError:
            continue
        if (
            isinstance(event, ProposalOpened)
            and subject_for(event) == env.subject
            and book.proposal_problem(event) is None
        ):
            found = (env, event)
    return (found[0], found[1], last) if found else (None, None, last)


async def open_proposal(
    log: EventLog,
    proposal_id: str,
    *,
    question: str,
    options: Sequence[str],
    mode: VotingMode,
    voters: Sequence[Voter],
    opened_by: str,
    private_key: Ed25519PrivateKey,
    quorum: int | None = None,
    faulty: int | None = None,
    deadline_s: float = _RETRY_DEADLINE_S,
) -> AppendResult:
    """Sign (as ``opened_by``) and append a :class:`ProposalOpened`, once per id.

    In byzantine mode ``faulty`` defaults to the most the electorate tolerates,
    ``(n - 1) // 3``, and is recorded explicitly. ``private_key`` must be the key bound
    to ``opened_by`` and every voter's key the one bound to it (readers refuse the
    proposal otherwise), so both are checked against ``AQE_AGENTS`` first. The append
    is conditional on the proposal's ``opened`` subject: a forged message someone put
    there first does not block it (the append goes after it), an authentic proposal
    does.

    Raises:
        CommandRejectedError: the proposal is invalid or not authentic (the message
            names the field or key), or a different proposal with this id is open.
        LogUnavailableError: the log stayed unavailable for ``deadline_s``.
    """
    if mode == "byzantine" and faulty is None:
        faulty = max(0, (len(voters) - 1) // 3)
    event = sign_proposal(
        ProposalOpened(
            proposal_id=proposal_id,
            question=question,
            options=tuple(options),
            mode=mode,
            voters=tuple(voters),
            quorum=quorum,
            faulty=faulty,
            opened_by=opened_by,
        ),
        private_key,
    )
    where = f"proposal {proposal_id!r}"
    problems = proposal_problems(event) if proposal_id else ["proposal id: cannot be empty"]
    if problems:
        raise CommandRejectedError(f"{where}: " + "; ".join(problems))
    book = await key_book(log, deadline_s=deadline_s)
    if (forged := book.proposal_problem(event)) is not None:
        raise CommandRejectedError(
            f"{where}: {forged} (register agents with their keys first: "
            "`aqe agents register ID --role R --key FILE`)"
        )
    subject = subject_for(event)
    event_id = event.default_id()
    expected = 0

    async def append() -> AppendResult:
        nonlocal expected
        for _ in range(_SQUAT_ATTEMPTS):
            try:
                return await log.append(
                    event, event_id=event_id, expected_last_seq=expected, expected_subject=subject
                )
            except ConcurrencyError:
                # A retry whose first attempt landed fails the condition before dedup runs.
                env, opened, last = await _authentic_opening(log, proposal_id, book)
                if env is not None and env.event_id == event_id:
                    return AppendResult(
                        stream=env.stream,
                        seq=env.seq,
                        subject=subject,
                        event_id=event_id,
                        duplicate=True,
                    )
                if opened is not None and env is not None:
                    raise CommandRejectedError(
                        f"{where} is already open at seq {env.seq} with other content"
                    ) from None
                expected = last
        raise CommandRejectedError(f"{where}: its subject kept changing under other writers")

    return await while_unavailable(append, within_s=deadline_s)


async def cast_vote(
    log: EventLog,
    proposal_id: str,
    voter: str,
    choice: str,
    private_key: Ed25519PrivateKey,
    *,
    refuse_change: bool = True,
    deadline_s: float = _RETRY_DEADLINE_S,
) -> AppendResult:
    """Sign and append ``voter``'s vote; safe to repeat (same vote, same event id).

    The proposal (the first authentic one) is read first to check the voter, the
    choice and that ``private_key`` matches the voter's public key. With
    ``refuse_change`` (default) a vote that differs from the voter's counted one is
    refused instead of appended, since it would prove the voter faulty; repeating the
    counted vote appends nothing. The check reads the proposal's votes; two concurrent
    casts by one voter can still race past it.

    Raises:
        CommandRejectedError: the proposal is not open or invalid, the voter is not in
            the electorate, the choice is not an option, the key is not the voter's, or
            the voter already voted otherwise.
        LogUnavailableError: the log stayed unavailable for ``deadline_s``.
    """
    book = await key_book(log, deadline_s=deadline_s)
    proposal, first = await while_unavailable(
        lambda: _counted_vote(log, proposal_id, voter, book), within_s=deadline_s
    )
    if not refuse_change:
        first = None
    where = f"proposal {proposal_id!r}"
    if proposal is None:
        raise CommandRejectedError(f"{where} has not been opened")
    if problems := proposal_problems(proposal):
        raise CommandRejectedError(f"{where} is invalid: " + "; ".join(problems))
    keys = {v.agent_id: v.public_key for v in proposal.voters}
    if voter not in keys:
        raise CommandRejectedError(
            f"{where}: {voter!r} is not in the electorate ({', '.join(sorted(keys))})"
        )
    if choice not in proposal.options:
        raise CommandRejectedError(
            f"{where}: choice {choice!r} is not an option ({', '.join(proposal.options)})"
        )
    if public_key_b64(private_key) != keys[voter]:
        raise CommandRejectedError(
            f"{where}: the key given for voter {voter!r} does not match its public key"
        )
    event = VoteCast(
        proposal_id=proposal_id,
        voter=voter,
        choice=choice,
        signature=sign_vote(private_key, proposal_id, voter, choice),
    )
    event_id = event.default_id()
    if first is not None:
        if first[0] != choice:
            raise CommandRejectedError(
                f"{where}: voter {voter!r} already voted {first[0]!r} (seq {first[1]}); "
                "a second, different vote would be equivocation and mark it faulty"
            )
        return AppendResult(
            stream=COORD_STREAM,
            seq=first[1],
            subject=subject_for(event),
            event_id=event_id,
            duplicate=True,
        )
    return await while_unavailable(
        lambda: log.append(event, event_id=event_id), within_s=deadline_s
    )


async def _counted_vote(
    log: EventLog, proposal_id: str, voter: str, book: KeyBook
) -> tuple[ProposalOpened | None, tuple[str, int] | None]:
    """The proposal and ``voter``'s counted vote (choice, seq), by :class:`Tally`'s rules.

    Only the voter's own votes are verified: a full tally would verify every vote, and
    each of ``n`` voters doing so before casting costs ``n**2`` verifications.
    """
    proposal: ProposalOpened | None = None
    key: Ed25519PublicKey | None = None
    envelopes = log.read(COORD_STREAM, subjects=proposal_subjects(proposal_id))
    try:
        async for env in envelopes:
            try:
                event = env.decode()
            except EventDecodeError:
                continue
            if not isinstance(event, ProposalOpened | VoteCast) or (
                subject_for(event) != env.subject
            ):
                continue
            if isinstance(event, ProposalOpened):
                if proposal is None and book.proposal_problem(event) is None:
                    proposal = event
                    if not proposal_problems(event):
                        keys = {v.agent_id: v.public_key for v in event.voters}
                        key = load_public_key(keys[voter]) if voter in keys else None
            elif (
                key is not None
                and proposal is not None
                and event.voter == voter
                and event.choice in proposal.options
                and verify_vote(key, event)
            ):
                return proposal, (event.choice, env.seq)
    finally:
        await _aclose(envelopes)
    return proposal, None


async def _aclose(iterator: object) -> None:
    """Close an async generator now (a JetStream read unsubscribes when closed)."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


async def _fold(log: EventLog, proposal_id: str, until_seq: int | None, deadline_s: float) -> Tally:
    subjects = proposal_subjects(proposal_id)
    book = await key_book(log, deadline_s=deadline_s)

    async def read() -> Tally:
        folded = Tally(book)
        async for env in log.read(COORD_STREAM, subjects=subjects, until_seq=until_seq):
            folded.apply(env)
        return folded

    return await while_unavailable(read, within_s=deadline_s)


async def tally(
    log: EventLog,
    proposal_id: str,
    *,
    until_seq: int | None = None,
    deadline_s: float = _RETRY_DEADLINE_S,
) -> Verdict:
    """Fold the proposal's subjects (up to ``until_seq``) into its verdict.

    The key book is read from ``AQE_AGENTS`` first (see :class:`Tally`).

    Raises:
        LogUnavailableError: the log stayed unavailable for ``deadline_s``.
    """
    return (await _fold(log, proposal_id, until_seq, deadline_s)).verdict(proposal_id)


async def await_verdict(
    log: EventLog,
    proposal_id: str,
    *,
    timeout_s: float,
    statuses: frozenset[str] = FINAL_STATUSES,
) -> Verdict:
    """Follow the proposal's subjects until its status is one of ``statuses``.

    Returns the verdict at that point, or the latest one when ``timeout_s`` passes
    first. Reads resume where they stopped when the log is briefly unavailable. The
    key book is read once, at the start.

    Raises:
        LogUnavailableError: the key book could not be read within ``timeout_s``.
    """
    folded = Tally(await key_book(log, deadline_s=timeout_s))
    subjects = proposal_subjects(proposal_id)
    last_seq = 0
    done = False

    async def follow() -> None:
        nonlocal last_seq, done
        envelopes = log.read(COORD_STREAM, after_seq=last_seq, subjects=subjects, follow=True)
        try:
            async for env in envelopes:
                folded.apply(env)
                last_seq = env.seq
                if folded.status(proposal_id) in statuses:
                    done = True
                    return
        finally:
            await _aclose(envelopes)

    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            while not done:
                try:
                    await follow()
                except LogUnavailableError:
                    await asyncio.sleep(0.2)
    return folded.verdict(proposal_id)


async def electorate_from_agents(
    log: EventLog,
    agent_ids: Sequence[str] | None = None,
    *,
    role: str | None = None,
    deadline_s: float = _RETRY_DEADLINE_S,
) -> tuple[Voter, ...]:
    """Voters from ``AgentRegistered`` events: each agent's bound key and latest role.

    Registrations are folded by the key book's rules (forged ones do not count).
    Retired agents (retired after their latest accepted registration) are left out.
    With ``agent_ids`` exactly those agents, in that order; otherwise every active agent
    with a bound key (and ``role``, if given) in order of registration.

    Raises:
        CommandRejectedError: a named agent is unknown, retired or has no bound key.
    """
    book = KeyBook()
    registered: dict[str, tuple[int, AgentRegistered]] = {}
    retired: dict[str, int] = {}

    async def read() -> None:
        nonlocal book
        book = KeyBook()
        registered.clear()
        retired.clear()
        async for env in log.read(_AGENTS_STREAM, subjects=_REGISTERED):
            try:
                event = env.decode()
            except EventDecodeError:
                continue
            if isinstance(event, AgentRegistered) and book.admit(event, env.seq) is None:
                registered[event.agent_id] = (env.seq, event)
        async for env in log.read(_AGENTS_STREAM, subjects="aqe.agents.agent.*.retired"):
            try:
                event = env.decode()
            except EventDecodeError:
                continue
            if isinstance(event, AgentRetired):
                retired[event.agent_id] = env.seq

    await while_unavailable(read, within_s=deadline_s)
    active = {
        agent: seq
        for agent, (seq, event) in registered.items()
        if retired.get(agent, 0) < seq and (role is None or event.role == role)
    }
    if agent_ids is None:
        chosen = sorted(
            (seq, agent) for agent, seq in active.items() if book.key_of(agent) is not None
        )
        return tuple(Voter(agent_id=a, public_key=book.key_of(a) or "") for _, a in chosen)
    voters = []
    for agent in agent_ids:
        if agent not in registered:
            raise CommandRejectedError(f"agent {agent!r} has never registered")
        if agent not in active:
            raise CommandRejectedError(f"agent {agent!r} is retired or not of role {role!r}")
        key = book.key_of(agent)
        if not key:
            raise CommandRejectedError(f"agent {agent!r} registered without a public key")
        voters.append(Voter(agent_id=agent, public_key=key))
    return tuple(voters)
