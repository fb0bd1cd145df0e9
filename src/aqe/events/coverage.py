"""Events of the coverage domain: what a run's tests executed, file by file.

One :class:`CoverageRecorded` event carries one *chunk* of a run's coverage: a list of
:class:`FileCoverage` entries, small enough together to stay well under the server's
``max_payload``. A run's chunks share the subject ``aqe.coverage.run.<run id>.recorded``
and say how many there are (``chunks``), so a reader knows when it has them all.

Compact encoding. Line numbers are sorted and *delta encoded*: ``(3, 4, 5, 9)`` is
written ``(3, 1, 1, 4)`` (:func:`delta_encode` / :func:`delta_decode`). Branches are
flat triples ``(line delta, exits, taken)``: the branch line (delta encoded like the
lines), how many ways out of it the code has, and how many of them ran. This form is
common to coverage.py (arcs), Cobertura (``condition-coverage``) and LCOV (``BRDA``).

Per test. Where the producer knew which test ran which line (coverage.py dynamic
contexts, one per test), ``tests`` holds per test id the delta-encoded lines it ran in
that file; lines run outside any test (imports, collection) are only in ``executed``.

Splitting. A file's entry may be split over several chunks (a big file with many
tests); entries with the same ``path`` in one run are merged by union, so a split
entry repeats ``statements`` or leaves it empty, either way the meaning is the same.

Commit semantics. A run's coverage counts only when all ``chunks`` chunks are in the
log and, when ``awaits_run`` is true (coverage collected by a test run), the run's
``tests.run.finished.v1`` marker is there too: coverage of a run killed midway is
never half-applied.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterable, Sequence
from typing import ClassVar

import msgspec

from aqe.events._base import Event

__all__ = [
    "CoverageRecorded",
    "FileCoverage",
    "TestLines",
    "delta_decode",
    "delta_encode",
]


def delta_encode(numbers: Iterable[int]) -> tuple[int, ...]:
    """Sorted, distinct ``numbers`` as the first one and then the gaps between them."""
    ordered = sorted(set(numbers))
    # map(operator.sub) runs in C: a fold decodes and encodes millions of these.
    return tuple(map(operator.sub, ordered, [0, *ordered]))


def delta_decode(deltas: Sequence[int]) -> list[int]:
    """Invert :func:`delta_encode`."""
    return list(itertools.accumulate(deltas))


class TestLines(msgspec.Struct, frozen=True, array_like=True):
    """The lines of one file that one test ran: ``[test id, [line deltas...]]``."""

    __test__ = False

    test_id: str
    lines: tuple[int, ...]


class FileCoverage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The coverage of one source file in one run (or a part of it, see the module doc)."""

    path: str
    """The file, relative to the project root, ``/``-separated."""
    statements: tuple[int, ...] = ()
    """Executable lines (delta encoded)."""
    executed: tuple[int, ...] = ()
    """Executable lines that ran (delta encoded)."""
    branches: tuple[int, ...] = ()
    """Flat ``(line delta, exits, taken)`` triples, lines ascending."""
    tests: tuple[TestLines, ...] = ()
    """Per test, the lines it ran here; empty when the producer could not tell."""


class CoverageRecorded(Event, frozen=True, kw_only=True, tag="coverage.run.recorded.v1"):
    """One chunk of the coverage a run measured."""

    id_field: ClassVar[str] = "run_id"

    run_id: str
    chunk: int = 0
    """This chunk's index, 0-based."""
    chunks: int = 1
    """How many chunks the run's coverage has in all."""
    files: tuple[FileCoverage, ...] = ()
    source: str = "coverage.py"
    """What measured it: ``coverage.py``, ``cobertura``, ``lcov``."""
    commit: str | None = None
    per_test: bool = False
    """The producer recorded which test ran which line (``FileCoverage.tests``)."""
    awaits_run: bool = True
    """Count it only once the run's ``TestRunFinished`` is in the log. False for
    coverage ingested on its own (a Cobertura or LCOV report with no test run)."""
