"""Seals: signed Merkle tree heads over a stream, appended to ``AQE_AUDIT``.

:func:`seal_stream` reads what a stream gained since its last seal, extends the tree
from the last seal's frontier (old messages are not read again) and appends one
:class:`~aqe.events.audit.StreamSealed` per at most :data:`MAX_LEAVES_PER_SEAL` new
messages. Each append is conditional on the seal subject's last sequence, so two
sealers racing cannot fork a stream's chain of seals: one gets ``ConcurrencyError``.

Signed bytes (:func:`seal_bytes`), plain text so another language can rebuild them::

    aqe.audit.seal.v1
    <stream>
    <tree_size>
    <root>
    <last_seq>
    <prev_size>
    <prev_root>
    <prev_last_seq>
    <sealed_at>
    <signer>
    <detail_sha256: hex SHA-256 of ",".join(consistency) "\\n" ",".join(frontier)
                    "\\n" ";".join("first-last" per run) "\\n" digests>

joined by ``\\n`` with no newline at the end; the signature is Ed25519 over those
UTF-8 bytes, base64 in ``signature``. Hashing the detail lets an inclusion proof
carry only the seal's head (:class:`SealHead`, a few hundred bytes) instead of its
digests (up to about 350 KB).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aqe.audit.leaf import message_leaf_hash
from aqe.audit.merkle import (
    EMPTY_ROOT,
    consistency_proof_from_frontier,
    extend_frontier,
    frontier_root,
)
from aqe.coordination.voting import load_public_key, public_key_b64
from aqe.errors import AuditError, ConfigError
from aqe.events import Envelope
from aqe.events.audit import StreamSealed
from aqe.log.port import EventLog
from aqe.log.streams import StreamSpec
from aqe.log.subjects import encode_token

__all__ = [
    "AUDIT_STREAM",
    "DIGEST_BYTES",
    "MAX_LEAVES_PER_SEAL",
    "SEALER_ID",
    "SealHead",
    "TrustedKeys",
    "head_bytes",
    "head_of",
    "key_id",
    "runs_of",
    "seal_bytes",
    "seal_problem",
    "seal_stream",
    "seal_subject",
    "sealable_streams",
    "seals_of",
    "sign_seal",
    "trusted_keys",
]

AUDIT_STREAM = "AQE_AUDIT"
SEALER_ID = "audit-sealer"
"""The key name ``aqe audit keygen`` writes under ``DATA_DIR/keys``."""
DIGEST_BYTES = 8
"""Bytes of each leaf hash a seal keeps to name the exact message that diverged."""
MAX_LEAVES_PER_SEAL = 32_768
"""New messages one seal covers at most: its digests stay about 350 KB of base64."""
_DOMAIN = "aqe.audit.seal.v1"

TrustedKeys = Mapping[str, str]
"""Key id -> raw Ed25519 public key (base64): the keys whose seals a verifier accepts."""


def key_id(public_key: str) -> str:
    """The first 16 hex digits of SHA-256 of the raw public key."""
    raw = base64.b64decode(public_key, validate=True)
    return hashlib.sha256(raw).hexdigest()[:16]


def trusted_keys(public_keys: Sequence[str]) -> dict[str, str]:
    """Index public keys (base64 raw Ed25519) by key id.

    Raises:
        ConfigError: a key that is not a base64 Ed25519 public key.
    """
    out: dict[str, str] = {}
    for value in public_keys:
        load_public_key(value, field="--key")
        out[key_id(value.strip())] = value.strip()
    return out


def seal_subject(stream: str) -> str:
    """``aqe.audit.seal.<stream>.sealed``: one subject per sealed stream."""
    return f"aqe.audit.seal.{encode_token(stream)}.sealed"


class SealHead(msgspec.Struct, frozen=True, kw_only=True):
    """What a seal's signature covers, with its detail (proofs, frontier, runs, digests)
    reduced to one hash: the part of a seal an inclusion proof carries."""

    stream: str
    tree_size: int
    root: str
    last_seq: int
    prev_size: int = 0
    prev_root: str = ""
    prev_last_seq: int = 0
    sealed_at: str = ""
    signer: str = ""
    public_key: str = ""
    detail_sha256: str
    signature: str | None = None


def head_of(seal: StreamSealed) -> SealHead:
    """A seal's signed head (module docstring: the detail hash is the last line)."""
    detail = "\n".join(
        [
            ",".join(seal.consistency),
            ",".join(seal.frontier),
            ";".join(f"{a}-{b}" for a, b in seal.runs),
            seal.digests,
        ]
    )
    return SealHead(
        stream=seal.stream,
        tree_size=seal.tree_size,
        root=seal.root,
        last_seq=seal.last_seq,
        prev_size=seal.prev_size,
        prev_root=seal.prev_root,
        prev_last_seq=seal.prev_last_seq,
        sealed_at=seal.sealed_at,
        signer=seal.signer,
        public_key=seal.public_key,
        detail_sha256=hashlib.sha256(detail.encode("utf-8")).hexdigest(),
        signature=seal.signature,
    )


def head_bytes(head: SealHead) -> bytes:
    """The bytes a seal's signature covers (module docstring)."""
    lines = [
        _DOMAIN,
        head.stream,
        str(head.tree_size),
        head.root,
        str(head.last_seq),
        str(head.prev_size),
        head.prev_root,
        str(head.prev_last_seq),
        head.sealed_at,
        head.signer,
        head.detail_sha256,
    ]
    return "\n".join(lines).encode("utf-8")


def seal_bytes(seal: StreamSealed) -> bytes:
    """The bytes a seal's signature covers: :func:`head_bytes` of its head."""
    return head_bytes(head_of(seal))


