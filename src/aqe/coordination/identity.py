"""Agent identities: which Ed25519 key speaks for which agent, as every reader of the log agrees.

The trust root is the log itself (trust on first use, recorded):

* An agent's **first** signed :class:`~aqe.events.AgentRegistered` binds its
  ``public_key``; it must be signed by that key (proof that the registrant holds it).
* Every **later** registration of the agent must be signed by the key bound at that
  point. It may name a new ``public_key`` (key rotation: the old key authorises the
  new one) or keep it. Retiring an agent does not unbind its key, so a retire followed
  by a forged registration gains nothing.
* Each signed registration carries a fresh ``nonce``; one already accepted for the
  agent is refused, so an old registration (say, an earlier role) cannot be replayed.
* A registration without a key and without a signature binds nothing; it is accepted
  only while the agent has no key bound (an agent that never votes nor proposes), and
  refused once one is.
* A :class:`~aqe.events.ProposalOpened` must carry ``proposer_key`` and a signature by
  it, the key must be (or have been) bound to ``opened_by``, and every voter's key
  must be (or have been) bound to that voter. Keys replaced by rotation stay valid for
  what they signed while bound; a rotation does not revoke a compromised key's past.

Who may publish a registration at all is the server's business: with the generated
credentials (:mod:`aqe.coordination.credentials`) an agent can publish only under
``aqe.agents.agent.<its id>.>``, so the first registration of an id comes from the
holder of that id's credentials. The signatures make the rule checkable by every
reader, including readers of a bridged copy of the stream and readers that do not
trust whoever could publish.

Signed bytes (:func:`signed_bytes`): ``b"aqe.signed-event.v1\\x00"`` followed by the
event's canonical JSON with ``signature`` left out. The JSON names the event's tag, so
a signature over one event type never verifies as another, and a vote signature
(:func:`aqe.coordination.voting.vote_bytes`, another domain) never verifies as either.
Fields added later with defaults are omitted while at their defaults, so old
signatures keep verifying.

Registrations must be kept: the binding is the *first* registration, so the
``aqe.agents.agent.*.registered`` subjects must not be trimmed by a per-subject limit.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from typing import Literal, TypeVar

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aqe.coordination._votekeys import load_public_key, public_key_b64
from aqe.errors import ConfigError, EventDecodeError
from aqe.events import AgentRegistered, Envelope, ProposalOpened

__all__ = [
    "KeyBook",
    "RefusalReason",
    "RefusedRegistration",
    "sign_proposal",
    "sign_registration",
    "signature_valid",
    "signed_bytes",
]

_DOMAIN = b"aqe.signed-event.v1\x00"

Signed = TypeVar("Signed", AgentRegistered, ProposalOpened)

RefusalReason = Literal["unsigned", "bad-key", "forged", "replayed"]
"""``unsigned``: no signature (or no nonce) where one is required; ``bad-key``: the
``public_key`` is not an Ed25519 key; ``forged``: the signature does not verify with the
key that must have made it; ``replayed``: its nonce was already used by the agent."""


def signed_bytes(event: AgentRegistered | ProposalOpened) -> bytes:
    """The bytes a registration's or a proposal's signature covers (module docstring)."""
    return _DOMAIN + msgspec.structs.replace(event, signature=None).to_json()


def _sign(event: Signed, private_key: Ed25519PrivateKey) -> Signed:
    signature = private_key.sign(signed_bytes(event))
    return msgspec.structs.replace(event, signature=base64.b64encode(signature).decode("ascii"))


def sign_registration(event: AgentRegistered, private_key: Ed25519PrivateKey) -> AgentRegistered:
    """``event`` signed with ``private_key`` (the agent's bound key, or its own for a first one).

    Raises:
        ConfigError: the registration has no nonce (it could be replayed).
    """
    if not event.nonce:
        raise ConfigError(f"registration of {event.agent_id!r}: a signed one needs a nonce")
    return _sign(event, private_key)


def sign_proposal(event: ProposalOpened, private_key: Ed25519PrivateKey) -> ProposalOpened:
    """``event`` with ``proposer_key`` set to ``private_key``'s public key, signed by it."""
    keyed = msgspec.structs.replace(event, proposer_key=public_key_b64(private_key))
    return _sign(keyed, private_key)


def signature_valid(event: AgentRegistered | ProposalOpened, public_key: str) -> bool:
    """True when ``event.signature`` is ``public_key``'s signature over :func:`signed_bytes`."""
    if not event.signature:
        return False
    try:
        key = load_public_key(public_key)
        signature = base64.b64decode(event.signature, validate=True)
    except (ConfigError, binascii.Error, ValueError):
        return False
    if len(signature) != 64:
        return False
    try:
        key.verify(signature, signed_bytes(event))
    except InvalidSignature:
        return False
    return True


class RefusedRegistration(msgspec.Struct, frozen=True, kw_only=True):
    """A registration the fold did not accept, and why (it changed nothing)."""

    seq: int
    agent_id: str
    reason: RefusalReason
    detail: str = ""


class KeyBook(msgspec.Struct, kw_only=True):
    """The keys bound to agents by the registrations folded so far (see the module rules).

    A pure fold: :meth:`admit` registrations in stream order. Equal prefixes of
    ``AQE_AGENTS`` give equal books, and a book is plain data (it is part of the
    membership projection's snapshot).
    """

    bound: dict[str, str] = msgspec.field(default_factory=dict)
    """Each agent's current key (raw Ed25519, base64)."""
    history: dict[str, list[str]] = msgspec.field(default_factory=dict)
    """Every key ever bound to each agent, oldest first."""
    nonces: dict[str, list[str]] = msgspec.field(default_factory=dict)
    """The nonces of each agent's accepted signed registrations."""
    refused: list[RefusedRegistration] = msgspec.field(default_factory=list)
    """Registrations refused, in stream order."""

    @classmethod
    def from_envelopes(cls, envelopes: Iterable[Envelope]) -> KeyBook:
        """A book of the registrations among ``envelopes`` (stream order; others skipped)."""
        book = cls()
        for env in envelopes:
            try:
                event = env.decode()
            except EventDecodeError:
                continue
            if isinstance(event, AgentRegistered):
                book.admit(event, env.seq)
        return book

    def key_of(self, agent_id: str) -> str | None:
        """The key bound to ``agent_id`` now (None: none bound)."""
        return self.bound.get(agent_id)

    def held(self, agent_id: str, public_key: str) -> bool:
        """Whether ``public_key`` is, or was, bound to ``agent_id``."""
        return public_key in self.history.get(agent_id, ())

    def check(self, event: AgentRegistered) -> tuple[RefusalReason, str] | None:
        """Why ``event`` would be refused now (None: it would be accepted)."""
        agent = event.agent_id
        bound = self.bound.get(agent)
        if event.signature is None and event.public_key is None:
            if bound is None:
                return None
            return "unsigned", f"{agent!r} has a key bound; a registration must be signed by it"
        if not event.signature or not event.nonce:
            what = "a signature" if not event.signature else "a nonce"
            return "unsigned", f"a registration of {agent!r} with a key needs {what}"
        if event.public_key is not None:
            try:
                load_public_key(event.public_key, field="public_key")
            except ConfigError as exc:
                return "bad-key", str(exc)
        signer = bound if bound is not None else event.public_key
        if signer is None:
            return "unsigned", f"{agent!r} has no key bound and the registration names none"
        if not signature_valid(event, signer):
            whose = "the key bound to" if bound is not None else "the key it binds for"
            return "forged", f"not signed by {whose} {agent!r}"
        if event.nonce in self.nonces.get(agent, ()):
            return "replayed", f"nonce {event.nonce!r} was already used by {agent!r}"
        return None

    def admit(self, event: AgentRegistered, seq: int) -> RefusedRegistration | None:
        """Fold one registration: bind or rotate its key, or record why it was refused.

        Returns:
            The refusal (also appended to :attr:`refused`), None when accepted.
        """
        problem = self.check(event)
        if problem is not None:
            refusal = RefusedRegistration(
                seq=seq, agent_id=event.agent_id, reason=problem[0], detail=problem[1]
            )
            self.refused.append(refusal)
            return refusal
        agent = event.agent_id
        if event.signature is None:
            return None
        key = event.public_key or self.bound[agent]
        self.bound[agent] = key
        keys = self.history.setdefault(agent, [])
        if key not in keys:
            keys.append(key)
        self.nonces.setdefault(agent, []).append(event.nonce or "")
        return None

    def proposal_problem(self, event: ProposalOpened) -> str | None:
        """Why ``event`` is not an authentic proposal (None: signed by a bound proposer
        key, over an electorate whose keys are bound to its voters)."""
        if not event.signature or not event.proposer_key:
            return "unsigned: a proposal must carry proposer_key and be signed by it"
        if not signature_valid(event, event.proposer_key):
            return "the signature does not verify with proposer_key"
        if not event.opened_by:
            return "opened_by is empty: nobody's bound key can vouch for it"
        if not self.held(event.opened_by, event.proposer_key):
            return f"proposer_key is not a key bound to {event.opened_by!r}"
        for voter in event.voters:
            if not self.held(voter.agent_id, voter.public_key):
                return f"voter {voter.agent_id!r}: its key is not one bound to it"
        return None
