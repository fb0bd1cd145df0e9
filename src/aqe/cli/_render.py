"""Rendering projection states for people (tables, not logic)."""

from __future__ import annotations

from typing import Any

from aqe.cli._context import console
from aqe.cli._table import Cell, emit_table


def render_state(name: str, state: Any, checkpoints: dict[str, int]) -> None:
    """Print a projection's state; known projections get tables, others JSON."""
    from aqe.projections import CatalogState

    out = console()
    if isinstance(state, CatalogState):
        render_catalog(state, checkpoints)
        return
    import msgspec

    out.print_json(msgspec.json.encode(state).decode())


def render_catalog(state: Any, checkpoints: dict[str, int]) -> None:
    """The catalog: events by type and stream, aggregates by kind."""
    cps = ", ".join(f"{k}#{v}" for k, v in sorted(checkpoints.items()))
    emit_table(
        ["event type", "events"],
        [
            [tag, count]
            for tag, count in sorted(state.by_type.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        title=f"catalog: {state.events} events ({cps})",
    )
    kinds: list[list[Cell]] = []
    for kind, entries in sorted(state.aggregates.items()):
        busiest = max(entries.items(), key=lambda kv: (kv[1].events, kv[0]))
        kinds.append(
            [
                kind,
                len(entries),
                sum(e.events for e in entries.values()),
                f"{busiest[0]} ({busiest[1].events})",
            ]
        )
    emit_table(["aggregate kind", "aggregates", "events", "busiest"], kinds, title="aggregates")
