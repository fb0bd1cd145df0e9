"""Events of the patterns domain: the library of reusable test patterns."""

from __future__ import annotations

from typing import ClassVar

from aqe.events._base import Event

__all__ = ["PatternAdded"]


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
