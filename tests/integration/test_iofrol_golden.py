"""Golden check: the history projection reproduces every IOF/ROL row's ``LastResults``.

The ABB IOF/ROL CI history (``../shared/data/iofrol.csv``, or ``$AQE_IOFROL``) goes
through a real nats-server cycle by cycle: the cycle's runs as atomic batches
(``append_batch``), then the real ``ProjectionRunner`` folds ``HistoryProjection`` into
a ``SnapshotStore`` up to the cycle's last event (``run(until=...)``), which is just
before the next cycle's ``TestRunStarted``. There every row of the cycle must find its
``LastResults`` (earlier verdicts, newest first, 1 = failed) in
``state.tests[test_id].recent`` (``p``/``r`` = 0, ``f``/``e`` = 1): 32,260 of 32,260.

A test may run several times in one cycle (each execution is a run of its own, see
:mod:`aqe.ingest.iofrol`), so after the cycle the ``j``-th of a test's ``m`` executions
there is ``recent[m - 1 - j]`` and its ``LastResults`` are ``recent[m - j:]``: the same
verdicts a stop just before that execution's run would show, checked with one stop per
cycle, and the row's own ``Verdict`` is checked as well.

Appends and folds alternate instead of appending everything first: a bounded read
(``until_seq``) of ``JetStreamEventLog`` is an ordered consumer that the server keeps
pushing to the stream's end, so stopping 320 times in a full log makes the client
receive about 5 million messages (minutes instead of seconds). ``verify`` at the end
rebuilds from sequence 1 over the whole log in one pass.
"""

from __future__ import annotations

import time
from pathlib import Path

import nats
import pytest

from aqe.ingest.iofrol import (
    IofrolRow,
    cycle_events,
    find_iofrol,
    iofrol_test_id,
    read_iofrol,
    split_runs,
)
from aqe.log import NewEvent, load_stream_specs
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.projections import MemoryDeadLetters, ProjectionRunner, SnapshotStore
from aqe.projections.history import DEPTH, HistoryProjection, HistoryState
from aqe.projections.replay import verify

pytestmark = [pytest.mark.nats, pytest.mark.timeout(300)]

ROWS = 32_260
CYCLES = 320
TESTS = 1_941
STREAM = "AQE_TESTS"
_BIT = {"p": 0, "r": 0, "f": 1, "e": 1}


@pytest.fixture(scope="module")
def rows() -> list[IofrolRow]:
    path = find_iofrol()
    if path is None:
        pytest.skip("$AQE_IOFROL names no file (unset it to use data/iofrol.csv.gz)")
    return read_iofrol(path)


def _mismatches(state: HistoryState, cycle_rows: list[IofrolRow]) -> list[str]:
    """Rows of one cycle whose verdict or ``LastResults`` the state does not show."""
    executions: dict[str, list[IofrolRow]] = {}
    for row in cycle_rows:
        executions.setdefault(row.name, []).append(row)
    out = []
    for name, rows_of_test in executions.items():
        test = state.tests.get(iofrol_test_id(name))
        bits = [_BIT.get(v, -1) for v in (test.recent if test is not None else "")]
        m = len(rows_of_test)
        for j, row in enumerate(rows_of_test):
            own = bits[m - 1 - j] if m - 1 - j < len(bits) else None
            before = bits[m - j :]
            if own == row.verdict and before == list(row.last_results[: DEPTH - (m - j)]):
                continue
            out.append(
                f"line {row.line} (cycle {row.cycle}, test {name}, execution {j + 1} of {m}): "
                f"Verdict {row.verdict}, LastResults {list(row.last_results)}; "
                f"projection: {own}, {before}"
            )
    return out


async def _fold_to(runner: ProjectionRunner[HistoryState], seq: int) -> None:
    """Run until the checkpoint reaches ``seq``; a short read is a failure."""
    stats = await runner.run(until={STREAM: seq})
    assert stats.checkpoints.get(STREAM, 0) == seq, f"the runner stopped short of {seq}"


def test_the_file_is_the_published_one(rows: list[IofrolRow]) -> None:
    assert len(rows) == ROWS
    assert len({r.cycle for r in rows}) == CYCLES
    assert len({r.name for r in rows}) == TESTS


async def test_history_reproduces_every_last_results(
    rows: list[IofrolRow], nats_url: str, tmp_path: Path
) -> None:
    started = time.perf_counter()
    by_cycle: dict[int, list[IofrolRow]] = {}
    for row in rows:
        by_cycle.setdefault(row.cycle, []).append(row)
    runs = split_runs(rows)
    root = tmp_path / "projections"
    projection = HistoryProjection()
    dead = MemoryDeadLetters()
    append_s = fold_s = 0.0
    checked = 0
    mismatches: list[str] = []
    nc = await nats.connect(nats_url)
    try:
        specs = load_stream_specs()
        await apply_streams(nc, specs)
        log = JetStreamEventLog(nc, specs)
        runner = ProjectionRunner(
            projection, log, SnapshotStore(projection, root / projection.name), dead
        )
        for cycle, events in cycle_events(rows):
            t0 = time.perf_counter()
            result = await log.append_batch([NewEvent(event=e) for e in events])
            t1 = time.perf_counter()
            assert result.duplicates == 0
            assert result.last_seq - result.first_seq + 1 == len(events)
            await _fold_to(runner, result.last_seq)
            fold_s += time.perf_counter() - t1
            append_s += t1 - t0
            checked += len(by_cycle[cycle])
            mismatches += _mismatches(runner.state, by_cycle[cycle])
        last_seq = result.last_seq
        report = await verify(projection, log, root)
    finally:
        await nc.close()
    total_s = time.perf_counter() - started
    print(
        f"\niofrol golden: {checked - len(mismatches):,}/{checked:,} rows match; "
        f"{len(runs)} runs, {last_seq:,} events; append {append_s:.1f} s, "
        f"fold {fold_s:.1f} s, total {total_s:.1f} s"
    )

    assert not mismatches, f"{len(mismatches)} of {checked} rows differ, first:\n" + "\n".join(
        mismatches[:10]
    )
    assert checked == ROWS
    assert dead.parked == []
    final = runner.state
    assert len(final.tests) == TESTS
    assert len(final.runs) == len(runs)
    assert all(r.finished for r in final.runs.values())
    assert report.equal, report.differences
    assert report.checkpoints == {STREAM: last_seq}
