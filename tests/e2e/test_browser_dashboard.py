"""``aqe serve`` in headless Chromium: the page fills from SSE and follows new events.

The real command runs against a real nats-server; Chromium (one per module) loads the
page, which must draw its charts with no console error and no request outside
localhost, then show a newly appended run within a second. Screenshots at 1280x800
go to ``AQE_ARTIFACTS_DIR`` (or the test's temporary directory).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from aqe.events import TestCaseExecuted, TestRunFinished
from aqe.log import load_stream_specs
from aqe.log.admin import create_missing_streams
from aqe.log.jetstream import JetStreamEventLog
from support.browser import CHARTS_DRAWN, Chromium, artifacts_dir, chromium_or_skip

pytestmark = [pytest.mark.nats, pytest.mark.timeout(180)]

RUNS_DRAWN = "(document.getElementById('runs-over-time')?.data?.[0]?.x?.length ?? 0)"
SEQ = "(JSON.parse(document.getElementById('status').dataset.lastSeq || '{}').AQE_TESTS ?? 0)"
# The sixth run's bar, drawn with its marker's totals (passed + failed).
RUN6_DRAWN = (
    "(() => { const d = document.getElementById('runs-over-time').data;"
    " return (d[0].y[5] ?? 0) + (d[2].y[5] ?? 0); })()"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    with chromium_or_skip(1280, 800) as chromium:
        yield chromium


async def append_run(url: str, run: int) -> float:
    """Append one run (two results and its marker); the time just before the append."""
    nc = await nats.connect(url)
    try:
        await create_missing_streams(nc, load_stream_specs())
        log = JetStreamEventLog(nc)
        started = time.time()
        flaky = "failed" if run % 2 else "passed"
        for test_id, outcome in (("app.t_ok", "passed"), ("app.t_flaky", flaky)):
            await log.append(
                TestCaseExecuted(test_id=test_id, run_id=f"run-{run}", outcome=outcome)  # type: ignore[arg-type]
            )
        await log.append(
            TestRunFinished(run_id=f"run-{run}", total=2, passed=2 - run % 2, failed=run % 2)
        )
        return started
    finally:
        await nc.close()


@pytest.fixture
def dashboard(nats_url: str, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AQE_")}
    env.update(AQE_NATS_URL=nats_url, AQE_DATA_DIR=str(tmp_path / "data"))
    stderr = tmp_path / "serve.log"
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aqe.cli", "serve", "--port", "0"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 60
        while not (match := re.search(r"serving (http://\S+/)", stderr.read_text())):
            assert proc.poll() is None, f"aqe serve exited: {stderr.read_text()}"
            assert time.monotonic() < deadline, f"aqe serve did not start: {stderr.read_text()}"
            time.sleep(0.05)
        yield match[1], proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_dashboard_loads_clean_and_updates_within_a_second(
    nats_url: str, dashboard: tuple[str, subprocess.Popen[bytes]], browser: Chromium, tmp_path: Path
) -> None:
    url, proc = dashboard
    for run in range(1, 6):
        asyncio.run(append_run(nats_url, run))

    browser.open(url)
    browser.wait_for(f"{RUNS_DRAWN} === 5", timeout_s=30)
    drawn = browser.wait_for(CHARTS_DRAWN, timeout_s=20)
    shots = artifacts_dir(tmp_path)
    browser.screenshot(shots / "dashboard-1280x800.png")

    # A new run appended to the log shows on the open page within a second.
    started = asyncio.run(append_run(nats_url, 6))
    browser.wait_for(f"{SEQ} === 18 && {RUN6_DRAWN} === 2", timeout_s=10, every_s=0.01)
    latency = time.time() - started
    shot = browser.screenshot(shots / "dashboard-updated-1280x800.png")
    print(
        f"dashboard updated {latency * 1000:.0f} ms after the append; screenshots in {shot.parent}"
    )

    assert latency < 1.0
    assert browser.log.problems() == []
    assert browser.log.foreign_requests() == []
    assert {"runs-over-time", "run-durations", "slowest-tests"} <= {key for key, _ in drawn}
    status = browser.evaluate("document.getElementById('status').textContent")
    assert "AQE_TESTS 18" in status  # 6 runs of 3 events
    assert "Agents (0)" in browser.evaluate("document.body.innerText")  # the fleet section
    assert proc.poll() is None
