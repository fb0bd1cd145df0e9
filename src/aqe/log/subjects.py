"""Subject grammar ``aqe.<domain>.<aggregate>.<id>.<action>`` and subject-safe ids.

Ids such as pytest node ids contain ``.``, ``/``, ``[``, ``]`` and spaces, which NATS
subject tokens cannot carry (``.`` splits tokens, ``*``/``>`` are wildcards, whitespace
ends the subject). Tokens keep ``[A-Za-z0-9_-]`` as they are and write every other
UTF-8 byte as ``~HH`` (upper-case hex), so encoding is reversible and stable.
"""

from __future__ import annotations

import re

from aqe.events import Event

__all__ = [
    "SUBJECT_PREFIX",
    "decode_token",
    "encode_token",
    "parse_subject",
    "subject_for",
    "subject_matches",
]

SUBJECT_PREFIX = "aqe"

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ESCAPE_RE = re.compile(r"~([0-9A-F]{2})")


def encode_token(value: str) -> str:
    """Encode any non-empty string as one subject token.

    Raises:
        ValueError: for an empty string (an aggregate always has an id).
    """
    if not value:
        raise ValueError("an aggregate id cannot be empty")
    raw = value.encode("utf-8")
    if all(b in _SAFE for b in raw):
        return value
    return "".join(chr(b) if b in _SAFE else f"~{b:02X}" for b in raw)


def decode_token(token: str) -> str:
    """Invert :func:`encode_token`."""
    if "~" not in token:
        return token
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
    parts = event.tag_parts()
    token = encode_token(event.aggregate_id())
    return f"{SUBJECT_PREFIX}.{parts.domain}.{parts.aggregate}.{token}.{parts.action}"


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
