"""Inclusion proofs of single events against a seal, as JSON anyone can check offline.

The format (``aqe.audit.inclusion.v1``) is written down in
``docs/audit-proof-format.md``; :func:`check_proof` is the reference checker and
``tests/e2e/verify_proof.mjs`` a second one in JavaScript (Node.js, no packages).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable

import msgspec

from aqe.audit.leaf import leaf_bytes, leaf_headers, message_leaf_hash
from aqe.audit.merkle import MerkleTree, leaf_hash, verify_inclusion
from aqe.audit.seal import (
    AUDIT_STREAM,
    SealHead,
    TrustedKeys,
    head_of,
    seal_problem,
    seals_of,
)
from aqe.errors import AuditError
from aqe.events import Envelope
from aqe.events.audit import StreamSealed
from aqe.log.port import EventLog

__all__ = [
    "PROOF_FORMAT",
    "InclusionProof",
    "ProofLeaf",
    "Prover",
    "check_proof",
    "decode_proof",
    "encode_proof",
]

PROOF_FORMAT = "aqe.audit.inclusion.v1"


class ProofLeaf(msgspec.Struct, frozen=True, kw_only=True):
    """The message proven: every field its leaf covers."""

    stream: str
    seq: int
    subject: str
    headers: dict[str, str]
    """The headers the leaf covers (``Nats-*`` left out but ``Nats-Msg-Id``)."""
    data: str
    """The payload, base64."""

    @classmethod
    def of(cls, env: Envelope) -> ProofLeaf:
        """The proof leaf of a stored message."""
        return cls(
            stream=env.stream,
            seq=env.seq,
            subject=env.subject,
            headers=dict(leaf_headers(env.headers)),
            data=base64.b64encode(env.data).decode("ascii"),
        )

    def hash(self) -> bytes:
        """The Merkle leaf hash of this message.

        Raises:
            AuditError: ``data`` is not base64.
        """
        try:
            data = base64.b64decode(self.data, validate=True)
        except (binascii.Error, ValueError):
            raise AuditError(f"proof of seq {self.seq}: data is not base64") from None
        return leaf_hash(leaf_bytes(self.stream, self.seq, self.subject, self.headers, data))


class InclusionProof(msgspec.Struct, frozen=True, kw_only=True):
    """One event, its audit path and the signed seal whose root the path leads to."""

    format: str = PROOF_FORMAT
    leaf: ProofLeaf
    leaf_index: int
    tree_size: int
    path: list[str]
    """Hex hashes, leaf to root (RFC 9162 §2.1.3.1)."""
    seal_seq: int
    """Where the seal is stored in ``AQE_AUDIT``."""
    seal: SealHead
    """The seal's signed head (its detail as one hash)."""


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(InclusionProof)


def encode_proof(proof: InclusionProof) -> bytes:
    """JSON bytes of a proof."""
    return _ENCODER.encode(proof)


def decode_proof(data: bytes, *, source: str = "proof") -> InclusionProof:
    """Parse a proof file.

    Raises:
        AuditError: not JSON of the proof format; the message names ``source``.
    """
    try:
        proof = _DECODER.decode(data)
    except msgspec.DecodeError as exc:
        raise AuditError(f"{source}: not an aqe inclusion proof: {exc}") from None
    if proof.format != PROOF_FORMAT:
        raise AuditError(f"{source}: format {proof.format!r}, expected {PROOF_FORMAT!r}")
    return proof


def check_proof(proof: InclusionProof, trusted: TrustedKeys) -> list[str]:
    """Why a proof does not hold (empty: the event is in the trusted, signed tree)."""
    problems: list[str] = []
    seal = proof.seal
    if proof.leaf.stream != seal.stream:
        problems.append(f"leaf of stream {proof.leaf.stream} against a seal of {seal.stream}")
    if proof.tree_size != seal.tree_size:
        problems.append(f"tree size {proof.tree_size} is not the seal's {seal.tree_size}")
    if proof.leaf.seq > seal.last_seq:
        problems.append(f"seq {proof.leaf.seq} is after the seal's last seq {seal.last_seq}")
    signature = seal_problem(seal, trusted)
    if signature is not None:
        problems.append(f"seal: {signature}")
    try:
        path = [bytes.fromhex(h) for h in proof.path]
        root = bytes.fromhex(seal.root)
        leaf = proof.leaf.hash()
    except (ValueError, AuditError) as exc:
        return [*problems, f"malformed proof: {exc}"]
    if not verify_inclusion(leaf, proof.leaf_index, proof.tree_size, path, root):
        problems.append(
            f"seq {proof.leaf.seq}: the audit path does not lead from this event to the "
            "seal's root (the event or the path was changed)"
        )
    return problems


