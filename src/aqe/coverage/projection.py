"""The coverage projection: per file and line which tests cover it, per test what it
covers, per run the totals.

Folds ``AQE_COVERAGE`` (the :class:`~aqe.events.coverage.CoverageRecorded` chunks) and
``AQE_TESTS`` (only the runs' ``TestRunFinished`` markers) into a :class:`CoverageState`.

Whole runs or none. A run's chunks wait in ``pending`` until all ``chunks`` of them are
in and, for coverage a test run collected (``awaits_run``), the run's
``TestRunFinished`` is in the log too; then the run is applied at once. A run whose
marker says ``interrupted`` (its session was killed; the marker came from its spool)
is discarded, and so is coverage of a run that never finishes: it stays pending.

Newest wins, by log position. Each run is ordered by the ``AQE_COVERAGE`` sequence of
its first chunk (``RunCoverage.seq``). A file's statements, executed lines and branches
are those of the newest applied run that measured it; a test's lines are those of the
newest applied run that ran it (its older lines are dropped from every file). Since
"newest" is a log position, not the moment a run completed, the state does not depend
on how the two streams interleave: rebuilding from zero equals folding incrementally.

``FileState.changes`` counts how often the file's statement set differed between
consecutive measurements (of the last :data:`FINGERPRINTS` kept): a cheap, log-only
signal of churn that :func:`aqe.coverage.queries.gaps` weighs in.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Iterator

import msgspec

from aqe.coverage.measured import decode_branches, encode_branches, merge_entries
from aqe.events import Envelope, Event, TestRunFinished
from aqe.events.coverage import (
    CoverageRecorded,
    FileCoverage,
    TestLines,
    delta_decode,
    delta_encode,
)

__all__ = [
    "FINGERPRINTS",
    "CoverageProjection",
    "CoverageState",
    "FileState",
    "PendingRun",
    "RunCoverage",
    "TestCoverage",
    "fold_events",
]

FINGERPRINTS = 20
"""Statement-set fingerprints kept per file (newest by log position)."""

_ENCODER = msgspec.json.Encoder(order="sorted")


class FileState(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One file now: the newest measurement of it and each test's newest lines in it."""

    statements: tuple[int, ...] = ()
    """Delta-encoded executable lines."""
    executed: tuple[int, ...] = ()
    branches: tuple[int, ...] = ()
    """``(line delta, exits, taken)`` triples."""
    seq: int = 0
    """``RunCoverage.seq`` of the run these numbers came from."""
    run_id: str = ""
    tests: dict[str, tuple[int, ...]] = msgspec.field(default_factory=dict)
    """Test id -> delta-encoded lines it ran in this file (its newest run)."""
    fingerprints: list[tuple[int, str]] = msgspec.field(default_factory=list)
    """``(run seq, digest of the statements)``, oldest first, at most FINGERPRINTS."""
    changes: int = 0


class TestCoverage(msgspec.Struct, kw_only=True):
    """Where a test's newest coverage came from and which files it touched."""

    __test__ = False

    seq: int
    run_id: str
    files: list[str] = msgspec.field(default_factory=list)


class RunCoverage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One run's coverage totals (applied, or discarded when its run was interrupted)."""

    run_id: str
    seq: int = 0
    source: str = ""
    commit: str | None = None
    status: str = "applied"
    """``applied`` or ``discarded`` (the run was interrupted)."""
    files: int = 0
    statements: int = 0
    covered: int = 0
    branches: int = 0
    """Branch exits (the ways out of every branch line)."""
    taken: int = 0
    tests: int = 0
    per_test: bool = False


