"""Replay throughput: the projection runtime vs a bare ordered consumer.

Run with ``just bench`` (or ``python tests/benchmarks/bench_replay.py``). It starts its
own nats-server, appends N events, then measures in interleaved rounds on the same
server and data:

* bare: a nats-py ordered push consumer whose callback only counts messages;
* read: ``JetStreamEventLog.read`` (envelopes, no decoding);
* runner: ``ProjectionRunner`` folding the catalog projection (decode, apply,
  checkpointed snapshots) into a fresh directory each round.

It prints medians and ratios against the bare consumer measured in the same run; it
asserts no time (these machines are shared and noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nats
from nats.js.api import ConsumerConfig, DeliverPolicy

from aqe.events import TestCaseExecuted
from aqe.log import NewEvent, load_stream_specs
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.projections import CatalogProjection, MemoryDeadLetters, ProjectionRunner, SnapshotStore
from aqe.server import NatsServerProcess

GOAL = 0.8


def make_events(n: int) -> list[NewEvent]:
    return [
        NewEvent(
            event=TestCaseExecuted(
                test_id=f"tests/unit/test_mod{i % 50}.py::test_case[{i % 2000}]",
                run_id=f"run-{i // 2000}",
                outcome="failed" if i % 23 == 0 else "passed",
                duration_s=round((i % 97) / 100, 2),
            )
        )
        for i in range(n)
    ]


async def bare(nc: nats.NATS, n: int) -> float:
    js = nc.jetstream()
    done = asyncio.Event()
    count = 0

    async def on_msg(_msg: object) -> None:
        nonlocal count
        count += 1
        if count >= n:
            done.set()

    started = time.perf_counter()
    sub = await js.subscribe(
        "aqe.tests.>",
        stream="AQE_TESTS",
        cb=on_msg,
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        pending_msgs_limit=-1,
        pending_bytes_limit=-1,
    )
    await done.wait()
    elapsed = time.perf_counter() - started
    await sub.unsubscribe()
    return n / elapsed


async def read(log: JetStreamEventLog, n: int) -> float:
    started = time.perf_counter()
    count = 0
    async for _env in log.read("AQE_TESTS"):
        count += 1
    assert count == n, count
    return n / (time.perf_counter() - started)


async def runner(log: JetStreamEventLog, n: int, workdir: Path, round_no: int) -> float:
    projection = CatalogProjection()
    store = SnapshotStore(projection, workdir / f"catalog-{round_no}")
    started = time.perf_counter()
    stats = await ProjectionRunner(projection, log, store, MemoryDeadLetters()).run()
    elapsed = time.perf_counter() - started
    assert stats.applied == n, stats
    return n / elapsed


async def main(n: int, rounds: int, as_json: bool) -> int:
    with tempfile.TemporaryDirectory(prefix="aqe-bench-replay-") as tmp:
        workdir = Path(tmp)
        server = await NatsServerProcess.start(workdir / "js", log_file=workdir / "nats.log")
        try:
            nc = await nats.connect(server.url, pending_size=64 * 1024 * 1024)
            specs = load_stream_specs()
            await apply_streams(nc, specs)
            log = JetStreamEventLog(nc, specs)
            await log.append_batch(make_events(n))
            results: dict[str, list[float]] = {"bare": [], "read": [], "runner": []}
            for r in range(rounds):  # interleaved so noise hits every side alike
                results["bare"].append(await bare(nc, n))
                results["read"].append(await read(log, n))
                results["runner"].append(await runner(log, n, workdir, r))
            await nc.close()
        finally:
            await server.stop()
    med = {k: statistics.median(v) for k, v in results.items()}
    rows = [
        ("bare ordered consumer (baseline)", med["bare"], 1.0, None),
        ("EventLog.read (envelopes)", med["read"], med["read"] / med["bare"], None),
        ("projection runtime (catalog)", med["runner"], med["runner"] / med["bare"], GOAL),
    ]
    if as_json:
        print(
            json.dumps(
                {
                    "events": n,
                    "rounds": rounds,
                    "rows": [
                        {"name": a, "events_per_s": round(b), "ratio": round(c, 3), "goal": d}
                        for a, b, c, d in rows
                    ],
                }
            )
        )
        return 0
    print(
        f"replay of {n:,} events, median of {rounds} interleaved rounds, "
        f"nats-server {server.version}"
    )
    print(f"{'measurement':36} {'events/s':>10} {'vs bare':>8} {'goal':>6}  met?")
    for name, rate, ratio, goal in rows:
        met = "" if goal is None else ("yes" if ratio >= goal else "NO")
        goal_s = "" if goal is None else f">={goal:.1f}x"
        print(f"{name:36} {rate:>10,.0f} {ratio:>7.2f}x {goal_s:>6}  {met}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.events, args.rounds, args.json)))
