"""Agent identities: signed registrations bind keys on first use; forged ones are refused.

The membership fold, the key book and the electorate all read registrations through
:class:`aqe.coordination.identity.KeyBook`, so a registration that the book refuses
changes nobody's view of the agent.
"""

from __future__ import annotations

import msgspec
import pytest

from aqe.coordination.agent import AgentRuntime
from aqe.coordination.identity import KeyBook, sign_registration, signature_valid, signed_bytes
from aqe.coordination.membership import MembershipProjection, MembershipState, apply_membership
from aqe.coordination.voting import KeyPair, generate_keypair, key_book
from aqe.errors import ConfigError
from aqe.events import AgentRegistered, AgentRetired, Envelope, Event
from aqe.log import InMemoryEventLog, load_stream_specs


def registration(
    agent: str, pair: KeyPair, *, signer: KeyPair | None = None, nonce: str = "n1", **kw: object
) -> AgentRegistered:
    event = AgentRegistered(
        agent_id=agent,
        role=kw.pop("role", "generator"),  # type: ignore[arg-type]
        public_key=pair.public_key,
        nonce=nonce,
        **kw,  # type: ignore[arg-type]
    )
    return sign_registration(event, (signer or pair).private_key)


async def fold(events: list[Event]) -> tuple[MembershipState, list[Envelope]]:
    log = InMemoryEventLog(load_stream_specs())
    for i, event in enumerate(events):
        # Distinct message ids: a replay outside the duplicate window is stored again.
        await log.append(event, event_id=f"m{i}")
    envs = [env async for env in log.read("AQE_AGENTS")]
    state = MembershipState()
    for env in envs:
        apply_membership(state, env, env.decode())
    return state, envs


def test_signed_bytes_cover_every_field_but_the_signature() -> None:
    pair = generate_keypair()
    reg = registration("a1", pair)
    assert signed_bytes(reg).startswith(b"aqe.signed-event.v1\x00{")
    assert b'"signature"' not in signed_bytes(reg)
    assert signature_valid(reg, pair.public_key)
    for changed in (
        msgspec.structs.replace(reg, role="admin"),
        msgspec.structs.replace(reg, capabilities=("x",)),
        msgspec.structs.replace(reg, nonce="n2"),
        msgspec.structs.replace(reg, signature="AAAA"),
    ):
        assert not signature_valid(changed, pair.public_key)
    assert not signature_valid(reg, generate_keypair().public_key)
    with pytest.raises(ConfigError, match="needs a nonce"):
        sign_registration(AgentRegistered(agent_id="a1", role="r"), pair.private_key)


async def test_first_registration_binds_and_a_forged_reregistration_is_refused() -> None:
    owner, mallory = generate_keypair(), generate_keypair()
    state, _ = await fold(
        [
            registration("a1", owner),
            # Anyone able to publish re-registers a1 with their own key, self-signed.
            registration("a1", mallory, nonce="m1", role="admin"),
            # ... or without any signature, or keyless to wipe the key.
            AgentRegistered(agent_id="a1", role="admin", public_key=mallory.public_key),
            AgentRegistered(agent_id="a1", role="admin"),
            # ... or retires it first: the binding survives a retirement.
            AgentRetired(agent_id="a1"),
            registration("a1", mallory, nonce="m2", role="admin"),
        ]
    )
    record = state.agents["a1"]
    assert (record.public_key, record.role, record.retired) == (owner.public_key, "generator", True)
    assert state.keys.bound == {"a1": owner.public_key}
    assert [(r.seq, r.reason) for r in state.keys.refused] == [
        (2, "forged"),
        (3, "unsigned"),
        (4, "unsigned"),
        (6, "forged"),
    ]
    assert "not signed by the key bound to 'a1'" in state.keys.refused[0].detail


async def test_rotation_needs_the_bound_key_and_replays_are_refused() -> None:
    old, new = generate_keypair(), generate_keypair()
    first = registration("a1", old, nonce="s1")
    state, _ = await fold(
        [
            first,
            # The bound key authorises the new one.
            registration("a1", new, signer=old, nonce="s2", role="runner"),
            # The old key no longer speaks for a1...
            registration("a1", old, nonce="s3"),
            # ...and its first registration, replayed, is refused too.
            first,
            # A registration without a key signed by the bound key keeps the key.
            sign_registration(
                AgentRegistered(agent_id="a1", role="hunter", nonce="s4"), new.private_key
            ),
        ]
    )
    assert state.keys.bound == {"a1": new.public_key}
    assert state.keys.history == {"a1": [old.public_key, new.public_key]}
    assert [r.reason for r in state.keys.refused] == ["forged", "forged"]
    assert (state.agents["a1"].role, state.agents["a1"].public_key) == ("hunter", new.public_key)
    book = KeyBook()
    assert book.admit(first, 1) is None
    refusal = book.admit(first, 2)
    assert refusal is not None
    assert (refusal.reason, refusal.detail) == ("replayed", "nonce 's1' was already used by 'a1'")


async def test_keyless_registrations_only_until_a_key_is_bound() -> None:
    pair = generate_keypair()
    bad = msgspec.structs.replace(registration("a2", pair), public_key="%%%")
    state, _ = await fold(
        [
            AgentRegistered(agent_id="a1", role="r"),
            AgentRegistered(agent_id="a1", role="r2"),
            registration("a1", pair),
            AgentRegistered(agent_id="a1", role="r3"),
            bad,
        ]
    )
    assert state.agents["a1"].role == "generator"
    assert [(r.agent_id, r.reason) for r in state.keys.refused] == [
        ("a1", "unsigned"),
        ("a2", "bad-key"),
    ]
    assert "a2" not in state.agents


async def test_rebuild_equals_incremental_and_key_book_agrees() -> None:
    owner, mallory = generate_keypair(), generate_keypair()
    log = InMemoryEventLog(load_stream_specs())
    for event in (registration("a1", owner), registration("a1", mallory, nonce="x")):
        await log.append(event)
    proj = MembershipProjection()
    state = proj.initial()
    async for env in log.read("AQE_AGENTS"):
        state = proj.apply(state, env, env.decode())
    assert proj.decode(proj.encode(state)) == state
    book = await key_book(log)
    assert book == state.keys


async def test_agent_runtime_signs_its_registration_with_its_session_as_nonce() -> None:
    pair = generate_keypair()
    log = InMemoryEventLog(load_stream_specs())
    first = AgentRuntime(log, "a1", "generator", private_key=pair.private_key, interval_s=60)
    await first.start()
    await first.stop()
    second = AgentRuntime(log, "a1", "generator", private_key=pair.private_key, interval_s=60)
    await second.start()
    await second.stop()
    book = await key_book(log)
    assert book.bound == {"a1": pair.public_key}
    assert book.nonces == {"a1": [first.session, second.session]}
    assert book.refused == []
    # A runtime with another key cannot take the id over.
    thief = AgentRuntime(log, "a1", "generator", private_key=generate_keypair().private_key)
    await thief.start()
    await thief.stop()
    assert [r.reason for r in (await key_book(log)).refused] == ["forged"]