class PendingRun(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Chunks of a run not applied yet."""

    chunks: int
    awaits_run: bool = True
    source: str = ""
    commit: str | None = None
    per_test: bool = False
    parts: dict[str, tuple[int, tuple[FileCoverage, ...]]] = msgspec.field(default_factory=dict)
    """Chunk index (as a string: JSON keys) -> (its stream sequence, its files)."""


class CoverageState(msgspec.Struct, kw_only=True):
    """Files by path, tests by id, runs by id, and what still waits."""

    files: dict[str, FileState] = msgspec.field(default_factory=dict)
    tests: dict[str, TestCoverage] = msgspec.field(default_factory=dict)
    runs: dict[str, RunCoverage] = msgspec.field(default_factory=dict)
    pending: dict[str, PendingRun] = msgspec.field(default_factory=dict)
    finished: dict[str, bool] = msgspec.field(default_factory=dict)
    """Run id -> interrupted, for every ``TestRunFinished`` seen."""


class CoverageProjection:
    """Folds ``AQE_COVERAGE`` and the run markers of ``AQE_TESTS`` into a
    :class:`CoverageState`."""

    name: str = "coverage"
    version: int = 1
    streams: tuple[str, ...] = ("AQE_COVERAGE", "AQE_TESTS")

    def __init__(self) -> None:
        self._decoder = msgspec.json.Decoder(CoverageState)

    def initial(self) -> CoverageState:
        """Nothing measured."""
        return CoverageState()

    def apply(self, state: CoverageState, envelope: Envelope, event: Event) -> CoverageState:
        """Fold a coverage chunk or a run's finish marker (other events are ignored)."""
        if isinstance(event, CoverageRecorded):
            _chunk(state, envelope.seq, event)
        elif isinstance(event, TestRunFinished):
            state.finished[event.run_id] = event.interrupted
            if event.run_id in state.pending:
                _try_release(state, event.run_id)
        return state

    def encode(self, state: CoverageState) -> bytes:
        """Canonical JSON (sorted keys)."""
        return _ENCODER.encode(state)

    def decode(self, data: bytes) -> CoverageState:
        """Parse what :meth:`encode` wrote."""
        return self._decoder.decode(data)


def _chunk(state: CoverageState, seq: int, event: CoverageRecorded) -> None:
    if event.chunks < 1 or not 0 <= event.chunk < event.chunks:
        raise ValueError(f"chunk {event.chunk} of {event.chunks}: not a valid chunk index")
    for entry in event.files:
        _check(entry)
    if event.run_id in state.runs:
        return  # applied (or discarded) already: a repeat changes nothing
    pending = state.pending.get(event.run_id)
    if pending is None:
        pending = state.pending[event.run_id] = PendingRun(
            chunks=event.chunks,
            awaits_run=event.awaits_run,
            source=event.source,
            commit=event.commit,
            per_test=event.per_test,
        )
    elif pending.chunks != event.chunks:
        raise ValueError(
            f"run {event.run_id}: chunk says {event.chunks} chunks, earlier ones {pending.chunks}"
        )
    key = str(event.chunk)
    if key not in pending.parts:
        pending.parts[key] = (seq, event.files)
    _try_release(state, event.run_id)


def _increasing(deltas: tuple[int, ...]) -> bool:
    return not deltas or min(deltas) >= 1


def _check(entry: FileCoverage) -> None:
    """Refuse an entry whose encodings are not canonical (lines ascending, from 1)."""
    if len(entry.branches) % 3:
        raise ValueError(f"{entry.path}: branches are not (line, exits, taken) triples")
    if not (
        _increasing(entry.statements)
        and _increasing(entry.executed)
        and _increasing(entry.branches[0::3])
        and all(_increasing(t.lines) for t in entry.tests)
    ):
        raise ValueError(f"{entry.path}: line deltas must be 1 or more (lines ascending)")


def _try_release(state: CoverageState, run_id: str) -> None:
    pending = state.pending[run_id]
    if pending.awaits_run:
        interrupted = state.finished.get(run_id)
        if interrupted is None:
            return
        if interrupted:
            del state.pending[run_id]
            state.runs[run_id] = RunCoverage(
                run_id=run_id,
                seq=min(seq for seq, _ in pending.parts.values()),
                source=pending.source,
                commit=pending.commit,
                status="discarded",
            )
            return
    if len(pending.parts) < pending.chunks:
        return
    del state.pending[run_id]
    _apply_run(state, run_id, pending)


def _files(pending: PendingRun) -> Iterator[tuple[str, FileCoverage]]:
    """Per path, in path order, the run's entry for it (merged when it was split)."""
    groups: dict[str, list[FileCoverage]] = {}
    for index in sorted(pending.parts, key=int):
        for entry in pending.parts[index][1]:
            groups.setdefault(entry.path, []).append(entry)
    for path in sorted(groups):
        entries = groups[path]
        if len(entries) == 1:
            # Checked canonical on arrival: used as encoded (no decode and re-encode).
            yield path, entries[0]
            continue
        (measured,) = merge_entries(entries)
        yield (
            path,
            FileCoverage(
                path=path,
                statements=delta_encode(measured.statements),
                executed=delta_encode(measured.executed),
                branches=encode_branches(measured.branches),
                tests=tuple(
                    TestLines(test_id=t, lines=delta_encode(lines))
                    for t, lines in sorted(measured.tests.items())
                ),
            ),
        )


def _digest(statements: tuple[int, ...]) -> str:
    return hashlib.sha256(_ENCODER.encode(statements)).hexdigest()[:16]


def _fingerprint(file: FileState, seq: int, digest: str) -> None:
    prints = file.fingerprints
    if any(s == seq for s, _ in prints):
        return
    prints.append((seq, digest))
    prints.sort()
    del prints[:-FINGERPRINTS]
    file.changes = sum(1 for a, b in itertools.pairwise(prints) if a[1] != b[1])


def _apply_run(state: CoverageState, run_id: str, pending: PendingRun) -> None:
    seq = min(s for s, _ in pending.parts.values())
    totals = RunCoverage(
        run_id=run_id,
        seq=seq,
        source=pending.source,
        commit=pending.commit,
        per_test=pending.per_test,
    )
    by_test: dict[str, dict[str, tuple[int, ...]]] = {}
    for path, entry in _files(pending):
        statements = set(delta_decode(entry.statements))
        branches = decode_branches(entry.branches)
        totals.files += 1
        totals.statements += len(statements)
        totals.covered += len(statements.intersection(delta_decode(entry.executed)))
        totals.branches += sum(exits for exits, _ in branches.values())
        totals.taken += sum(taken for _, taken in branches.values())
        file = state.files.get(path)
        if file is None:
            file = state.files[path] = FileState()
        _fingerprint(file, seq, _digest(entry.statements))
        if seq >= file.seq:
            file.statements = entry.statements
            file.executed = entry.executed
            file.branches = entry.branches
            file.seq = seq
            file.run_id = run_id
        for lines in entry.tests:
            by_test.setdefault(lines.test_id, {})[path] = lines.lines
    totals.tests = len(by_test)
    for test_id, per_file in by_test.items():
        old = state.tests.get(test_id)
        if old is not None:
            if old.seq > seq:
                continue  # a newer run's coverage of this test is already in
            for path in old.files:
                held = state.files.get(path)
                if held is not None:
                    held.tests.pop(test_id, None)
        for path, encoded in per_file.items():
            state.files[path].tests[test_id] = encoded
        state.tests[test_id] = TestCoverage(seq=seq, run_id=run_id, files=sorted(per_file))
    state.runs[run_id] = totals


def fold_events(events: Iterable[Event]) -> CoverageState:
    """Fold decoded events (coverage chunks and run markers; others are skipped) in
    order, in memory: for readers that hold the events already (the pytest plugin, the
    escape audit). Sequences are positions in ``events``."""
    projection = CoverageProjection()
    state = projection.initial()
    for seq, event in enumerate(events, start=1):
        if not isinstance(event, CoverageRecorded | TestRunFinished):
            continue
        stream = "AQE_TESTS" if isinstance(event, TestRunFinished) else "AQE_COVERAGE"
        envelope = Envelope(
            stream=stream,
            seq=seq,
            subject="",
            event_id=str(seq),
            event_type=type(event).type_tag(),
            recorded_at_ns=0,
            data=b"",
        )
        state = projection.apply(state, envelope, event)
    return state
