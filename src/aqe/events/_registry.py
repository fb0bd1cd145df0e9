"""The type registry: one decoder for every event type, plus upcasters for old tags."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import msgspec

from aqe.errors import EventDecodeError, EventValidationError, UnknownEventTypeError
from aqe.events._base import TAG_FIELD, Event, parse_tag

__all__ = ["EventRegistry", "Upcaster"]

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns the JSON object of an old event version into the next version's object."""


class EventRegistry:
    """Every event type aqe can decode, keyed by tag, with one union decoder.

    Old versions stay decodable forever: an upcaster registered for an old tag
    rewrites the raw JSON object into the next version (setting the new tag), and
    the chain runs until a registered tag is reached.
    """

    def __init__(self, types: Iterable[type[Event]] = ()) -> None:
        self._types: dict[str, type[Event]] = {}
        self._upcasters: dict[str, Upcaster] = {}
        self._decoder: msgspec.json.Decoder[Any] | None = None
        for cls in types:
            self.register(cls)

    @property
    def types(self) -> Mapping[str, type[Event]]:
        """Registered event classes by tag."""
        return dict(self._types)

    def tags(self) -> tuple[str, ...]:
        """Registered tags, sorted."""
        return tuple(sorted(self._types))

    def register(self, cls: type[Event]) -> type[Event]:
        """Add an event class; usable as a class decorator.

        Raises:
            ValueError: for a malformed tag or a tag registered twice.
        """
        tag = cls.type_tag()
        parse_tag(tag)
        if tag in self._types and self._types[tag] is not cls:
            raise ValueError(f"event tag {tag!r} registered twice")
        if not cls.id_field or cls.id_field not in cls.__struct_fields__:
            raise ValueError(f"{cls.__name__}.id_field must name one of its fields")
        self._types[tag] = cls
        self._decoder = None
        return cls

    def register_upcaster(self, old_tag: str, upcaster: Upcaster) -> None:
        """Teach the registry to read an old tag by rewriting it to a newer one."""
        if old_tag in self._types:
            raise ValueError(f"{old_tag!r} is a current type; upcast only retired tags")
        self._upcasters[old_tag] = upcaster

    def _union_decoder(self) -> msgspec.json.Decoder[Any]:
        if self._decoder is None:
            classes = tuple(self._types.values())
            if not classes:
                raise UnknownEventTypeError("<any>", ())
            union: Any = classes[0] if len(classes) == 1 else _union_of(classes)
            self._decoder = msgspec.json.Decoder(union)
        return self._decoder

    def decode(self, data: bytes, *, subject: str = "", seq: int = 0) -> Event:
        """Decode wire bytes into an event, upcasting old versions.

        Raises:
            EventDecodeError: the bytes are not a known, valid event.
        """
        try:
            event: Event = self._union_decoder().decode(data)
        except msgspec.ValidationError as exc:
            return self._decode_slow(data, subject, seq, str(exc))
        except msgspec.DecodeError as exc:
            raise EventDecodeError(subject, seq, f"not JSON: {exc}") from exc
        return event

    def _decode_slow(self, data: bytes, subject: str, seq: int, first_error: str) -> Event:
        try:
            raw = msgspec.json.decode(data)
        except msgspec.DecodeError as exc:  # pragma: no cover - the fast path saw JSON
            raise EventDecodeError(subject, seq, f"not JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise EventDecodeError(subject, seq, "payload is not a JSON object")
        tag = raw.get(TAG_FIELD)
        if tag not in self._upcasters:
            if isinstance(tag, str) and tag not in self._types:
                raise EventDecodeError(subject, seq, f"unknown event type {tag!r}")
            raise EventDecodeError(subject, seq, first_error)
        try:
            return self.from_builtins(raw)
        except (UnknownEventTypeError, EventValidationError) as exc:
            raise EventDecodeError(subject, seq, str(exc)) from exc

    def upcast(self, raw: dict[str, Any]) -> dict[str, Any]:
        """Apply upcasters until the object's tag is a registered one.

        Raises:
            EventValidationError: an upcaster loops, or fails on the old object (a
                missing key or a value of the wrong type in a malformed old message).
        """
        seen: set[str] = set()
        tag = raw.get(TAG_FIELD)
        while isinstance(tag, str) and tag in self._upcasters and tag not in self._types:
            if tag in seen:
                raise EventValidationError(tag, "upcaster loop")
            seen.add(tag)
            try:
                raw = self._upcasters[tag](dict(raw))
            except (KeyError, TypeError, ValueError) as exc:
                # Old messages predate today's validation; a bad one must surface as
                # EventDecodeError (parkable), not as whatever the upcaster tripped on.
                raise EventValidationError(tag, f"upcaster failed: {exc!r}") from exc
            tag = raw.get(TAG_FIELD)
        return raw

    def from_builtins(self, raw: Mapping[str, Any]) -> Event:
        """Build an event from a JSON-like mapping that carries its tag.

        Raises:
            UnknownEventTypeError: the tag is not registered (nor upcastable).
            EventValidationError: the fields do not match the schema.
        """
        obj = self.upcast(dict(raw))
        tag = obj.get(TAG_FIELD)
        if not isinstance(tag, str) or tag not in self._types:
            raise UnknownEventTypeError(str(tag), self.tags())
        try:
            event = msgspec.convert(obj, self._types[tag], strict=True)
        except msgspec.ValidationError as exc:
            raise EventValidationError(tag, str(exc)) from exc
        return event

    def build(self, event_type: str, payload: Mapping[str, Any]) -> Event:
        """Build an event of ``event_type`` from its fields (without the tag).

        Raises:
            UnknownEventTypeError: the type is not registered.
            EventValidationError: the payload does not match the schema.
        """
        if event_type not in self._types and event_type not in self._upcasters:
            raise UnknownEventTypeError(event_type, self.tags())
        if TAG_FIELD in payload and payload[TAG_FIELD] != event_type:
            raise EventValidationError(
                event_type, f"field {TAG_FIELD!r} says {payload[TAG_FIELD]!r}"
            )
        return self.from_builtins({**payload, TAG_FIELD: event_type})


def _union_of(classes: tuple[type[Event], ...]) -> Any:
    union: Any = classes[0]
    for cls in classes[1:]:
        union = union | cls
    return union
