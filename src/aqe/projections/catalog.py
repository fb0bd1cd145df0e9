"""The catalog projection: what the log holds, by event type, stream and aggregate.

A small, real projection that proves the runtime: for every event it counts the type
and the stream, and keeps per aggregate (``domain.aggregate`` + id) how many events
it has, its first and last stream sequence and its last event type.
"""

from __future__ import annotations

import msgspec

from aqe.events import BridgeApplied, Envelope, Event

__all__ = ["AggregateEntry", "CatalogProjection", "CatalogState"]

_ENCODER = msgspec.json.Encoder(order="sorted")
_DECODER: msgspec.json.Decoder[CatalogState] | None = None


class AggregateEntry(msgspec.Struct, kw_only=True):
    """One aggregate instance as the catalog sees it."""

    events: int = 0
    first_seq: int = 0
    last_seq: int = 0
    last_type: str = ""


class CatalogState(msgspec.Struct, kw_only=True):
    """Counts by type and stream, and every aggregate by kind and id."""

    events: int = 0
    by_type: dict[str, int] = msgspec.field(default_factory=dict)
    by_stream: dict[str, int] = msgspec.field(default_factory=dict)
    aggregates: dict[str, dict[str, AggregateEntry]] = msgspec.field(default_factory=dict)


class CatalogProjection:
    """Folds every domain stream into a :class:`CatalogState`."""

    name = "catalog"
    version = 1

    def __init__(
        self, streams: tuple[str, ...] = ("AQE_AGENTS", "AQE_LEARNING", "AQE_PATTERNS", "AQE_TESTS")
    ):
        self.streams = streams
        # Per event class: (tag, "domain.aggregate"); parsing tags per event is wasted work.
        self._kinds: dict[type[Event], tuple[str, str]] = {}

    def initial(self) -> CatalogState:
        """An empty catalog."""
        return CatalogState()

    def apply(self, state: CatalogState, envelope: Envelope, event: Event) -> CatalogState:
        """Count the event and update its aggregate's entry."""
        if isinstance(event, BridgeApplied):
            return state  # a bridge's local bookkeeping, not a fact of the fleet
        cls = type(event)
        known = self._kinds.get(cls)
        if known is None:
            parts = event.tag_parts()
            known = self._kinds[cls] = (cls.type_tag(), f"{parts.domain}.{parts.aggregate}")
        tag, kind = known
        agg_id = event.aggregate_id()
        state.events += 1
        state.by_type[tag] = state.by_type.get(tag, 0) + 1
        state.by_stream[envelope.stream] = state.by_stream.get(envelope.stream, 0) + 1
        per_kind = state.aggregates.get(kind)
        if per_kind is None:
            per_kind = state.aggregates[kind] = {}
        entry = per_kind.get(agg_id)
        if entry is None:
            entry = per_kind[agg_id] = AggregateEntry(first_seq=envelope.seq)
        entry.events += 1
        entry.last_seq = envelope.seq
        entry.last_type = tag
        return state

    def encode(self, state: CatalogState) -> bytes:
        """Canonical JSON (sorted keys)."""
        return _ENCODER.encode(state)

    def decode(self, data: bytes) -> CatalogState:
        """Parse what :meth:`encode` wrote."""
        global _DECODER
        if _DECODER is None:
            _DECODER = msgspec.json.Decoder(CatalogState)
        return _DECODER.decode(data)
