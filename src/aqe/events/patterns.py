"""Events of the patterns domain: the library of reusable test patterns."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from aqe.events._base import Event

__all__ = ["PatternAdded", "PatternDeprecated", "PatternUpdated", "PatternUsed"]


class PatternAdded(Event, frozen=True, kw_only=True, tag="patterns.pattern.added.v1"):
    """A test pattern entered the library."""

    id_field: ClassVar[str] = "pattern_id"

    pattern_id: str
    name: str
    code: str
    description: str = ""
    category: str = ""
    language: str = "python"
    framework: str = ""
    tags: tuple[str, ...] = ()


class PatternUpdated(Event, frozen=True, kw_only=True, tag="patterns.pattern.updated.v1"):
    """Fields of a pattern changed; a field left out (None) keeps its value."""

    id_field: ClassVar[str] = "pattern_id"

    pattern_id: str
    name: str | None = None
    code: str | None = None
    description: str | None = None
    category: str | None = None
    language: str | None = None
    framework: str | None = None
    tags: tuple[str, ...] | None = None


class PatternDeprecated(Event, frozen=True, kw_only=True, tag="patterns.pattern.deprecated.v1"):
    """A pattern should no longer be recommended; searches leave it out."""

    id_field: ClassVar[str] = "pattern_id"

    pattern_id: str
    reason: str = ""
    replaced_by: str | None = None


class PatternUsed(Event, frozen=True, kw_only=True, tag="patterns.pattern.used.v1"):
    """Someone (a person or an agent) applied a pattern, and how it went."""

    id_field: ClassVar[str] = "pattern_id"

    pattern_id: str
    outcome: Literal["success", "failure", "abandoned"] = "success"
    used_by: str | None = None
    context: str | None = None
    at: datetime | None = None
