"""Ctrl-C stops `aqe consume --follow` at once, with what it folded saved.

Before, the way out also rebuilt the projection's LanceDB tables (importing LanceDB and
writing every table): several seconds between the Ctrl-C and the exit. Now a cancelled
run saves the snapshot and its checkpoints only; the tables keep the checkpoints they
were built at, so readers see them stale and rebuild them, and the next run writes them.

No fixed wall-clock bound: the stop is compared with the same process's start (Python
start-up, imports, connecting, the first fold), which a loaded machine slows alike.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aqe.events import TestCaseExecuted
from aqe.log import NewEvent

pytestmark = pytest.mark.nats

EVENTS = 300


async def _publish(url: str, count: int) -> int:
    import nats

    from aqe.log.admin import create_missing_streams
    from aqe.log.jetstream import JetStreamEventLog

    nc = await nats.connect(url)
    log = JetStreamEventLog(nc)
    try:
        await create_missing_streams(nc, log.specs)
        items = [
            NewEvent(
                event=TestCaseExecuted(
                    test_id=f"tests/test_m.py::test_{i % 40}",
                    run_id=f"run-{i // 40}",
                    outcome="failed" if i % 7 == 0 else "passed",
                    duration_s=0.01,
                )
            )
            for i in range(count)
        ]
        await log.append_batch(items)
        return await log.last_seq("AQE_TESTS")
    finally:
        await log.close()


def _checkpoint(state: Path) -> int:
    try:
        with state.open("rb") as fh:
            header = json.loads(fh.readline())
    except (OSError, ValueError):
        return 0
    return int(header["checkpoints"].get("AQE_TESTS", 0))


def test_ctrl_c_stops_consume_follow_promptly_and_saves(
    nats_url: str, aqe_env: dict[str, str], tmp_path: Path
) -> None:
    last = asyncio.run(_publish(nats_url, EVENTS))
    state = tmp_path / "data" / "projections" / "history" / "state.json"
    err = tmp_path / "consume.err"
    with err.open("w") as fh:
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "aqe.cli", "consume", "history", "--follow", "-q"],
            env=aqe_env,
            stdout=subprocess.DEVNULL,
            stderr=fh,
        )
    try:
        deadline = started + 90
        while _checkpoint(state) < last:
            assert proc.poll() is None, f"consume exited early:\n{err.read_text()}"
            assert time.monotonic() < deadline, f"consume saved nothing:\n{err.read_text()}"
            time.sleep(0.02)
        start_s = time.monotonic() - started

        interrupted = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
        stop_s = time.monotonic() - interrupted
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    text = err.read_text()
    # The project's convention for a long-running command stopped by a signal
    # (`aqe agent run`, `aqe bridge run`, `aqe serve`): a clean stop, exit status 0.
    assert code == 0, text
    assert "history: stopped; state and checkpoints saved" in text
    assert "Traceback" not in text
    assert _checkpoint(state) == last
    assert stop_s < start_s, f"stopping took {stop_s:.2f} s, starting {start_s:.2f} s"
