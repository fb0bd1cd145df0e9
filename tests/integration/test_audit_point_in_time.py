"""A projection built as of sequence N (or a time) equals one built from a log cut at N.

The cut log is the same server's store copied while it was stopped, with every message
after N deleted, so store times and ids are the original ones and nothing but the cut
differs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nats
import pytest

from aqe.events import TestCaseExecuted, TestCaseQuarantined, TestRunFinished, TestRunStarted
from aqe.log import load_stream_specs
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.projections import (
    CatalogProjection,
    HistoryProjection,
    MemoryDeadLetters,
    SnapshotStore,
    rebuild,
    sequence_at,
)
from aqe.projections.base import Projection
from aqe.server import NatsServerProcess

pytestmark = pytest.mark.nats

STREAM = "AQE_TESTS"


async def connect(url: str) -> JetStreamEventLog:
    nc = await nats.connect(url)
    await apply_streams(nc, load_stream_specs())
    return JetStreamEventLog(nc)


async def history_of_three_runs(log: JetStreamEventLog) -> None:
    for run in range(3):
        run_id = f"run-{run}"
        await log.append(TestRunStarted(run_id=run_id, suite="s", commit=f"c{run}"))
        for t in range(5):
            outcome = "failed" if (t == 2 and run != 1) else "passed"
            await log.append(
                TestCaseExecuted(test_id=f"t{t}", run_id=run_id, outcome=outcome, commit=f"c{run}")
            )
        await log.append(TestRunFinished(run_id=run_id, total=5, passed=4, failed=1))
        if run == 1:
            await log.append(TestCaseQuarantined(test_id="t2", reason="flaky", by="wf"))


async def built(
    projection: Projection[object], log: JetStreamEventLog, root: Path, until: dict[str, int] | None
) -> bytes:
    await rebuild(projection, log, root, MemoryDeadLetters(), until=until)
    return projection.encode(SnapshotStore(projection, root / projection.name).load().state)


async def test_as_of_sequence_equals_the_log_cut_there(
    nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    log = await connect(nats_server.url)
    await history_of_three_runs(log)
    end = await log.last_seq(STREAM)
    assert end == 22
    await log.close()
    nats_server.stop_sync()
    shutil.copytree(nats_server.store_dir, tmp_path / "cut")
    original = NatsServerProcess.start_sync(nats_server.store_dir, log_file=tmp_path / "a.log")
    cut_server = NatsServerProcess.start_sync(tmp_path / "cut", log_file=tmp_path / "cut.log")
    try:
        log = await connect(original.url)
        cut = await connect(cut_server.url)
        try:
            cut_at = end
            for n in (15, 9):  # just after the quarantine, and mid-run (run-1 still open)
                js = cut.connection.jetstream()
                for seq in range(n + 1, cut_at + 1):
                    await js.delete_msg(STREAM, seq)
                cut_at = n
                for make in (HistoryProjection, CatalogProjection):
                    past = await built(
                        make(), log, tmp_path / f"asof-{n}", dict.fromkeys(make().streams, n)
                    )
                    truncated = await built(make(), cut, tmp_path / f"cut-{n}", None)
                    assert past == truncated, (make.__name__, n)
                # The time of message n names the same cut.
                # (Read, not got: a get's time has microseconds, a delivery's nanoseconds.)
                [stored] = [env async for env in log.read(STREAM, after_seq=n - 1, until_seq=n)]
                assert await sequence_at(log, STREAM, stored.recorded_at_ns) == n
                assert await sequence_at(log, STREAM, stored.recorded_at_ns - 1) < n
            # The quarantine is in the state as of 15, not as of 9.
            assert b'"quarantined":true' in await built(
                HistoryProjection(), log, tmp_path / "q15", {STREAM: 15}
            )
            assert b'"quarantined":true' not in await built(
                HistoryProjection(), log, tmp_path / "q9", {STREAM: 9}
            )
            assert await sequence_at(log, STREAM, 0) == 0
        finally:
            await log.close()
            await cut.close()
    finally:
        original.stop_sync()
        cut_server.stop_sync()
