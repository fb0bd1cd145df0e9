"""Append throughput of the JetStream EventLog against raw nats-py, in one run.

Usage::

    python tests/benchmarks/bench_log.py [--events N] [--rounds R] [--json]

The script starts its own nats-server (``aqe.server.NatsServerProcess``), applies
the project's streams and measures, interleaved over ``R`` rounds (plus one warm-up
round) so that machine noise hits every side alike:

* ``publish_async``: raw ``js.publish_async`` of pre-encoded messages carrying as many
  headers as aqe's, against ``JetStreamEventLog.append_many`` of the same kind of
  events (goal: at least 0.9x raw).
* atomic batch: a hand-rolled atomic batch (``nc.request`` / ``nc.publish`` /
  ``nc.request`` per chunk of 1,000, as FACTS.md describes) against
  ``JetStreamEventLog.append_batch`` (goal: at least 100k events/s). The server's own
  ceiling is measured too: pre-encoded batches written by a bare socket client.

Rates are medians over rounds; ratios are medians of the per-round ratios. Every
measurement appends to fresh subjects with fresh ids, so deduplication never
triggers. The script reports; it never fails on a missed goal (exit 0), only on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client

from aqe.events import ENVELOPE_VERSION, Headers, TestCaseExecuted
from aqe.log import MAX_BATCH, NewEvent, load_stream_specs, subject_for
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.server import NatsServerProcess

PUBLISH_RATIO_GOAL = 0.9
BATCH_RATE_GOAL = 100_000.0
_OP_TIMEOUT_S = 120.0

Message = tuple[str, bytes, dict[str, str]]


# -- server ----------------------------------------------------------------------------


@contextmanager
def nats_server() -> Iterator[str]:
    """A throwaway JetStream server (aqe's own launcher) on a free port; yields its URL."""
    workdir = Path(tempfile.mkdtemp(prefix="aqe-bench-"))
    try:
        with NatsServerProcess.start_sync(workdir / "js", log_file=workdir / "nats.log") as server:
            yield server.url
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# -- workload --------------------------------------------------------------------------


def make_events(n: int, tag: str) -> list[TestCaseExecuted]:
    """``n`` realistic TestCaseExecuted events (~200 bytes of JSON) on fresh subjects."""
    outcomes = ("passed", "passed", "passed", "failed", "skipped")
    commit = uuid.uuid4().hex[:12]
    return [
        TestCaseExecuted(
            test_id=f"tests/unit/test_mod{i % 50}.py::test_case[{tag}-{i}]",
            run_id=f"run-{tag}",
            outcome=outcomes[i % len(outcomes)],  # type: ignore[arg-type]
            duration_s=0.001 * (i % 997),
            file=f"tests/unit/test_mod{i % 50}.py",
            commit=commit,
        )
        for i in range(n)
    ]


def raw_messages(events: Sequence[TestCaseExecuted]) -> list[Message]:
    """The same events pre-encoded for raw nats-py, with aqe's header count."""
    out: list[Message] = []
    for event in events:
        out.append(
            (
                subject_for(event),
                event.to_json(),
                {
                    Headers.MSG_ID: uuid.uuid4().hex,
                    Headers.EVENT_TYPE: event.type_tag(),
                    Headers.ENVELOPE: ENVELOPE_VERSION,
                },
            )
        )
    return out


# -- measured operations -----------------------------------------------------------------


async def raw_publish_async(nc: Client, msgs: Sequence[Message]) -> None:
    js = nc.jetstream()
    futures = [await js.publish_async(s, d, headers=h) for s, d, h in msgs]
    for ack in await asyncio.gather(*futures):
        if ack.duplicate:
            raise RuntimeError("raw publish_async hit dedup; subjects are not fresh")


async def raw_atomic_batch(nc: Client, msgs: Sequence[Message]) -> None:
    """The naive atomic batch of FACTS.md: request, publishes, commit request."""
    for start in range(0, len(msgs), MAX_BATCH):
        chunk = msgs[start : start + MAX_BATCH]
        batch_id = uuid.uuid4().hex
        n = len(chunk)
        for i, (subject, data, hdrs) in enumerate(chunk, start=1):
            headers = dict(hdrs)
            headers["Nats-Batch-Id"] = batch_id
            headers["Nats-Batch-Sequence"] = str(i)
            if i == n:
                headers["Nats-Batch-Commit"] = "1"
            if i in (1, n):
                reply = await nc.request(subject, data, headers=headers, timeout=10.0)
                if reply.data and (i == n or b"error" in reply.data):
                    body = json.loads(reply.data)
                    if "error" in body or body.get("count") != n:
                        raise RuntimeError(f"raw batch failed: {body}")
            else:
                await nc.publish(subject, data, headers=headers)


def wire_batches(msgs: Sequence[Message], reply_prefix: str) -> list[bytes]:
    """Atomic batches of 1,000 as ready protocol bytes, the commit replying to the prefix."""
    blobs = []
    for k, start in enumerate(range(0, len(msgs), MAX_BATCH)):
        chunk = msgs[start : start + MAX_BATCH]
        batch_id = uuid.uuid4().hex
        out = bytearray()
        for i, (subject, data, hdrs) in enumerate(chunk, start=1):
            lines = [f"{name}: {value}" for name, value in hdrs.items()]
            lines += [f"Nats-Batch-Id: {batch_id}", f"Nats-Batch-Sequence: {i}"]
            reply = ""
            if i == len(chunk):
                lines.append("Nats-Batch-Commit: 1")
                reply = f" {reply_prefix}{k}"
            head = ("NATS/1.0\r\n" + "".join(f"{line}\r\n" for line in lines) + "\r\n").encode()
            out += f"HPUB {subject}{reply} {len(head)} {len(head) + len(data)}\r\n".encode()
            out += head + data + b"\r\n"
        blobs.append(bytes(out))
    return blobs


class WireClient:
    """A bare NATS protocol client on an asyncio socket, for the server's ceiling.

    It sends pre-encoded atomic batches, ``depth`` in flight, and reads the commit
    replies; no nats-py code runs, so the rate it reaches is what the server can
    store with (almost) no client cost.
    """

    REPLY_PREFIX = "_BENCH.commit."

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.depth = 4

    @classmethod
    async def connect(cls, url: str) -> WireClient:
        host, _, port = url.removeprefix("nats://").rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        await reader.readline()  # INFO
        options = {"verbose": False, "pedantic": False, "headers": True, "protocol": 1}
        writer.write(f"CONNECT {json.dumps(options)}\r\n".encode())
        writer.write(f"SUB {cls.REPLY_PREFIX}* 1\r\nPING\r\n".encode())
        await writer.drain()
        if (await reader.readline()).strip() != b"PONG":
            raise RuntimeError("the server did not answer the bench client's PING")
        return cls(reader, writer)

    async def send_batches(self, blobs: Sequence[bytes]) -> None:
        sent = received = 0
        while sent < min(self.depth, len(blobs)):
            self.writer.write(blobs[sent])
            sent += 1
        await self.writer.drain()
        while received < len(blobs):
            line = await self.reader.readline()
            if line.startswith(b"MSG"):
                body = await self.reader.readexactly(int(line.split()[-1]) + 2)
                if b'"error"' in body:
                    raise RuntimeError(f"server refused a batch: {body[:200]!r}")
                received += 1
                if sent < len(blobs):
                    self.writer.write(blobs[sent])
                    sent += 1
                    await self.writer.drain()
            elif line.startswith(b"PING"):
                self.writer.write(b"PONG\r\n")
            elif not line.startswith((b"INFO", b"+OK", b"PONG")):
                raise RuntimeError(f"unexpected from the server: {line[:200]!r}")

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def log_append_many(log: JetStreamEventLog, items: Sequence[NewEvent]) -> None:
    results = await log.append_many(items)
    if any(r.duplicate for r in results):
        raise RuntimeError("append_many hit dedup; subjects are not fresh")


async def log_append_batch(log: JetStreamEventLog, items: Sequence[NewEvent]) -> None:
    result = await log.append_batch(items)
    if result.duplicates or result.count != len(items):
        raise RuntimeError(f"append_batch stored an unexpected result: {result}")


async def timed(op: Callable[[], Awaitable[None]], n: int) -> float:
    """Events per second of one operation over ``n`` events."""
    start = time.perf_counter()
    await asyncio.wait_for(op(), timeout=_OP_TIMEOUT_S)
    return n / (time.perf_counter() - start)


# -- the run ---------------------------------------------------------------------------


MEASUREMENTS = (
    "raw_publish_async",
    "log_append_many",
    "raw_atomic_batch",
    "wire_atomic_batch",
    "log_append_batch",
)


async def measure(url: str, n: int, rounds: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in MEASUREMENTS}
    raw_nc = await nats.connect(url)
    log_nc = await nats.connect(url)
    wire = await WireClient.connect(url)
    try:
        specs = load_stream_specs()
        await apply_streams(raw_nc, specs)
        log = JetStreamEventLog(log_nc, specs)
        run = uuid.uuid4().hex[:6]

        def prepare(name: str, rnd: int) -> Callable[[], Awaitable[None]]:
            # Encoding the raw sides' messages happens here, outside the timer.
            events = make_events(n, f"{run}-{rnd}-{name}")
            items = [NewEvent(event=e) for e in events]
            if name == "log_append_many":
                return lambda: log_append_many(log, items)
            if name == "log_append_batch":
                return lambda: log_append_batch(log, items)
            msgs = raw_messages(events)
            if name == "raw_publish_async":
                return lambda: raw_publish_async(raw_nc, msgs)
            if name == "raw_atomic_batch":
                return lambda: raw_atomic_batch(raw_nc, msgs)
            blobs = wire_batches(msgs, WireClient.REPLY_PREFIX)
            return lambda: wire.send_batches(blobs)

        # Round 0 warms up the server's files and the clients; it is not reported.
        for rnd in range(rounds + 1):
            ops = {name: prepare(name, rnd) for name in MEASUREMENTS}
            # Alternate the order each round so neither side always runs on a warmer
            # server (or right after the other side's disk flush).
            order = MEASUREMENTS if rnd % 2 == 0 else MEASUREMENTS[::-1]
            for name in order:
                rate = await timed(ops[name], n)
                if rnd > 0:
                    samples[name].append(rate)
        return samples
    finally:
        await wire.close()
        await log_nc.drain()
        await raw_nc.drain()


def paired_ratio(samples: dict[str, list[float]], name: str, baseline: str) -> float:
    """Median over rounds of name/baseline measured in the same round (noise-robust)."""
    return statistics.median(a / b for a, b in zip(samples[name], samples[baseline], strict=True))


def report(samples: dict[str, list[float]]) -> list[dict[str, Any]]:
    med = {k: statistics.median(v) for k, v in samples.items()}
    many_ratio = paired_ratio(samples, "log_append_many", "raw_publish_async")
    return [
        {"name": "raw js.publish_async (msg/s)", "value": med["raw_publish_async"]},
        {
            "name": "EventLog.append_many (events/s)",
            "value": med["log_append_many"],
            "baseline": med["raw_publish_async"],
            "ratio": many_ratio,
            "goal": f">= {PUBLISH_RATIO_GOAL}x raw",
            "met": many_ratio >= PUBLISH_RATIO_GOAL,
        },
        {"name": "raw atomic batch x1000 (events/s)", "value": med["raw_atomic_batch"]},
        {"name": "server ceiling: pre-encoded batches", "value": med["wire_atomic_batch"]},
        {
            "name": "EventLog.append_batch (events/s)",
            "value": med["log_append_batch"],
            "baseline": med["raw_atomic_batch"],
            "ratio": paired_ratio(samples, "log_append_batch", "raw_atomic_batch"),
            "goal": f">= {BATCH_RATE_GOAL:,.0f}/s",
            "met": med["log_append_batch"] >= BATCH_RATE_GOAL,
        },
        {
            "name": "  append_batch vs server ceiling",
            "value": med["log_append_batch"],
            "baseline": med["wire_atomic_batch"],
            "ratio": paired_ratio(samples, "log_append_batch", "wire_atomic_batch"),
        },
    ]


def print_table(rows: list[dict[str, Any]], samples: dict[str, list[float]], n: int) -> None:
    header = f"{'name':<36} {'value':>10} {'baseline':>10} {'ratio':>7} {'goal':>16} {'met?':>5}"
    print(f"{n:,} events per measurement, median of {len(next(iter(samples.values())))} rounds")
    print(header)
    print("-" * len(header))
    for row in rows:
        baseline = f"{row['baseline']:>10,.0f}" if "baseline" in row else f"{'':>10}"
        ratio = f"{row['ratio']:>6.2f}x" if "ratio" in row else f"{'':>7}"
        met = ("yes" if row["met"] else "NO") if "met" in row else ""
        print(
            f"{row['name']:<36} {row['value']:>10,.0f} {baseline} {ratio} "
            f"{row.get('goal', ''):>16} {met:>5}"
        )
    print()
    for name, values in samples.items():
        print(f"  {name:<20} rounds: " + ", ".join(f"{v:,.0f}" for v in values))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.events < 1 or args.rounds < 1:
        parser.error("--events and --rounds must be positive")
    with nats_server() as url:
        samples = asyncio.run(measure(url, args.events, args.rounds))
    rows = report(samples)
    if args.json:
        print(json.dumps({"events": args.events, "rounds": samples, "results": rows}, indent=2))
    else:
        print_table(rows, samples, args.events)
    return 0


if __name__ == "__main__":
    sys.exit(main())
