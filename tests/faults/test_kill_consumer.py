"""kill -9 of `aqe consume` in the middle of 100,000 events, then restart.

The resumed projection must equal a clean rebuild byte for byte: no event applied
twice, none skipped.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aqe.events import TestCaseExecuted
from aqe.log import NewEvent, load_stream_specs

pytestmark = [pytest.mark.nats, pytest.mark.faults, pytest.mark.timeout(600)]

TOTAL = 100_000


async def publish(url: str, total: int) -> None:
    import nats

    from aqe.log.admin import apply_streams
    from aqe.log.jetstream import JetStreamEventLog

    nc = await nats.connect(url, pending_size=64 * 1024 * 1024)
    specs = load_stream_specs()
    await apply_streams(nc, specs)
    log = JetStreamEventLog(nc, specs)
    items = [
        NewEvent(
            event=TestCaseExecuted(
                test_id=f"tests/test_m{i % 97}.py::test_{i % 1013}",
                run_id=f"run-{i // 1000}",
                outcome="failed" if i % 17 == 0 else "passed",
                duration_s=(i % 50) / 100,
            )
        )
        for i in range(total)
    ]
    result = await log.append_batch(items)
    assert result.count == total
    await log.close()


def checkpoint(state: Path) -> int:
    try:
        with open(state, "rb") as fh:
            header = json.loads(fh.readline())
    except (OSError, ValueError):
        return 0
    return int(header["checkpoints"].get("AQE_TESTS", 0))


def env_for(url: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AQE_")}
    env.update(AQE_NATS_URL=url, AQE_DATA_DIR=str(data_dir))
    return env


def consume(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "aqe.cli", "consume", "catalog", "--flush-every", "1500", "-q"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_kill_9_midway_then_resume_equals_clean_rebuild(nats_url: str, tmp_path: Path) -> None:
    asyncio.run(publish(nats_url, TOTAL))
    live_env = env_for(nats_url, tmp_path / "live")
    state = tmp_path / "live" / "projections" / "catalog" / "state.json"

    kills = []
    for target in (TOTAL // 4, TOTAL // 2):
        proc = consume(live_env)
        deadline = time.monotonic() + 120
        while checkpoint(state) < target and proc.poll() is None:
            assert time.monotonic() < deadline, "consumer made no progress"
            time.sleep(0.005)
        assert proc.poll() is None, "consumer finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills.append(checkpoint(state))
    assert 0 < kills[0] < kills[1] < TOTAL, kills

    finish = subprocess.run(
        [sys.executable, "-m", "aqe.cli", "consume", "catalog", "--json"],
        env=live_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert finish.returncode == 0, finish.stderr
    resumed = json.loads(finish.stdout)
    assert resumed["resumed_from"]["AQE_TESTS"] == kills[1]
    assert resumed["checkpoints"]["AQE_TESTS"] == TOTAL

    clean_env = env_for(nats_url, tmp_path / "clean")
    rebuilt = subprocess.run(
        [sys.executable, "-m", "aqe.cli", "replay", "catalog", "-q"],
        env=clean_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert rebuilt.returncode == 0, rebuilt.stderr
    clean_state = tmp_path / "clean" / "projections" / "catalog" / "state.json"
    live_header, live_body = state.read_bytes().split(b"\n", 1)
    clean_header, clean_body = clean_state.read_bytes().split(b"\n", 1)
    assert live_body == clean_body
    assert json.loads(live_header)["checkpoints"] == json.loads(clean_header)["checkpoints"]
    body = json.loads(live_body)
    assert body["events"] == TOTAL
    assert body["by_type"] == {"tests.case.executed.v1": TOTAL}

    verify = subprocess.run(
        [sys.executable, "-m", "aqe.cli", "replay", "catalog", "--verify", "--json"],
        env=live_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert json.loads(verify.stdout)["equal"]
