"""The bytes a log message contributes to the Merkle tree: its leaf.

A leaf binds where a message is (stream, sequence), what it is about (subject), the
headers that carry meaning and its payload. Encoding (``docs/audit-proof-format.md``)::

    "aqe.audit.leaf.v1" 0x00
    str(stream) u64be(seq) str(subject)
    u32be(number of headers) (str(name) str(value))*   -- sorted by name (bytes)
    bytes(data)

where ``str``/``bytes`` are a u32 big-endian length then the UTF-8 bytes. The headers
are every header except the server's own ``Nats-*`` ones, but ``Nats-Msg-Id`` is kept
(the event's id). The server adds ``Nats-*`` headers on some read paths (a direct get
adds ``Nats-Sequence``, ``Nats-Time-Stamp``...) and conditions (``Nats-Expected-*``)
are instructions, not facts; leaving them out makes a leaf the same however the
message is read. The store timestamp is left out too: a seal attests the time by
which the messages it covers existed (its own ``sealed_at``), and an imported copy
keeps every byte of its leaf except the time it was stored again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from aqe.events import Envelope, Headers

__all__ = ["LEAF_DOMAIN", "envelope_leaf", "leaf_bytes", "leaf_headers", "message_leaf_hash"]

LEAF_DOMAIN = b"aqe.audit.leaf.v1\x00"
_MSG_ID_LOWER = Headers.MSG_ID.lower()


def leaf_headers(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """The headers a leaf covers, sorted by name."""
    kept = [
        (k, v)
        for k, v in headers.items()
        if not k.lower().startswith("nats-") or k.lower() == _MSG_ID_LOWER
    ]
    kept.sort(key=lambda kv: kv[0].encode("utf-8"))
    return kept


def _put(out: bytearray, value: bytes) -> None:
    out += len(value).to_bytes(4, "big")
    out += value


def leaf_bytes(
    stream: str, seq: int, subject: str, headers: Mapping[str, str], data: bytes
) -> bytes:
    """The canonical leaf of one message (module docstring)."""
    out = bytearray(LEAF_DOMAIN)
    _put(out, stream.encode("utf-8"))
    out += seq.to_bytes(8, "big")
    _put(out, subject.encode("utf-8"))
    kept = leaf_headers(headers)
    out += len(kept).to_bytes(4, "big")
    for name, value in kept:
        _put(out, name.encode("utf-8"))
        _put(out, value.encode("utf-8"))
    _put(out, data)
    return bytes(out)


def envelope_leaf(env: Envelope) -> bytes:
    """The leaf of a stored message."""
    return leaf_bytes(env.stream, env.seq, env.subject, env.headers, env.data)


def message_leaf_hash(env: Envelope) -> bytes:
    """``SHA-256(0x00 || leaf)`` of a stored message (the Merkle leaf hash)."""
    h = hashlib.sha256(b"\x00")
    h.update(envelope_leaf(env))
    return h.digest()
