"""Pieces both EventLog adapters share: headers, subject routing, batch splitting."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TypeVar

from aqe.events import ENVELOPE_VERSION, Headers
from aqe.log.port import MAX_BATCH
from aqe.log.streams import StreamSpec

__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "chunked",
    "event_headers",
    "header_lines",
    "subject_router",
]

DEFAULT_MAX_PAYLOAD = 1024 * 1024
"""nats-server's default max_payload (1 MiB)."""

# The header rules nats-py applies on publish: names are RFC 7230 tokens, values are
# trimmed and CR/LF become spaces. Applying them here keeps both adapters (and the
# pre-encoded batch path) storing exactly what a plain publish would.
_HEADER_NAME_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_NEWLINES = str.maketrans({"\r": " ", "\n": " "})


def _header_value(value: str) -> str:
    value = value.strip()
    if "\n" in value or "\r" in value:
        value = value.translate(_NEWLINES)
    return value


def event_headers(
    event_id: str,
    event_type: str,
    expected_last_seq: int | None,
    extra: Mapping[str, str] | None,
    expected_subject: str | None = None,
) -> dict[str, str]:
    """The headers aqe writes on an event message, cleaned as nats-py would send them.

    ``expected_subject`` moves the ``expected_last_seq`` check from the message's own
    subject to that subject filter (wildcards allowed).

    Raises:
        ValueError: an extra header name that is not a valid header token, a
            negative ``expected_last_seq``, or ``expected_subject`` without it.
    """
    headers: dict[str, str] = {}
    if extra:
        for name, value in extra.items():
            name = name.strip()
            if not name:
                continue
            if not _HEADER_NAME_RE.fullmatch(name):
                raise ValueError(f"invalid header name {name!r}")
            headers[name] = _header_value(value)
    headers[Headers.MSG_ID] = _header_value(event_id)
    headers[Headers.EVENT_TYPE] = event_type
    headers[Headers.ENVELOPE] = ENVELOPE_VERSION
    if expected_last_seq is not None:
        if expected_last_seq < 0:
            raise ValueError("expected_last_seq cannot be negative")
        headers[Headers.EXPECTED_LAST_SUBJECT_SEQ] = str(expected_last_seq)
        if expected_subject is not None:
            headers[Headers.EXPECTED_LAST_SUBJECT_SEQ_SUBJECT] = expected_subject
    elif expected_subject is not None:
        raise ValueError("expected_subject needs expected_last_seq")
    return headers


def header_lines(headers: Mapping[str, str]) -> bytes:
    """``Name: value\\r\\n`` lines of headers built by :func:`event_headers`."""
    return "".join([f"{name}: {value}\r\n" for name, value in headers.items()]).encode()


def _pattern_regex(pattern: str) -> str:
    # Same matching as subjects.subject_matches: "*" is one token, a final ">" one
    # or more tokens.
    tokens = pattern.split(".")
    parts = [re.escape(t) if t not in ("*", ">") else "[^.]*" for t in tokens]
    if tokens[-1] == ">":
        parts[-1] = r"[^.]*(?:\.[^.]*)*"
    return r"\.".join(parts)


def subject_router(specs: Sequence[StreamSpec]) -> Callable[[str], str | None]:
    """A function from subject to the name of the stream that stores it (or None).

    Equivalent to ``stream_for_subject`` (first matching spec wins) but one compiled
    regex instead of splitting the subject once per pattern: about 5x faster, which
    matters when every event of a 1,000-event batch is routed.
    """
    names: list[str] = []
    alternatives: list[str] = []
    for spec in specs:
        for pattern in spec.subjects:
            names.append(spec.name)
            alternatives.append(f"({_pattern_regex(pattern)})")
    if not alternatives:
        return lambda subject: None
    matcher = re.compile("|".join(alternatives)).fullmatch

    def route(subject: str) -> str | None:
        match = matcher(subject)
        if match is None or match.lastindex is None:
            return None
        return names[match.lastindex - 1]

    return route


T = TypeVar("T")


def chunked(items: Sequence[T], size: int = MAX_BATCH) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most ``size`` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
