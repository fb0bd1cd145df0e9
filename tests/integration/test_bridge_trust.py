"""Who may store what through a bridge: the peer's certificate names its origin.

Real parts throughout: a nats-server per cluster, certificates from one development
CA, the QUIC transport and the target side that ``aqe bridge run`` serves. Cluster
``m`` holds a perfectly valid certificate from the mesh's CA, and uses it to claim
chains of cluster ``a``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import nats
import pytest

from aqe.bridge.certs import TlsFiles, create_dev_pki
from aqe.bridge.frames import (
    UNTRUSTED_RELAY,
    Data,
    DataBatch,
    Error,
    Frame,
    Open,
    Resume,
    partition_of,
)
from aqe.bridge.quic import QuicConnector, QuicServer
from aqe.bridge.replication import SourceLink, TargetSide, is_marker
from aqe.errors import StreamClosedError
from aqe.events import Envelope, Headers, TestCaseExecuted
from aqe.log import NewEvent, load_stream_specs
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.server import NatsServerProcess

pytestmark = [pytest.mark.nats, pytest.mark.timeout(120)]

STREAM = "AQE_TESTS"
GUARD_S = 60.0
"""Only a failure guard: how long a wait may take before the test gives up."""


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, TlsFiles]:
    return create_dev_pki(tmp_path / "pki", ["a", "b", "m"])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Callable[[str], NatsServerProcess]]:
    started: list[NatsServerProcess] = []

    def start(name: str) -> NatsServerProcess:
        process = NatsServerProcess.start_sync(
            tmp_path / name / "js", log_file=tmp_path / f"{name}.log"
        )
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            process.stop_sync(timeout=5.0)


@asynccontextmanager
async def event_log(url: str) -> AsyncIterator[JetStreamEventLog]:
    nc = await nats.connect(url)
    specs = load_stream_specs()
    await apply_streams(nc, specs)
    log = JetStreamEventLog(nc, specs)
    try:
        yield log
    finally:
        await asyncio.wait_for(log.close(), GUARD_S)


@asynccontextmanager
async def serving(files: TlsFiles, target: TargetSide) -> AsyncIterator[QuicServer]:
    quic = QuicServer(host="127.0.0.1", port=0, tls=files, handler=target.handle)
    await quic.start()
    try:
        yield quic
    finally:
        await quic.close()


async def stored(log: JetStreamEventLog) -> list[Envelope]:
    return [e async for e in log.read(STREAM) if not is_marker(e.subject, e.event_type)]


def executions(prefix: str, n: int) -> list[NewEvent]:
    return [
        NewEvent(
            event=TestCaseExecuted(
                test_id=f"{prefix}/test_mod.py::test_{i}",
                run_id=f"{prefix}-run",
                outcome="passed",
                duration_s=0.01 * i,
            )
        )
        for i in range(n)
    ]


async def test_a_peer_cannot_open_another_origins_chain_and_the_real_one_still_lands(
    pki: dict[str, TlsFiles], server: Callable[[str], NatsServerProcess]
) -> None:
    async with (
        event_log(server("a").url) as a_log,
        event_log(server("b").url) as b_log,
    ):
        # a's real events; the forger will use the same origin coordinates.
        await a_log.append_batch(executions("real", 20))
        originals = await stored(a_log)
        first = originals[0]
        partition = partition_of(first.subject, 8)
        chain = [e for e in originals if partition_of(e.subject, 8) == partition]
        forged = [
            Data(
                seq=env.seq,
                prev=prev.seq if prev is not None else 0,
                subject=env.subject,
                data=b'{"forged": true}',
                headers={Headers.MSG_ID: f"forged-{env.seq}"},
            )
            for prev, env in zip([None, *chain[:-1]], chain, strict=True)
        ]

        target = TargetSide(b_log, "b", [STREAM])
        async with serving(pki["b"], target) as quic:
            mallory = QuicConnector(host="127.0.0.1", port=quic.port, tls=pki["m"], server_name="b")
            try:
                await mallory.connect()
                fs = await mallory.open_stream()
                # Everything in one go, as 0-RTT data would arrive: nothing may be stored.
                await fs.send(
                    Open(origin="a", stream=STREAM, partition=partition, partitions=8, source="m")
                )
                await fs.send(DataBatch(events=tuple(forged)))
                answers: list[Frame] = []
                async with asyncio.timeout(GUARD_S):
                    try:
                        while True:
                            answers.append(await fs.recv())
                    except StreamClosedError:
                        pass
                assert not any(isinstance(f, Resume) for f in answers)
                errors = [f for f in answers if isinstance(f, Error)]
                assert [e.code for e in errors] == [UNTRUSTED_RELAY]
                assert "m may only open chains of its own origin" in errors[0].message
                # Claiming to be a as the sender too is refused as well (the certificate says m).
                fs = await mallory.open_stream()
                await fs.send(
                    Open(origin="a", stream=STREAM, partition=partition, partitions=8, source="a")
                )
                async with asyncio.timeout(GUARD_S):
                    refused = await fs.recv()
                assert isinstance(refused, Error)
                assert refused.code == "peer"
            finally:
                await mallory.close()
            assert await b_log.last_seq(STREAM) == 0  # nothing stored, not even a marker
            assert target.stats()["refused_streams"] == 2

            # The real origin's link then replicates every event, with a's own data.
            connector = QuicConnector(
                host="127.0.0.1", port=quic.port, tls=pki["a"], server_name="b"
            )
            link = SourceLink(a_log, "a", "b", connector, [STREAM], gossip_s=0.2)
            task = asyncio.create_task(link.run())
            try:
                async with asyncio.timeout(GUARD_S):
                    while len(await stored(b_log)) < len(originals):
                        await asyncio.sleep(0.05)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await connector.close()
        copies = await stored(b_log)
        by_origin_seq = {int(e.headers[Headers.ORIGIN_SEQ]): (e.subject, e.data) for e in copies}
        assert len(by_origin_seq) == len(copies) == len(originals)
        assert by_origin_seq == {e.seq: (e.subject, e.data) for e in originals}
        assert {e.headers[Headers.ORIGIN_CLUSTER] for e in copies} == {"a"}
        assert not any(b"forged" in e.data for e in copies)


async def test_a_trusted_relay_may_open_another_origins_chain(
    pki: dict[str, TlsFiles], server: Callable[[str], NatsServerProcess]
) -> None:
    async with event_log(server("b").url) as b_log:
        target = TargetSide(b_log, "b", [STREAM], relays_from=["m"])
        async with serving(pki["b"], target) as quic:
            relay = QuicConnector(host="127.0.0.1", port=quic.port, tls=pki["m"], server_name="b")
            try:
                await relay.connect()
                fs = await relay.open_stream()
                await fs.send(
                    Open(origin="a", stream=STREAM, partition=0, partitions=8, source="m")
                )
                async with asyncio.timeout(GUARD_S):
                    answer = await fs.recv()
                assert answer == Resume(applied_seq=0)
                await fs.close()
            finally:
                await relay.close()
