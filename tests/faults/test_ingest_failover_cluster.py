"""`aqe ingest` right after the AQE_TESTS stream leader is SIGKILLed, on a 3-node cluster.

For a few seconds the stream has no leader: appends get 503 "no responders" or no ack,
reads time out. Before, the first ingest in that window failed (the next one, seconds
later, succeeded). Now its appends and reads are retried with bounded backoff under the
same message ids, so it succeeds and stores the run exactly once.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from aqe.config import Settings
from aqe.log.jetstream import JetStreamEventLog
from aqe.log.retry import while_unavailable
from aqe.server import LocalCluster

pytestmark = [pytest.mark.nats, pytest.mark.cluster, pytest.mark.faults, pytest.mark.timeout(240)]

TESTS = 40


def _report(path: Path, run: str) -> Path:
    cases = "".join(
        f'<testcase classname="t.{run}" name="test_{i}" time="0.01"/>' for i in range(TESTS)
    )
    path.write_text(f'<testsuite name="{run}" tests="{TESTS}">{cases}</testsuite>\n')
    return path


def _ingest(env: dict[str, str], report: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aqe.cli", "ingest", str(report), "--run-id", report.stem, "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def _executions(urls: list[str]) -> Counter[tuple[str, str]]:
    log = await JetStreamEventLog.connect(Settings(nats_url=",".join(urls)))
    try:
        envs = await while_unavailable(lambda: _read(log), within_s=60)
    finally:
        await log.close()
    return Counter(envs)


async def _read(log: JetStreamEventLog) -> list[tuple[str, str]]:
    out = []
    async for env in log.read("AQE_TESTS"):
        if env.event_type == "tests.case.executed.v1":
            out.append((env.event_id, env.subject))
    return out


def test_the_first_ingest_after_the_stream_leader_dies_succeeds_exactly_once(
    nats_cluster: LocalCluster, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AQE_")}
    env.update(AQE_NATS_URL=",".join(nats_cluster.urls), AQE_DATA_DIR=str(tmp_path / "data"))
    first = _ingest(env, _report(tmp_path / "run-1.xml", "one"))
    assert first.returncode == 0, first.stderr

    leader = asyncio.run(nats_cluster.stream_leader("AQE_TESTS"))
    nats_cluster.kill(leader)
    second = _ingest(env, _report(tmp_path / "run-2.xml", "two"))
    assert second.returncode == 0, second.stderr

    stored = asyncio.run(_executions([nats_cluster.url(n) for n in nats_cluster.running()]))
    assert len(stored) == 2 * TESTS
    assert max(stored.values()) == 1  # a retried append stored nothing twice
