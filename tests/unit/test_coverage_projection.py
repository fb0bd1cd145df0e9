"""Coverage events, chunking and the coverage projection (in-memory log, no I/O)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aqe.coverage.measured import (
    MAX_EVENT_BYTES,
    MeasuredFile,
    coverage_events,
    decode_branches,
    encode_branches,
    measured_from_events,
)
from aqe.coverage.projection import CoverageProjection, CoverageState
from aqe.coverage.queries import file_detail, file_summaries, gaps, line_ranges, overall, test_files
from aqe.events import Envelope, Event, TestRunFinished, TestRunStarted
from aqe.events._catalog import REGISTRY
from aqe.events.coverage import (
    CoverageRecorded,
    FileCoverage,
    TestLines,
    delta_decode,
    delta_encode,
)
from aqe.log import InMemoryEventLog, NewEvent, load_stream_specs
from aqe.projections import MemoryDeadLetters, ProjectionRunner, SnapshotStore


def sample_files(run: int = 0, tests: int = 40) -> list[MeasuredFile]:
    """Two source files, per-test lines that differ by test and by run."""
    core = MeasuredFile(
        path="src/pkg/core.py",
        statements=set(range(1, 60)),
        executed=set(range(1, 50 - run)),
        branches={10: (2, 2), 20: (2, 1), 30: (3, 1 + run % 2)},
        tests={f"tests.test_core.test_{i}": {10 + i % 30, 11 + i % 30, 40} for i in range(tests)},
    )
    util = MeasuredFile(
        path="src/pkg/util.py",
        statements={1, 2, 3, 5, 8},
        executed={1, 2, 3},
        tests={"tests.test_util.test_a": {2, 3}} if run == 0 else {},
    )
    return [core, util]


def test_delta_and_branch_encodings_round_trip() -> None:
    assert delta_encode([9, 3, 4, 5, 4]) == (3, 1, 1, 4)
    assert delta_decode((3, 1, 1, 4)) == [3, 4, 5, 9]
    branches = {7: (2, 1), 3: (3, 3)}
    assert encode_branches(branches) == (3, 3, 3, 4, 2, 1)
    assert decode_branches(encode_branches(branches)) == branches
    with pytest.raises(ValueError, match="triples"):
        decode_branches((1, 2))
    assert line_ranges([1, 2, 3, 7, 9, 10]) == [(1, 3), (7, 7), (9, 10)]


def test_chunks_stay_small_and_merge_back_to_what_was_measured() -> None:
    files = sample_files(tests=400)
    events = coverage_events(files, run_id="r1", chunk_bytes=2_000)
    assert len(events) > 3
    assert [e.chunk for e in events] == list(range(len(events)))
    assert {e.chunks for e in events} == {len(events)}
    assert all(len(e.to_json()) < 4_000 for e in events)
    # The big file's tests were split over several chunks; merged back, nothing is lost.
    assert sum(1 for e in events for f in e.files if f.path == "src/pkg/core.py") > 1
    assert measured_from_events(events) == files
    decoded = [REGISTRY.decode(e.to_json()) for e in events]
    assert decoded == events
    one = coverage_events(files, run_id="r1")
    assert len(one) == 1
    assert one[0].per_test


def test_chunks_stay_under_the_cap_when_the_estimate_is_low() -> None:
    # Sparse lines far apart: every delta has 5-6 digits, twice the estimate.
    sparse = MeasuredFile(
        path="big.py",
        statements=set(range(100_000, 2_000_000, 17)),
        tests={f"t{i}": set(range(100_000 + i, 2_000_000, 99_991)) for i in range(20_000)},
    )
    events = coverage_events([sparse], run_id="r", chunk_bytes=600_000)
    assert len(events) > 1
    assert max(len(e.to_json()) for e in events) <= MAX_EVENT_BYTES
    assert measured_from_events(events) == [sparse]


def envelope(seq: int, event: Event, stream: str = "AQE_COVERAGE") -> Envelope:
    data = event.to_json()
    return Envelope(
        stream=stream,
        seq=seq,
        subject=f"aqe.x.y.{seq}.z",
        event_id=str(seq),
        event_type=type(event).type_tag(),
        data=data,
        recorded_at_ns=seq,
    )


def fold(items: list[tuple[str, Event]]) -> CoverageState:
    proj = CoverageProjection()
    state = proj.initial()
    seqs = {"AQE_COVERAGE": 0, "AQE_TESTS": 0}
    for stream, event in items:
        seqs[stream] += 1
        state = proj.apply(state, envelope(seqs[stream], event, stream), event)
    return state


def test_a_run_shows_only_once_all_chunks_and_its_finish_marker_are_in() -> None:
    proj = CoverageProjection()
    chunks = coverage_events(sample_files(tests=300), run_id="r1", chunk_bytes=3_000)
    assert len(chunks) >= 3
    finished = TestRunFinished(run_id="r1", total=300, passed=300, failed=0)
    # All chunks but the last, then the marker: still nothing.
    partial = fold([("AQE_COVERAGE", c) for c in chunks[:-1]] + [("AQE_TESTS", finished)])
    assert partial.files == {}
    assert partial.tests == {}
    assert "r1" in partial.pending
    # Every chunk, no marker: nothing either (the run may still be killed).
    unfinished = fold([("AQE_COVERAGE", c) for c in chunks])
    assert unfinished.files == {}
    # Both: the whole run at once.
    done = fold([("AQE_COVERAGE", c) for c in chunks] + [("AQE_TESTS", finished)])
    assert done.pending == {}
    assert set(done.files) == {"src/pkg/core.py", "src/pkg/util.py"}
    assert len(done.tests) == 301
    totals = done.runs["r1"]
    assert (totals.statements, totals.covered, totals.branches, totals.taken) == (64, 52, 7, 4)
    # The marker first and the chunks in reverse order fold to the same state.
    reverse = fold([("AQE_TESTS", finished)] + [("AQE_COVERAGE", c) for c in reversed(chunks)])
    assert proj.encode(reverse) == proj.encode(done)


def test_coverage_of_an_interrupted_run_is_discarded_not_half_applied() -> None:
    chunks = coverage_events(sample_files(), run_id="killed", chunk_bytes=1_000)
    marker = TestRunFinished(run_id="killed", total=3, passed=3, failed=0, interrupted=True)
    state = fold(
        [("AQE_COVERAGE", chunks[0]), ("AQE_TESTS", marker)]
        + [("AQE_COVERAGE", c) for c in chunks[1:]]
    )
    assert state.files == {}
    assert state.tests == {}
    assert state.pending == {}
    assert state.runs["killed"].status == "discarded"


def test_standalone_reports_need_no_run_marker() -> None:
    (event,) = coverage_events(sample_files(), run_id="lcov-1", source="lcov", awaits_run=False)
    state = fold([("AQE_COVERAGE", event)])
    assert state.runs["lcov-1"].source == "lcov"
    assert "src/pkg/util.py" in state.files


def test_the_newest_run_wins_per_file_and_per_test() -> None:
    items: list[tuple[str, Event]] = []
    for run in range(3):
        items += [("AQE_COVERAGE", e) for e in coverage_events(sample_files(run), run_id=f"r{run}")]
        items.append(("AQE_TESTS", TestRunFinished(run_id=f"r{run}", total=1, passed=1, failed=0)))
    state = fold(items)
    core = state.files["src/pkg/core.py"]
    assert core.run_id == "r2"
    assert len(delta_decode(core.executed)) == 47
    # test_util.test_a ran only in r0: its coverage is still r0's.
    assert state.tests["tests.test_util.test_a"].run_id == "r0"
    assert test_files(state, "tests.test_util.test_a") == {"src/pkg/util.py": [2, 3]}
    assert state.tests["tests.test_core.test_1"].run_id == "r2"
    # Run r1 completing after r2 (its marker last) changes nothing: r2 is newer in the log.
    late = [i for i in items if not (isinstance(i[1], TestRunFinished) and i[1].run_id == "r1")]
    late.append(("AQE_TESTS", TestRunFinished(run_id="r1", total=1, passed=1, failed=0)))
    proj = CoverageProjection()
    assert proj.encode(fold(late)) == proj.encode(state)


def test_queries_detail_summaries_and_gaps() -> None:
    items: list[tuple[str, Event]] = [
        ("AQE_COVERAGE", e) for e in coverage_events(sample_files(), run_id="r0")
    ]
    items.append(("AQE_TESTS", TestRunFinished(run_id="r0", total=1, passed=1, failed=0)))
    state = fold(items)
    detail = file_detail(state, "src/pkg/util.py")
    assert detail is not None
    assert detail.missing == [5, 8]
    assert detail.lines == {1: [], 2: ["tests.test_util.test_a"], 3: ["tests.test_util.test_a"]}
    assert file_detail(state, "nope.py") is None
    summaries = file_summaries(state)
    assert [s.path for s in summaries] == ["src/pkg/core.py", "src/pkg/util.py"]
    assert summaries[1].line_pct == pytest.approx(60.0)
    total = overall(summaries)
    assert total["statements"] == 64
    # core.py misses 10 statements and 3 branch exits, util.py 2: core first, unless the
    # tests covering util.py failed often.
    assert [g.path for g in gaps(state)] == ["src/pkg/core.py", "src/pkg/util.py"]
    weighted = gaps(state, failures={"tests.test_util.test_a": 100})
    assert weighted[0].path == "src/pkg/util.py"
    assert weighted[0].missing_lines == [(5, 5), (8, 8)]


def test_bad_chunks_are_refused_before_anything_changes() -> None:
    proj = CoverageProjection()
    state = proj.initial()
    bad = CoverageRecorded(run_id="r", chunk=2, chunks=2)
    with pytest.raises(ValueError, match="chunk 2 of 2"):
        proj.apply(state, envelope(1, bad), bad)
    unsorted = CoverageRecorded(
        run_id="r", files=(FileCoverage(path="a.py", statements=(3, 0, 2)),)
    )
    with pytest.raises(ValueError, match=r"a\.py: line deltas must be 1 or more"):
        proj.apply(state, envelope(2, unsorted), unsorted)
    backwards = CoverageRecorded(
        run_id="r",
        files=(FileCoverage(path="b.py", tests=(TestLines(test_id="t", lines=(5, -2)),)),),
    )
    with pytest.raises(ValueError, match=r"b\.py: line deltas"):
        proj.apply(state, envelope(3, backwards), backwards)
    assert proj.encode(state) == proj.encode(proj.initial())


async def seeded(runs: int = 4) -> InMemoryEventLog:
    log = InMemoryEventLog(load_stream_specs())
    for run in range(runs):
        run_id = f"run-{run}"
        await log.append(TestRunStarted(run_id=run_id))
        chunks = coverage_events(sample_files(run % 2, tests=60), run_id=run_id, chunk_bytes=800)
        await log.append_many([NewEvent(event=e) for e in chunks])
        if run != 2:  # run-2 was killed: no marker
            await log.append(TestRunFinished(run_id=run_id, total=60, passed=60, failed=0))
    return log


def coverage_runner(log: InMemoryEventLog, directory: Path) -> ProjectionRunner[CoverageState]:
    proj = CoverageProjection()
    return ProjectionRunner(proj, log, SnapshotStore(proj, directory), MemoryDeadLetters())


async def test_incremental_equals_rebuild_from_zero(tmp_path: Path) -> None:
    log = await seeded()
    for tests_until, cov_until in [(1, 3), (2, 9), (5, 10), (6, 25), (8, 30), (99, 10_000)]:
        await coverage_runner(log, tmp_path / "inc").run(
            until={"AQE_TESTS": tests_until, "AQE_COVERAGE": cov_until}
        )
    await coverage_runner(log, tmp_path / "full").run()
    proj = CoverageProjection()
    inc = SnapshotStore(proj, tmp_path / "inc").load().state
    full = SnapshotStore(proj, tmp_path / "full").load().state
    assert proj.encode(inc) == proj.encode(full)
    assert set(full.runs) == {"run-0", "run-1", "run-3"}
    assert "run-2" in full.pending
