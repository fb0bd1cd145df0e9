"""``--metrics-port`` on long-running processes, and the bridge's round trip over real QUIC.

``aqe consume history --follow --metrics-port 0`` runs as a process against a real
nats-server; its ``/metrics`` is scraped and parsed with the Prometheus client's
parser while events arrive. The bridge RTT comes from a real aioquic connection
between two dev-PKI clusters on loopback.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import msgspec
import nats
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aqe.bridge.certs import create_dev_pki
from aqe.bridge.channel import FrameStream
from aqe.bridge.frames import Hello
from aqe.bridge.quic import QuicConnector, QuicServer
from aqe.errors import StreamClosedError
from aqe.events import TestCaseExecuted
from aqe.log import load_stream_specs
from aqe.log.admin import create_missing_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.metrics import AqeMetrics

pytestmark = pytest.mark.timeout(120)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def append(url: str, count: int, start: int) -> None:
    nc = await nats.connect(url)
    try:
        await create_missing_streams(nc, load_stream_specs())
        log = JetStreamEventLog(nc)
        for i in range(start, start + count):
            await log.append(TestCaseExecuted(test_id=f"t.{i}", run_id="r", outcome="passed"))
    finally:
        await nc.close()


@pytest.mark.nats
def test_consume_follow_exports_folds_lag_and_checkpoint(nats_url: str, tmp_path: Path) -> None:
    asyncio.run(append(nats_url, 3, 0))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AQE_")}
    env.update(AQE_NATS_URL=nats_url, AQE_DATA_DIR=str(tmp_path / "data"))
    err = tmp_path / "consume.log"
    with err.open("wb") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aqe.cli",
                "consume",
                "history",
                "--follow",
                "-q",
                "--metrics-port",
                "0",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=fh,
        )
    try:
        deadline = time.monotonic() + 60
        while not (match := re.search(r"metrics at (http://\S+)", err.read_text())):
            assert proc.poll() is None, err.read_text()
            assert time.monotonic() < deadline, err.read_text()
            time.sleep(0.05)
        url = match[1]
        key = (("projection", "history"), ("stream", "AQE_TESTS"))

        def wait_for(folded: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            deadline = time.monotonic() + 30
            while True:
                samples = scrape(url)
                if (
                    samples.get(("aqe_projection_checkpoint", key)) == folded
                    and samples.get(("aqe_events_appended_total", (("stream", "AQE_TESTS"),)))
                    == folded
                ):
                    return samples
                assert time.monotonic() < deadline, samples
                time.sleep(0.05)

        before = wait_for(3)
        asyncio.run(append(nats_url, 4, 3))
        after = wait_for(7)
    finally:
        # Killed: a clean stop saves the snapshot and LanceDB tables (seconds), which this
        # test does not look at; the projection's checkpoints make a kill safe anyway.
        proc.kill()
        proc.wait(timeout=20)
    assert before[("aqe_events_folded_total", key)] == 3
    assert after[("aqe_events_folded_total", key)] == 7
    assert after[("aqe_consumer_lag_events", key)] == 0
    assert ("aqe_projection_checkpoint_age_seconds", key) in after
    assert after[("aqe_dead_letters_total", ())] == 0


async def test_bridge_rtt_is_the_quic_connections_smoothed_round_trip(tmp_path: Path) -> None:
    pki = create_dev_pki(tmp_path / "pki", ["alpha", "beta"])

    async def echo(stream: FrameStream) -> None:
        while True:
            try:
                await stream.send(await stream.recv())
            except StreamClosedError:
                return

    server = QuicServer(host="127.0.0.1", port=0, tls=pki["beta"], handler=echo)
    await server.start()
    connector = QuicConnector(
        host="127.0.0.1", port=server.port, tls=pki["alpha"], server_name="beta"
    )
    try:
        assert connector.stats().rtt_ms == 0.0  # no connection, no estimate
        await connector.connect()
        stream = await connector.open_stream()
        for _ in range(5):
            await stream.send(Hello(cluster="alpha"))
            async with asyncio.timeout(20):
                await stream.recv()
        stats = connector.stats()
        # A node's status snapshot carries the connector's stats as its link's transport.
        metrics = AqeMetrics()
        metrics.bridge({"links": {"beta": {"totals": {}, "transport": msgspec.to_builtins(stats)}}})
        samples = {
            (s.name, tuple(s.labels.items())): s.value
            for family in text_string_to_metric_families(metrics.render().decode())
            for s in family.samples
        }
    finally:
        await connector.close()
        await server.close()
    assert 0 < stats.rtt_ms < 1000
    assert samples[("aqe_bridge_rtt_seconds", (("peer", "beta"),))] == pytest.approx(
        stats.rtt_ms / 1000
    )