def sign_seal(seal: StreamSealed, private_key: Ed25519PrivateKey) -> StreamSealed:
    """``seal`` with ``signer``, ``public_key`` and ``signature`` set by ``private_key``."""
    public = public_key_b64(private_key)
    keyed = msgspec.structs.replace(seal, signer=key_id(public), public_key=public, signature=None)
    signature = private_key.sign(seal_bytes(keyed))
    return msgspec.structs.replace(keyed, signature=base64.b64encode(signature).decode("ascii"))


def seal_problem(seal: StreamSealed | SealHead, trusted: TrustedKeys) -> str | None:
    """Why a seal's (or a seal head's) signature does not stand (None: a trusted key's)."""
    head = seal if isinstance(seal, SealHead) else head_of(seal)
    if not head.signature:
        return "unsigned seal"
    key = trusted.get(head.signer)
    if key is None:
        return f"signer {head.signer or '?'} is not a trusted key"
    if head.public_key and head.public_key != key:
        return f"public key does not match the trusted key {head.signer}"
    try:
        signature = base64.b64decode(head.signature, validate=True)
        load_public_key(key).verify(signature, head_bytes(head))
    except (binascii.Error, ValueError, ConfigError, InvalidSignature):
        return f"signature does not verify with trusted key {head.signer}"
    return None


def runs_of(seqs: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """Inclusive runs of consecutive sequences, in order."""
    out: list[tuple[int, int]] = []
    for s in seqs:
        if out and out[-1][1] + 1 == s:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return tuple(out)


def _hex(hashes: Sequence[bytes]) -> tuple[str, ...]:
    return tuple(h.hex() for h in hashes)


async def seals_of(log: EventLog, stream: str) -> list[tuple[Envelope, StreamSealed | None]]:
    """Every seal message of ``stream`` in order; None where it does not decode as a seal."""
    from aqe.errors import EventDecodeError

    out: list[tuple[Envelope, StreamSealed | None]] = []
    async for env in log.read(AUDIT_STREAM, subjects=seal_subject(stream)):
        try:
            event = env.decode()
        except EventDecodeError:
            out.append((env, None))
            continue
        out.append((env, event if isinstance(event, StreamSealed) else None))
    return out


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def seal_stream(
    log: EventLog,
    stream: str,
    private_key: Ed25519PrivateKey,
    *,
    max_leaves: int = MAX_LEAVES_PER_SEAL,
    clock: Callable[[], str] = _now,
    on_progress: Callable[[int], None] | None = None,
) -> list[StreamSealed]:
    """Seal what ``stream`` gained since its last seal; returns the seals appended.

    Nothing new: no seal (an empty list). The previous seal is trusted to be the one
    the chain continues from; ``aqe audit verify`` checks the chain as a whole.

    Raises:
        ConcurrencyError: another sealer appended a seal of this stream meanwhile.
        AuditError: the last seal of the stream does not decode.
    """
    last_env = await log.last(seal_subject(stream))
    size, last_seq, root = 0, 0, EMPTY_ROOT
    frontier: list[bytes] = []
    expected = 0
    if last_env is not None:
        prev = last_env.decode()
        if not isinstance(prev, StreamSealed):
            raise AuditError(f"{AUDIT_STREAM} seq {last_env.seq} is not a seal")
        size, last_seq, root = prev.tree_size, prev.last_seq, bytes.fromhex(prev.root)
        frontier = [bytes.fromhex(h) for h in prev.frontier]
        expected = last_env.seq
    end = await log.last_seq(stream)
    if end <= last_seq:
        return []
    sealed: list[StreamSealed] = []
    seqs: list[int] = []
    leaves: list[bytes] = []
    done = 0

    def close_seal() -> None:
        nonlocal size, last_seq, root, frontier
        new_frontier = extend_frontier(frontier, size, leaves)
        new_root = frontier_root(new_frontier)
        seal = StreamSealed(
            stream=stream,
            tree_size=size + len(leaves),
            root=new_root.hex(),
            last_seq=seqs[-1],
            prev_size=size,
            prev_root=root.hex() if size else "",
            prev_last_seq=last_seq,
            consistency=_hex(consistency_proof_from_frontier(frontier, size, leaves)),
            frontier=_hex(new_frontier),
            runs=runs_of(seqs),
            digests=base64.b64encode(b"".join(h[:DIGEST_BYTES] for h in leaves)).decode(),
            sealed_at=clock(),
        )
        sealed.append(sign_seal(seal, private_key))
        size, last_seq, root, frontier = seal.tree_size, seal.last_seq, new_root, new_frontier
        seqs.clear()
        leaves.clear()

    # Seals are appended once the read is over: a publish waiting for its ack while a
    # large read floods the same connection can time out.
    async for env in log.read(stream, after_seq=last_seq, until_seq=end):
        seqs.append(env.seq)
        leaves.append(message_leaf_hash(env))
        done += 1
        if len(leaves) >= max_leaves:
            close_seal()
        if on_progress is not None and done % 10_000 == 0:
            on_progress(done)
    if leaves:
        close_seal()
    for seal in sealed:
        result = await log.append(
            seal,
            event_id=f"seal-{stream}-{seal.tree_size}-{seal.root[:16]}",
            expected_last_seq=expected,
        )
        expected = result.seq
    if on_progress is not None:
        on_progress(done)
    return sealed


def sealable_streams(specs: Sequence[StreamSpec]) -> list[str]:
    """Every declared stream but the seals' own, by name."""
    return sorted(s.name for s in specs if s.name != AUDIT_STREAM)
