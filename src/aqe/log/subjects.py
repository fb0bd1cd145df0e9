"""Subject grammar ``aqe.<domain>.<aggregate>.<id>.<action>`` and subject-safe ids.

Ids such as pytest node ids contain ``.``, ``/``, ``[``, ``]`` and spaces, which NATS
subject tokens cannot carry (``.`` splits tokens, ``*``/``>`` are wildcards, whitespace
ends the subject). Tokens keep ``[A-Za-z0-9_-]`` as they are and write every other
UTF-8 byte as ``~HH`` (upper-case hex), so encoding is reversible and stable.

Bounded tokens. nats-server refuses a protocol line longer than ``max_control_line``
(4 KiB by default) and drops the connection, and a subject travels in several such
lines: the publish (``HPUB <subject> <reply> ...``), every delivery to a consumer
(``HMSG <subject> <sid> $JS.ACK.<stream>.<consumer>...``) and direct gets
(``$JS.API.DIRECT.GET.<stream>.<subject>``). A test id can be any length, and each
non-ASCII character costs up to 12 token characters (4 UTF-8 bytes as ``~HH``), so a
token is kept to :data:`MAX_TOKEN` characters: an id whose encoding is longer is
written as a readable prefix of its encoding, ``~h`` and 32 hex digits of the
SHA-256 of the whole id (:func:`encode_token`). The full id always stays in the
event's payload. 256 leaves a 5-token subject under 1.3 KiB, so a publish, its
reply inbox and the longest ack subject fit with more than 2.5 KiB to spare.
Short ids keep exactly the encoding they always had, so no existing subject moves;
``~h`` never appears in a reversible token (``~`` is always followed by two
upper-case hex digits there), so a hashed token cannot collide with one.
"""

from __future__ import annotations

import hashlib
import re

from aqe.events import Event

__all__ = [
    "MAX_TOKEN",
    "SUBJECT_PREFIX",
    "decode_token",
    "encode_token",
    "is_hashed_token",
    "parse_subject",
    "subject_for",
    "subject_matches",
]

SUBJECT_PREFIX = "aqe"

MAX_TOKEN = 256
"""Most characters an encoded id token may have; longer encodings are hashed."""

_HASH_MARK = "~h"
_HASH_HEX = 32
# The readable part of a hashed token: what is left after the mark and the digest.
_HASH_PREFIX = MAX_TOKEN - len(_HASH_MARK) - _HASH_HEX

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ESCAPE_RE = re.compile(r"~([0-9A-F]{2})")
# encode_token's ASCII path: str.translate with a list indexed by code point runs in
# C, about 3x faster than the byte loop on pytest node ids.
_ASCII_TABLE = [chr(b) if b in _SAFE else f"~{b:02X}" for b in range(128)]
# "aqe.<domain>.<aggregate>." and ".<action>" per event class; tags are fixed per class.
_AFFIXES: dict[type[Event], tuple[str, str]] = {}


def encode_token(value: str) -> str:
    """Encode any non-empty string as one subject token of at most :data:`MAX_TOKEN` characters.

    Every subject aqe builds from an id goes through here, so this is the one place
    the bound is kept (see the module docstring). Up to the bound the token is the
    reversible ``~HH`` encoding; past it, a prefix of that encoding plus ``~h`` and a
    digest of the whole id.

    Raises:
        ValueError: for an empty string (an aggregate always has an id).
    """
    if not value:
        raise ValueError("an aggregate id cannot be empty")
    if value.isascii():
        token = value.translate(_ASCII_TABLE)
    else:
        # Non-ASCII characters are escaped byte by byte of their UTF-8 encoding.
        token = "".join(chr(b) if b in _SAFE else f"~{b:02X}" for b in value.encode("utf-8"))
    if len(token) <= MAX_TOKEN:
        return token
    prefix = token[:_HASH_PREFIX]
    # Never cut an escape in two: drop a partial "~" or "~H" at the end.
    tilde = prefix.rfind("~", len(prefix) - 2)
    if tilde >= 0:
        prefix = prefix[:tilde]
    digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:_HASH_HEX]
    return f"{prefix}{_HASH_MARK}{digest}"


def is_hashed_token(token: str) -> bool:
    """Whether ``token`` is a hashed (irreversible) encoding of a long id."""
    return len(token) > len(_HASH_MARK) + _HASH_HEX and (
        token[-_HASH_HEX - len(_HASH_MARK) : -_HASH_HEX] == _HASH_MARK
    )


def decode_token(token: str) -> str:
    """Invert :func:`encode_token`.

    Raises:
        ValueError: for a hashed token: the id it stands for is only in the payload.
    """
    if "~" not in token:
        return token
    if is_hashed_token(token):
        raise ValueError(
            f"{token[:40]}... is a hashed id token; the full id is in the event's payload"
        )
    out = bytearray()
    pos = 0
    for match in _ESCAPE_RE.finditer(token):
        out += token[pos : match.start()].encode("ascii")
        out.append(int(match.group(1), 16))
        pos = match.end()
    out += token[pos:].encode("ascii")
    return out.decode("utf-8")


def subject_for(event: Event) -> str:
    """The subject an event is appended to: ``aqe.<domain>.<aggregate>.<id>.<action>``."""
    cls = type(event)
    affixes = _AFFIXES.get(cls)
    if affixes is None:
        parts = cls.tag_parts()
        affixes = (f"{SUBJECT_PREFIX}.{parts.domain}.{parts.aggregate}.", f".{parts.action}")
        _AFFIXES[cls] = affixes
    return affixes[0] + encode_token(event.aggregate_id()) + affixes[1]


def parse_subject(subject: str) -> tuple[str, str, str, str]:
    """Split an aqe subject into (domain, aggregate, id, action), decoding the id.

    Raises:
        ValueError: when the subject does not follow the grammar.
    """
    tokens = subject.split(".")
    if len(tokens) != 5 or tokens[0] != SUBJECT_PREFIX:
        raise ValueError(f"{subject!r} is not aqe.<domain>.<aggregate>.<id>.<action>")
    return tokens[1], tokens[2], decode_token(tokens[3]), tokens[4]


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching: ``*`` is one token, a final ``>`` one or more."""
    p_tokens = pattern.split(".")
    s_tokens = subject.split(".")
    for i, p in enumerate(p_tokens):
        if p == ">":
            return len(s_tokens) > i
        if i >= len(s_tokens):
            return False
        if p != "*" and p != s_tokens[i]:
            return False
    return len(p_tokens) == len(s_tokens)
