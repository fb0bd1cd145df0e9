"""The base every event Struct derives from, and the rules its tag follows."""

from __future__ import annotations

import hashlib
import re
from typing import ClassVar

import msgspec

__all__ = ["TAG_FIELD", "Event", "TagParts", "parse_tag"]

TAG_FIELD = "event"
"""The JSON field that carries an event's type tag on the wire."""

_TAG_RE = re.compile(
    r"^(?P<domain>[a-z][a-z0-9_]*)\.(?P<aggregate>[a-z][a-z0-9_]*)\."
    r"(?P<action>[a-z][a-z0-9_]*)\.v(?P<version>[1-9][0-9]*)$"
)

# One encoder for ids and the wire: struct fields keep declaration order, dict keys sort.
_ENCODER = msgspec.json.Encoder(order="deterministic")


class TagParts(msgspec.Struct, frozen=True):
    """The four parts of an event type tag ``<domain>.<aggregate>.<action>.v<N>``."""

    domain: str
    aggregate: str
    action: str
    version: int


def parse_tag(tag: str) -> TagParts:
    """Split a type tag into its parts.

    Raises:
        ValueError: when the tag does not follow ``domain.aggregate.action.vN``.
    """
    match = _TAG_RE.match(tag)
    if match is None:
        raise ValueError(f"event tag {tag!r} is not of the form domain.aggregate.action.vN")
    return TagParts(
        domain=match["domain"],
        aggregate=match["aggregate"],
        action=match["action"],
        version=int(match["version"]),
    )


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field=TAG_FIELD, omit_defaults=True):
    """Base of every event: an immutable fact, past tense, with a versioned tag.

    Subclasses set ``tag="<domain>.<aggregate>.<action>.v<N>"`` and ``id_field``, the
    name of the field that identifies the aggregate the event belongs to. The subject
    an event is appended to is derived from the tag and that field, never stored in it.
    """

    id_field: ClassVar[str] = ""

    @classmethod
    def type_tag(cls) -> str:
        """The type tag of this event class (the value of the ``event`` field)."""
        tag = cls.__struct_config__.tag
        if not isinstance(tag, str):
            raise TypeError(f"{cls.__name__} has no string tag")
        return tag

    @classmethod
    def tag_parts(cls) -> TagParts:
        """The tag split into domain, aggregate, action and version."""
        return parse_tag(cls.type_tag())

    def aggregate_id(self) -> str:
        """The id of the aggregate (test case, run, pattern, agent) this event is about."""
        value = getattr(self, self.id_field)
        return str(value)

    def to_json(self) -> bytes:
        """The canonical wire bytes of this event (JSON, tag included)."""
        return _ENCODER.encode(self)

    def default_id(self) -> str:
        """A deterministic id: the same fact always gets the same id.

        It hashes the type tag and the canonical payload, so publishing the same event
        twice is deduplicated by the server while two different facts never collide.
        """
        digest = hashlib.sha256(self.to_json()).hexdigest()
        return digest[:32]
