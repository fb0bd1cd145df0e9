"""End-to-end replication over a QUIC bridge link, against baselines from the same run.

Usage::

    python tests/benchmarks/bench_bridge.py [--events N] [--latency-events N] [--rate R] [--json]

Two independent nats-servers (clusters ``a`` and ``b``), a development CA, a
:class:`~aqe.bridge.quic.QuicServer` with a :class:`~aqe.bridge.replication.TargetSide`
for ``b`` and a :class:`~aqe.bridge.replication.SourceLink` from ``a``, all in this
process over loopback. Measured:

* **latency**: one event appended in ``a`` at a time, paced at ``--rate`` events/s;
  the time until it is readable in ``b`` (an ordered consumer following ``b``'s
  stream). p50/p99. Baseline: the same append in ``a`` until readable in ``a`` itself
  (the JetStream floor every bridged event pays twice), plus a 200-byte request/response
  round trip over aioquic on the link's transport and over plain TCP.
* **throughput**: ``--events`` events appended in ``a`` as fast as ``append_many``
  goes while the link runs; events/s until all are readable in ``b`` (live), and a
  backlog of the same size replicated by a link started afterwards (catch-up).

Goals (issue 6): p50 <= 3 ms, p99 <= 15 ms, >= 10,000 events/s per link. The script
reports; it exits 0 on a missed goal and fails only on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats

from aqe.bridge.certs import TlsFiles, create_dev_pki
from aqe.bridge.frames import Ack, Frame
from aqe.bridge.quic import QuicConnector, QuicServer
from aqe.bridge.replication import SourceLink, TargetSide
from aqe.events import BridgeApplied, TestCaseExecuted
from aqe.log import NewEvent, load_stream_specs
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.server import NatsServerProcess

STREAM = "AQE_TESTS"
MARKER = BridgeApplied.type_tag()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def event(tag: str, i: int) -> TestCaseExecuted:
    return TestCaseExecuted(
        test_id=f"tests/test_bench.py::test_{i % 64}", run_id=f"{tag}-{i // 64}",
        outcome="passed", duration_s=0.01,
    )  # fmt: skip


async def connect(url: str) -> JetStreamEventLog:
    specs = load_stream_specs()
    nc = await nats.connect(url)
    await apply_streams(nc, specs)
    return JetStreamEventLog(nc, specs)


class Arrivals:
    """Follows a stream and records when each event id became readable."""

    def __init__(self, log: JetStreamEventLog) -> None:
        self.log = log
        self.at: dict[str, float] = {}
        self.changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async for env in self.log.read(STREAM, after_seq=await self.log.last_seq(STREAM),
                                       follow=True):  # fmt: skip
            if env.event_type != MARKER:
                self.at[env.event_id] = time.perf_counter()
                self.changed.set()

    async def __aenter__(self) -> Arrivals:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0.2)  # the consumer is in place
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def wait_for(self, ids: set[str], guard_s: float = 120.0) -> float:
        deadline = time.monotonic() + guard_s
        while not ids <= self.at.keys():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(ids - self.at.keys())} events never arrived")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), 1.0)
        return max(self.at[i] for i in ids)


@contextlib.asynccontextmanager
async def link(
    source: JetStreamEventLog, target: JetStreamEventLog, pki: dict[str, TlsFiles]
) -> AsyncIterator[SourceLink]:
    side = TargetSide(target, "b", [STREAM])
    server = QuicServer(host="127.0.0.1", port=0, tls=pki["b"], handler=side.handle)
    await server.start()
    connector = QuicConnector(host="127.0.0.1", port=server.port, tls=pki["a"], server_name="b")
    src = SourceLink(source, "a", "b", connector, [STREAM])
    task = asyncio.create_task(src.run())
    try:
        yield src
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await connector.close()
        await server.close()


async def latency(
    log: JetStreamEventLog, arrivals: Arrivals, tag: str, n: int, rate: float
) -> list[float]:
    samples = []
    for i in range(n):
        start = time.perf_counter()
        result = await log.append(event(tag, i))
        done = await arrivals.wait_for({result.event_id})
        samples.append((done - start) * 1000)
        await asyncio.sleep(max(0.0, 1 / rate - (time.perf_counter() - start)))
    return samples


async def quic_rtt(pki: dict[str, TlsFiles], n: int) -> list[float]:
    async def echo(stream: Any) -> None:
        with contextlib.suppress(Exception):
            while True:
                await stream.send(await stream.recv())

    server = QuicServer(host="127.0.0.1", port=0, tls=pki["b"], handler=echo)
    await server.start()
    conn = QuicConnector(host="127.0.0.1", port=server.port, tls=pki["a"], server_name="b")
    await conn.connect()
    stream = await conn.open_stream()
    frame: Frame = Ack(applied_seq=1)
    samples = []
    try:
        for _ in range(n + 50):
            start = time.perf_counter()
            await stream.send(frame)
            await stream.recv()
            samples.append((time.perf_counter() - start) * 1000)
    finally:
        await stream.close()
        await conn.close()
        await server.close()
    return samples[50:]


async def tcp_rtt(n: int) -> list[float]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.readexactly(200):
                writer.write(data)
                await writer.drain()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    samples = []
    for _ in range(n + 50):
        start = time.perf_counter()
        writer.write(b"x" * 200)
        await writer.drain()
        await reader.readexactly(200)
        samples.append((time.perf_counter() - start) * 1000)
    writer.close()
    server.close()
    return samples[50:]


async def throughput_live(
    a: JetStreamEventLog, arrivals: Arrivals, tag: str, n: int
) -> tuple[float, float]:
    start = time.perf_counter()
    ids: set[str] = set()
    for lo in range(0, n, 1000):
        results = await a.append_many([NewEvent(event=event(tag, i)) for i in range(lo, lo + 1000)])
        ids.update(r.event_id for r in results)
    published = time.perf_counter()
    done = await arrivals.wait_for(ids)
    return n / (done - start), n / (published - start)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="aqe-bench-bridge-") as tmp:
        root = Path(tmp)
        pki = create_dev_pki(root / "certs", ["a", "b"])
        servers = [
            NatsServerProcess.start_sync(root / n / "js", log_file=root / n / "nats.log")
            for n in ("a", "b")
        ]
        try:
            a, b = await connect(servers[0].url), await connect(servers[1].url)
            out: dict[str, Any] = {}
            print("baselines: QUIC and TCP round trips, JetStream append -> readable ...")
            out["quic_rtt"] = await quic_rtt(pki, args.latency_events)
            out["tcp_rtt"] = await tcp_rtt(args.latency_events)
            async with Arrivals(a) as local:
                out["local"] = await latency(a, local, "local", args.latency_events, args.rate)

            print("bridge: latency, then live throughput ...")
            async with Arrivals(b) as remote, link(a, b, pki) as src:
                await asyncio.sleep(0.5)  # connected and resumed
                out["bridge"] = await latency(a, remote, "lat", args.latency_events, args.rate)
                out["live"], out["publish_rate"] = await throughput_live(
                    a, remote, "live", args.events
                )
                out["link"] = src.stats()

            print("bridge: catch-up of a backlog ...")
            backlog: set[str] = set()
            for lo in range(0, args.events, 1000):
                items = [NewEvent(event=event("backlog", i)) for i in range(lo, lo + 1000)]
                backlog.update(r.event_id for r in await a.append_many(items))
            async with Arrivals(b) as remote:
                start = time.perf_counter()
                async with link(a, b, pki):
                    done = await remote.wait_for(backlog)
                out["catchup"] = args.events / (done - start)
            await a.close()
            await b.close()
            return out
        finally:
            for server in servers:
                server.stop_sync()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="events for throughput")
    parser.add_argument("--latency-events", type=int, default=1000, help="latency samples")
    parser.add_argument("--rate", type=float, default=200.0, help="paced events/s (latency)")
    parser.add_argument("--json", action="store_true", help="print the raw results as JSON")
    args = parser.parse_args()
    out = asyncio.run(main_async(args))

    def row(name: str, samples: list[float], base: float | None = None) -> str:
        p50, p99 = statistics.median(samples), pct(samples, 0.99)
        ratio = f"  x{p50 / base:.1f} of JetStream local" if base else ""
        return f"  {name:<38} p50 {p50:7.3f} ms   p99 {p99:7.3f} ms{ratio}"

    local_p50 = statistics.median(out["local"])
    print("\nlatency (publish -> readable), paced at", args.rate, "events/s")
    print(row("bridge a -> b (QUIC, atomic batch)", out["bridge"], local_p50))
    print(row("baseline: JetStream append -> readable", out["local"]))
    print(row("baseline: aioquic 200 B round trip", out["quic_rtt"]))
    print(row("baseline: plain TCP 200 B round trip", out["tcp_rtt"]))
    print("\nthroughput per link")
    print(f"  live (publishing meanwhile)   {out['live']:9.0f} events/s "
          f"(publisher alone {out['publish_rate']:.0f}/s)")  # fmt: skip
    print(f"  catch-up of a backlog         {out['catchup']:9.0f} events/s")
    b50, b99 = statistics.median(out["bridge"]), pct(out["bridge"], 0.99)
    print(f"\ngoals: p50 <= 3 ms: {b50:.2f} ({'met' if b50 <= 3 else 'missed'}); "
          f"p99 <= 15 ms: {b99:.2f} ({'met' if b99 <= 15 else 'missed'}); "
          f">= 10k events/s: {min(out['live'], out['catchup']):.0f} "
          f"({'met' if min(out['live'], out['catchup']) >= 10_000 else 'missed'})")  # fmt: skip
    if args.json:
        json.dump({k: v for k, v in out.items() if k != "link"}, sys.stdout)
        print()


if __name__ == "__main__":
    main()
