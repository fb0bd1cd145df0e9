"""Coverage as measured, before it becomes events: :class:`MeasuredFile` and chunking.

Every producer (coverage.py data, Cobertura XML, LCOV) builds a list of
:class:`MeasuredFile`; :func:`coverage_events` turns it into the run's
:class:`~aqe.events.coverage.CoverageRecorded` chunks, each encoded well under the
server's ``max_payload``. :func:`measured_from_events` is the inverse (for tests and
for tools that read one run back).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import msgspec

from aqe.events.coverage import (
    CoverageRecorded,
    FileCoverage,
    TestLines,
    delta_decode,
    delta_encode,
)

__all__ = [
    "CHUNK_BYTES",
    "MAX_EVENT_BYTES",
    "MeasuredFile",
    "coverage_events",
    "decode_branches",
    "encode_branches",
    "measured_from_events",
    "merge_entries",
]

CHUNK_BYTES = 256 * 1024
"""Target size of one chunk's encoded files (the server's default max_payload is 1 MiB)."""
MAX_EVENT_BYTES = 768 * 1024
"""No chunk is encoded larger: the size estimate is checked and chunks made smaller."""

# Roughly what an encoded number costs in JSON (digits and a comma), to size chunks
# without encoding every candidate twice.
_NUMBER_BYTES = 3


@dataclass
class MeasuredFile:
    """One file's coverage in one run: plain sets, easy to build and to merge."""

    path: str
    statements: set[int] = field(default_factory=set)
    executed: set[int] = field(default_factory=set)
    branches: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Branch line -> (exits, taken)."""
    tests: dict[str, set[int]] = field(default_factory=dict)
    """Test id -> lines of this file it ran."""

    def merge(self, other: MeasuredFile) -> None:
        """Union ``other`` (same path) into this one."""
        self.statements |= other.statements
        self.executed |= other.executed
        for line, (exits, taken) in other.branches.items():
            old = self.branches.get(line)
            self.branches[line] = (
                (exits, taken) if old is None else (max(old[0], exits), max(old[1], taken))
            )
        for test_id, lines in other.tests.items():
            self.tests.setdefault(test_id, set()).update(lines)


def encode_branches(branches: dict[int, tuple[int, int]]) -> tuple[int, ...]:
    """Flat ``(line delta, exits, taken)`` triples, lines ascending."""
    out: list[int] = []
    previous = 0
    for line in sorted(branches):
        exits, taken = branches[line]
        out += (line - previous, exits, taken)
        previous = line
    return tuple(out)


def decode_branches(flat: Sequence[int]) -> dict[int, tuple[int, int]]:
    """Invert :func:`encode_branches`.

    Raises:
        ValueError: a length that is not a multiple of three.
    """
    if len(flat) % 3:
        raise ValueError(f"branches hold {len(flat)} numbers, not (line, exits, taken) triples")
    out: dict[int, tuple[int, int]] = {}
    line = 0
    for i in range(0, len(flat), 3):
        line += flat[i]
        out[line] = (flat[i + 1], flat[i + 2])
    return out


def _entries(measured: MeasuredFile, budget: int) -> Iterator[tuple[FileCoverage, int]]:
    """The file as one entry, or split over several when its tests alone pass ``budget``."""
    head = FileCoverage(
        path=measured.path,
        statements=delta_encode(measured.statements),
        executed=delta_encode(measured.executed),
        branches=encode_branches(measured.branches),
    )
    size = (
        64
        + len(measured.path)
        + _NUMBER_BYTES * (len(head.statements) + len(head.executed) + len(head.branches))
    )
    tests: list[TestLines] = []
    for test_id in sorted(measured.tests):
        lines = TestLines(test_id=test_id, lines=delta_encode(measured.tests[test_id]))
        cost = 8 + len(test_id) + _NUMBER_BYTES * len(lines.lines)
        if tests and size + cost > budget:
            yield msgspec.structs.replace(head, tests=tuple(tests)), size
            # Continuation entries carry only the path and more tests (merged by union).
            head = FileCoverage(path=measured.path)
            size = 64 + len(measured.path)
            tests = []
        tests.append(lines)
        size += cost
    yield msgspec.structs.replace(head, tests=tuple(tests)), size


def coverage_events(
    files: Iterable[MeasuredFile],
    *,
    run_id: str,
    source: str = "coverage.py",
    commit: str | None = None,
    awaits_run: bool = True,
    chunk_bytes: int = CHUNK_BYTES,
) -> list[CoverageRecorded]:
    """A run's coverage as its chunks, files in path order.

    Args:
        files: what was measured (paths relative to the project root).
        run_id: the run the coverage belongs to (the test run's id when ``awaits_run``).
        source: what measured it (``coverage.py``, ``cobertura``, ``lcov``).
        commit: the commit measured, when known.
        awaits_run: hold the coverage until the run's ``TestRunFinished`` is in the log.
        chunk_bytes: about how many encoded bytes one chunk's files may take.

    Returns:
        At least one event (an empty run still says "nothing was measured"); each
        encodes to at most :data:`MAX_EVENT_BYTES` unless one file's own line lists do.
    """
    ordered = sorted(files, key=lambda f: f.path)
    while True:
        events = _chunked(ordered, run_id, source, commit, awaits_run, chunk_bytes)
        # Sizes are estimated (about 3 bytes a number); numbers with more digits can
        # push a chunk past it: check the real size, and halve the target if need be.
        if chunk_bytes <= 4096 or max(len(e.to_json()) for e in events) <= MAX_EVENT_BYTES:
            return events
        chunk_bytes //= 2


def _chunked(
    ordered: list[MeasuredFile],
    run_id: str,
    source: str,
    commit: str | None,
    awaits_run: bool,
    chunk_bytes: int,
) -> list[CoverageRecorded]:
    groups: list[list[FileCoverage]] = [[]]
    used = 0
    per_test = False
    for measured in ordered:
        per_test = per_test or bool(measured.tests)
        for entry, size in _entries(measured, chunk_bytes):
            if groups[-1] and used + size > chunk_bytes:
                groups.append([])
                used = 0
            groups[-1].append(entry)
            used += size
    return [
        CoverageRecorded(
            run_id=run_id,
            chunk=index,
            chunks=len(groups),
            files=tuple(group),
            source=source,
            commit=commit,
            per_test=per_test,
            awaits_run=awaits_run,
        )
        for index, group in enumerate(groups)
    ]


def merge_entries(entries: Iterable[FileCoverage]) -> list[MeasuredFile]:
    """File entries (of one run's chunks) merged per path, in path order."""
    merged: dict[str, MeasuredFile] = {}
    for entry in entries:
        part = MeasuredFile(
            path=entry.path,
            statements=set(delta_decode(entry.statements)),
            executed=set(delta_decode(entry.executed)),
            branches=decode_branches(entry.branches),
            tests={t.test_id: set(delta_decode(t.lines)) for t in entry.tests},
        )
        old = merged.get(entry.path)
        if old is None:
            merged[entry.path] = part
        else:
            old.merge(part)
    return [merged[path] for path in sorted(merged)]


def measured_from_events(events: Iterable[CoverageRecorded]) -> list[MeasuredFile]:
    """The files of a run's chunks, merged per path, in path order."""
    return merge_entries(entry for event in events for entry in event.files)