class Prover:
    """Proofs of one stream's events against one seal (the tree is built once).

    Only leaf hashes are kept (about 100 bytes a message); an event's bytes are read
    again when its proof is made.
    """

    def __init__(self, seal_seq: int, seal: StreamSealed, seqs: list[int], leaves: list[bytes]):
        """Build the tree of ``leaves`` (the stream's messages ``seqs`` up to the seal).

        Raises:
            AuditError: the messages no longer give the seal's root.
        """
        self.seal_seq = seal_seq
        self.seal = seal
        self._index = {s: i for i, s in enumerate(seqs)}
        self.tree = MerkleTree(leaves)
        if self.tree.size != seal.tree_size or self.tree.root().hex() != seal.root:
            raise AuditError(
                f"{seal.stream} no longer gives the root of the seal at {AUDIT_STREAM} seq "
                f"{seal_seq} ({self.tree.size} messages, sealed {seal.tree_size}); "
                "run `aqe audit verify`"
            )

    @classmethod
    async def load(
        cls,
        log: EventLog,
        stream: str,
        *,
        covering: int = 0,
        seal_seq: int | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> Prover:
        """A prover against the newest seal covering ``covering`` (or the one at ``seal_seq``).

        Raises:
            AuditError: no such seal of ``stream``, or the stream diverges from it.
        """
        chosen: tuple[int, StreamSealed] | None = None
        for env, seal in await seals_of(log, stream):
            if seal is None or seal.last_seq < covering:
                continue
            if seal_seq is None or env.seq == seal_seq:
                chosen = (env.seq, seal)
        if chosen is None:
            what = f"at {AUDIT_STREAM} seq {seal_seq}" if seal_seq else f"covering seq {covering}"
            raise AuditError(f"no seal of {stream} {what}; run `aqe audit seal`")
        seqs: list[int] = []
        leaves: list[bytes] = []
        async for env in log.read(stream, until_seq=chosen[1].last_seq):
            seqs.append(env.seq)
            leaves.append(message_leaf_hash(env))
            if on_progress is not None and len(seqs) % 10_000 == 0:
                on_progress(len(seqs))
        return cls(chosen[0], chosen[1], seqs, leaves)

    def index_of(self, seq: int) -> int:
        """The leaf index of the message at ``seq``.

        Raises:
            AuditError: the seal does not cover a message at ``seq``.
        """
        index = self._index.get(seq)
        if index is None:
            raise AuditError(
                f"{self.seal.stream} seq {seq} is not a message under the seal at "
                f"{AUDIT_STREAM} seq {self.seal_seq} (last seq {self.seal.last_seq})"
            )
        return index

    def proof_of(self, env: Envelope) -> InclusionProof:
        """The inclusion proof of a message read from the stream.

        Raises:
            AuditError: the seal does not cover it, or its bytes are not the sealed ones.
        """
        index = self.index_of(env.seq)
        if message_leaf_hash(env) != self.tree.levels[0][index]:
            raise AuditError(f"{env.stream} seq {env.seq} changed since it was read")
        return InclusionProof(
            leaf=ProofLeaf.of(env),
            leaf_index=index,
            tree_size=self.tree.size,
            path=[h.hex() for h in self.tree.inclusion_proof(index)],
            seal_seq=self.seal_seq,
            seal=head_of(self.seal),
        )

    async def prove(self, log: EventLog, seq: int) -> InclusionProof:
        """The inclusion proof of the event at ``seq`` (read from ``log``)."""
        self.index_of(seq)
        return self.proof_of(await log.get(self.seal.stream, seq))
