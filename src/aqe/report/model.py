"""What a report is made of: sections of figures and tables, each saying where it came from.

A :class:`Figure` is a Plotly figure as plain data (``data`` traces and ``layout``, the
JSON Plotly.js draws), built without importing the ``plotly`` Python package: the
report and the live dashboard hand the same dicts to ``Plotly.newPlot`` /
``Plotly.react``. Every figure and table carries a :class:`Source`: the event types
and the stream sequence range it was computed from.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["Figure", "Section", "Source", "Table", "verdict_strip"]


class Source(msgspec.Struct, frozen=True, kw_only=True):
    """The events a figure was computed from: types, stream, sequence range, projection."""

    events: tuple[str, ...]
    stream: str
    first_seq: int
    last_seq: int
    via: str = ""
    """The projection (or log read) that folded them."""

    def describe(self) -> str:
        """One line for people: ``tests.case.executed.v1 … · AQE_TESTS seq 1-120 · history``."""
        span = (
            f"{self.stream} seq {self.first_seq:,}-{self.last_seq:,}"
            if self.last_seq
            else f"{self.stream}: no events yet"
        )
        via = f" · folded by {self.via}" if self.via else ""
        return f"from {', '.join(self.events)} · {span}{via}"


class Figure(msgspec.Struct, kw_only=True):
    """One Plotly chart."""

    key: str
    """Stable id (the HTML element id; the dashboard updates figures by it)."""
    title: str
    source: Source
    data: list[dict[str, Any]]
    layout: dict[str, Any]
    note: str = ""


class Table(msgspec.Struct, kw_only=True):
    """Rows of text cells; a column named in ``strips`` holds a verdict strip (``pfr…``)."""

    key: str
    title: str
    source: Source
    columns: list[str]
    rows: list[list[str]]
    strips: tuple[str, ...] = ()
    note: str = ""


class Section(msgspec.Struct, kw_only=True):
    """A heading with its figures and tables, in order."""

    key: str
    title: str
    items: list[Figure | Table] = msgspec.field(default_factory=list)
    note: str = ""


def verdict_strip(recent: str, width: int = 30) -> str:
    """A test's newest ``width`` verdicts, oldest first (``recent`` is newest first)."""
    return recent[:width][::-1]
