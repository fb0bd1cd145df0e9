"""Where a projection's state and checkpoints live: one file, replaced atomically.

The state and the per-stream checkpoints are written together into a temporary
file, fsynced and renamed over ``state.json``; a kill -9 at any instant leaves
either the previous snapshot or the new one, never a mix, so a resumed run
re-applies exactly the events after the stored checkpoint.

A projection with ``encode_chunks(state)`` (an iterable of byte strings that join to
``encode(state)``) has its state written piece by piece as it is encoded, so a large
state (64 MB of JSON for 200k tests) is never one buffer in memory, let alone two;
:func:`sorted_struct_pieces` makes such pieces for a Struct of dicts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Generic

import msgspec

from aqe.errors import ProjectionError
from aqe.projections.base import Projection, S
from aqe.projections.deadletter import DeadLetter

__all__ = ["MAX_UNPARKED", "Snapshot", "SnapshotStore", "sorted_struct_pieces"]

_FORMAT = 1


class _Header(msgspec.Struct, frozen=True, kw_only=True):
    format: int
    projection: str
    version: int
    checkpoints: dict[str, int]
    events_applied: int = 0
    dead_letters: int = 0
    unparked: list[DeadLetter] = msgspec.field(default_factory=list)
    unparked_total: int = 0


class Snapshot(msgspec.Struct, Generic[S], frozen=True, kw_only=True):
    """A loaded state with the sequences it includes."""

    state: S
    checkpoints: dict[str, int]
    events_applied: int = 0
    dead_letters: int = 0
    unparked: list[DeadLetter] = msgspec.field(default_factory=list)
    """Dead letters the dead-letter stream could not take (``copy == "none"``): where
    each original is and why it was not folded, kept here instead (the first
    :data:`MAX_UNPARKED`)."""
    unparked_total: int = 0
    """How many dead letters could not be parked, all of them counted."""


MAX_UNPARKED = 1000
"""Unparkable dead letters listed in a snapshot; more are only counted."""


class SnapshotStore(Generic[S]):
    """Keeps one projection's snapshot in ``<directory>/state.json``."""

    FILE = "state.json"

    def __init__(self, projection: Projection[S], directory: Path) -> None:
        self.projection = projection
        self.directory = directory

    @property
    def path(self) -> Path:
        """The snapshot file."""
        return self.directory / self.FILE

    def load(self) -> Snapshot[S]:
        """The stored snapshot, or an initial one when nothing (compatible) is stored.

        Raises:
            ProjectionError: the file exists but is not a snapshot of this projection.
        """
        if not self.path.exists():
            return Snapshot(state=self.projection.initial(), checkpoints={})
        try:
            # Header and state read apart: the state's bytes are never sliced (copied)
            # out of a buffer holding the whole file.
            with open(self.path, "rb") as fh:
                line = fh.readline()
                body = fh.read()
            if not line.endswith(b"\n"):
                raise ValueError("no header line")
            header = msgspec.json.decode(line, type=_Header)
        except (ValueError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ProjectionError(
                f"{self.path}: not a snapshot ({exc}); delete it or run `aqe replay`"
            ) from exc
        if header.projection != self.projection.name:
            raise ProjectionError(f"{self.path} belongs to projection {header.projection}")
        if header.format != _FORMAT or header.version != self.projection.version:
            # Another fold version: resume is unsafe, start over from the log.
            return Snapshot(state=self.projection.initial(), checkpoints={})
        try:
            state = self.projection.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ProjectionError(f"{self.path}: state does not decode: {exc}") from exc
        return Snapshot(
            state=state,
            checkpoints=dict(header.checkpoints),
            events_applied=header.events_applied,
            dead_letters=header.dead_letters,
            unparked=list(header.unparked),
            unparked_total=header.unparked_total,
        )

    def save(self, snapshot: Snapshot[S], *, materialize: bool = True) -> None:
        """Write state and checkpoints atomically (temp file, fsync, rename, fsync dir).

        Then, with ``materialize`` and a projection that has ``materialize``, write its
        derived tables for this snapshot.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        header = _Header(
            format=_FORMAT,
            projection=self.projection.name,
            version=self.projection.version,
            checkpoints=dict(sorted(snapshot.checkpoints.items())),
            events_applied=snapshot.events_applied,
            dead_letters=snapshot.dead_letters,
            unparked=snapshot.unparked[:MAX_UNPARKED],
            unparked_total=snapshot.unparked_total,
        )
        tmp = self.directory / f".{self.FILE}.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as fh:
                fh.write(msgspec.json.encode(header) + b"\n")
                self._write_state(fh, snapshot.state)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)  # the previous snapshot stays, whole
            raise
        os.replace(tmp, self.path)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        # Derived tables come after the snapshot: a crash in between leaves tables
        # that say which checkpoints they were built at, so readers see them stale.
        write_tables = getattr(self.projection, "materialize", None)
        if materialize and write_tables is not None:
            write_tables(snapshot.state, self.directory, header.checkpoints)

    def _write_state(self, fh: IO[bytes], state: S) -> None:
        pieces: Callable[[S], Iterator[bytes]] | None = getattr(
            self.projection, "encode_chunks", None
        )
        if pieces is None:
            fh.write(self.projection.encode(state))
            return
        for piece in pieces(state):
            fh.write(piece)

    def exists(self) -> bool:
        """Whether a snapshot file is present."""
        return self.path.exists()

    def describe(self) -> dict[str, Any]:
        """Header fields of the stored snapshot (empty when none) for status output."""
        if not self.path.exists():
            return {}
        with open(self.path, "rb") as fh:
            line = fh.readline()
        try:
            header = msgspec.json.decode(line, type=_Header)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return {}
        out: dict[str, Any] = msgspec.to_builtins(header)
        return out


def sorted_struct_pieces(
    encode: Callable[[Any], bytes], state: msgspec.Struct, *, per_piece: int = 1000
) -> Iterator[bytes]:
    """``encode(state)`` in pieces, for a Struct encoded with sorted keys.

    ``encode`` must be a ``msgspec.json.Encoder(order="sorted")``'s ``encode`` and
    ``state`` a Struct that does not omit defaults. Its fields come in name order; a
    dict-valued field is written ``per_piece`` entries at a time (keys sorted, as the
    encoder sorts them), any other field whole. Joined, the pieces equal
    ``encode(state)`` byte for byte.
    """
    names = sorted(
        zip(
            state.__struct_encode_fields__,
            state.__struct_fields__,
            strict=True,
        )
    )
    for index, (wire_name, field) in enumerate(names):
        yield (b"{" if index == 0 else b",") + encode(wire_name) + b":"
        value = getattr(state, field)
        if not isinstance(value, dict) or not value:
            yield encode(value)
            continue
        keys = sorted(value)
        for start in range(0, len(keys), per_piece):
            entries = b",".join(
                encode(key) + b":" + encode(value[key]) for key in keys[start : start + per_piece]
            )
            yield (b"{" if start == 0 else b",") + entries
        yield b"}"
    yield b"}" if names else b"{}"
