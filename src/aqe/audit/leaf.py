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
import struct
from collections.abc import Mapping

from aqe.events import Envelope, Headers

_sha256 = hashlib.sha256

__all__ = ["LEAF_DOMAIN", "envelope_leaf", "leaf_bytes", "leaf_headers", "message_leaf_hash"]

LEAF_DOMAIN = b"aqe.audit.leaf.v1\x00"
_MSG_ID_LOWER = Headers.MSG_ID.lower()
_U32 = struct.Struct(">I").pack
_U64 = struct.Struct(">Q").pack
# The leaf starts with the domain and the stream's name: the same bytes for every
# message of a stream, built once per stream.
_PREFIXES: dict[str, bytes] = {}
_PREFIXES_MAX = 1024
# Header name -> its length-prefixed bytes in a leaf, or b"" when a leaf leaves it out
# (a handful of names recur on every message).
_NAMES: dict[str, bytes] = {}
_NAMES_MAX = 4096


def _name_entry(name: str) -> bytes:
    entry = _NAMES.get(name)
    if entry is None:
        lower = name.lower()
        kept = not lower.startswith("nats-") or lower == _MSG_ID_LOWER
        raw = name.encode("utf-8")
        entry = _U32(len(raw)) + raw if kept else b""
        if len(_NAMES) < _NAMES_MAX:
            _NAMES[name] = entry
    return entry


def leaf_headers(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """The headers a leaf covers, sorted by name (header names are ASCII tokens)."""
    return sorted((k, v) for k, v in headers.items() if _name_entry(k))


def leaf_bytes(
    stream: str, seq: int, subject: str, headers: Mapping[str, str], data: bytes
) -> bytes:
    """The canonical leaf of one message (module docstring)."""
    prefix = _PREFIXES.get(stream)
    if prefix is None:
        raw = stream.encode("utf-8")
        prefix = LEAF_DOMAIN + _U32(len(raw)) + raw
        if len(_PREFIXES) < _PREFIXES_MAX:
            _PREFIXES[stream] = prefix
    subj = subject.encode("utf-8")
    names = tuple(headers)
    plan = _PLANS.get(names)
    if plan is None:
        plan = _plan(names)
    parts = [prefix, _U64(seq), _U32(len(subj)), subj, plan[0]]
    for name, entry in plan[1]:
        v = headers[name].encode("utf-8")
        parts += (entry, _U32(len(v)), v)
    parts += (_U32(len(data)), data)
    return b"".join(parts)


_Plan = tuple[bytes, tuple[tuple[str, bytes], ...]]
# The header names of a message, in the order it has them -> (u32 count of the kept
# ones, the kept ones sorted with their entries): messages of one writer share a few
# such shapes, so the sort happens once per shape.
_PLANS: dict[tuple[str, ...], _Plan] = {}
_PLANS_MAX = 1024


def _plan(names: tuple[str, ...]) -> _Plan:
    kept = tuple(sorted((n, e) for n in names if (e := _name_entry(n))))
    plan = (_U32(len(kept)), kept)
    if len(_PLANS) < _PLANS_MAX:
        _PLANS[names] = plan
    return plan


def envelope_leaf(env: Envelope) -> bytes:
    """The leaf of a stored message."""
    return leaf_bytes(env.stream, env.seq, env.subject, env.headers, env.data)


def message_leaf_hash(env: Envelope) -> bytes:
    """``SHA-256(0x00 || leaf)`` of a stored message (the Merkle leaf hash)."""
    return _sha256(
        b"\x00" + leaf_bytes(env.stream, env.seq, env.subject, env.headers, env.data)
    ).digest()
