"""Rendering projection states for people (tables, not logic)."""

from __future__ import annotations

from typing import Any

from aqe.cli._context import console


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
    from rich.table import Table

    out = console()
    cps = ", ".join(f"{k}#{v}" for k, v in sorted(checkpoints.items()))
    by_type = Table("event type", "events", title=f"catalog: {state.events} events ({cps})")
    for tag, count in sorted(state.by_type.items(), key=lambda kv: (-kv[1], kv[0])):
        by_type.add_row(tag, str(count))
    out.print(by_type)
    kinds = Table("aggregate kind", "aggregates", "events", "busiest", title="aggregates")
    for kind, entries in sorted(state.aggregates.items()):
        busiest = max(entries.items(), key=lambda kv: (kv[1].events, kv[0]))
        kinds.add_row(
            kind,
            str(len(entries)),
            str(sum(e.events for e in entries.values())),
            f"{busiest[0]} ({busiest[1].events})",
        )
    out.print(kinds)
