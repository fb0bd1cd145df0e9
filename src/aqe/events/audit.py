"""Events of the audit domain: signed seals over a stream's Merkle tree."""

from __future__ import annotations

from typing import ClassVar

from aqe.events._base import Event

__all__ = ["StreamSealed"]


class StreamSealed(Event, frozen=True, kw_only=True, tag="audit.seal.sealed.v1"):
    """A signed tree head: the Merkle root over a stream's messages up to ``last_seq``.

    Leaves are the stream's messages in sequence order (``aqe.audit.leaf``). Seals of a
    stream chain: ``prev_size``/``prev_root``/``prev_last_seq`` repeat the previous seal
    and ``consistency`` proves its tree is a prefix of this one (RFC 9162 §2.1.4).
    ``frontier`` lets the next seal extend the tree without reading old messages.
    ``runs`` and ``digests`` describe this seal's own range, ``prev_last_seq + 1 ..
    last_seq``: which sequences held a message, and the first 8 bytes of each leaf
    hash, so a verifier names the exact message that changed, went missing or moved.
    The signature (Ed25519, base64) covers :func:`aqe.audit.seal_bytes`.
    """

    id_field: ClassVar[str] = "stream"

    stream: str
    tree_size: int
    root: str
    """Hex SHA-256 root of the first ``tree_size`` leaves."""
    last_seq: int
    """Stream sequence of the last leaf (0 for an empty tree)."""
    prev_size: int = 0
    prev_root: str = ""
    prev_last_seq: int = 0
    consistency: tuple[str, ...] = ()
    """Hex hashes: the consistency proof from ``prev_size`` to ``tree_size``."""
    frontier: tuple[str, ...] = ()
    """Hex roots of the perfect subtrees covering the tree, largest first."""
    runs: tuple[tuple[int, int], ...] = ()
    """Inclusive ``(first, last)`` sequence runs of the messages in this seal's range."""
    digests: str = ""
    """Base64 of 8 bytes per leaf of this seal's range (leaf-hash prefixes), in order."""
    signer: str = ""
    """Key id of the signing key: the first 16 hex digits of SHA-256 of the raw key."""
    public_key: str = ""
    """The signer's raw Ed25519 public key, base64 (trust comes from the verifier's keys)."""
    sealed_at: str = ""
    """When the seal was made, RFC 3339 UTC (``2026-12-07T21:17:14.420891Z``)."""
    signature: str | None = None
