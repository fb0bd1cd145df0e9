"""What a projection is: an initial state and a pure fold over envelopes.

A projection never does I/O, reads a clock or draws random numbers inside
``apply``; the runner owns reading the log, checkpoints, sinks and dead letters.
``apply`` may update the state in place and return it, but it must validate before
it mutates: when it raises, the runner parks the event as a dead letter and goes
on with the state as it was.

A projection may also define ``materialize(state, directory, checkpoints)``: the
snapshot store calls it after each saved snapshot to write derived, queryable copies
of the state (LanceDB tables, see :mod:`aqe.projections.tables`) beside it.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from aqe.events import Envelope, Event

__all__ = ["Projection", "S"]

S = TypeVar("S")


class Projection(Protocol[S]):
    """A deterministic fold of one or more streams into a state."""

    name: str
    """Unique name; also the projection's directory under ``<data>/projections``."""

    streams: tuple[str, ...]
    """Streams folded, each with its own checkpoint. The result must not depend on
    how events of different streams interleave (aggregates never span streams)."""

    version: int
    """Bumped when the fold changes meaning; a stored state of another version is
    rebuilt from the log instead of being resumed."""

    def initial(self) -> S:
        """A fresh, empty state."""
        ...

    def apply(self, state: S, envelope: Envelope, event: Event) -> S:
        """Fold one decoded event into the state and return the state."""
        ...

    def encode(self, state: S) -> bytes:
        """Canonical bytes of a state (equal states give equal bytes)."""
        ...

    def decode(self, data: bytes) -> S:
        """Invert :meth:`encode`."""
        ...
