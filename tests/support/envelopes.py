"""Envelopes for pure fold tests: an event as a stream would hand it to a projection."""

from __future__ import annotations

from aqe.events import Envelope, Event
from aqe.log.subjects import subject_for


def envelope(event: Event, seq: int, stream: str = "AQE_PERF") -> Envelope:
    """``event`` at ``seq`` of ``stream`` (id ``e<seq>``, recorded at ``seq`` µs)."""
    return Envelope(
        stream=stream,
        subject=subject_for(event),
        seq=seq,
        event_id=f"e{seq}",
        event_type=event.type_tag(),
        recorded_at_ns=1_000 * seq,
        data=event.to_json(),
    )
