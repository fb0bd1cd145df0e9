"""Pieces both EventLog adapters share: headers, size checks, batch splitting."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TypeVar

from aqe.events import ENVELOPE_VERSION, Headers
from aqe.log.port import MAX_BATCH

__all__ = ["DEFAULT_MAX_PAYLOAD", "chunked", "event_headers"]

DEFAULT_MAX_PAYLOAD = 1024 * 1024
"""nats-server's default max_payload (1 MiB)."""


def event_headers(
    event_id: str,
    event_type: str,
    expected_last_seq: int | None,
    extra: Mapping[str, str] | None,
) -> dict[str, str]:
    """The headers aqe writes on an event message."""
    headers: dict[str, str] = dict(extra) if extra else {}
    headers[Headers.MSG_ID] = event_id
    headers[Headers.EVENT_TYPE] = event_type
    headers[Headers.ENVELOPE] = ENVELOPE_VERSION
    if expected_last_seq is not None:
        if expected_last_seq < 0:
            raise ValueError("expected_last_seq cannot be negative")
        headers[Headers.EXPECTED_LAST_SUBJECT_SEQ] = str(expected_last_seq)
    return headers


T = TypeVar("T")


def chunked(items: Sequence[T], size: int = MAX_BATCH) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most ``size`` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
