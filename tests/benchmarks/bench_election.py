"""Leader failover time on a 3-node JetStream cluster, as a ratio to the lease period.

Usage::

    python tests/benchmarks/bench_election.py [--reps N] [--leases 1000,2000] [--json]

The script starts its own 3-node cluster (``aqe.server.LocalCluster``, ``AQE_COORD`` at
R3) and measures, for each lease length:

* **failover**: three candidates, each on its own connection to a different node, run
  :meth:`LeaderElection.run`; once one leads and has renewed, it crashes (its task is
  cancelled and its connection closed: no release, no goodbye). Failover is the time from
  the crash (wall clock) to the server timestamp of the next ``LeaseAcquired``; the
  candidates and the servers share this machine's clock. Reported as p50 and max over
  ``N`` repetitions, in ms and as a ratio to the lease. A crash lands at a random point
  of the renewal period, so the ideal ratio lies between ``1 - renew/lease`` (2/3 with
  the default renewal) and 1; anything above 1 is detection and acquisition lag, shown
  separately as "lag after expiry" (new acquisition minus expiry of the last renewal).
* **baseline**: uncontended acquisitions per second (read the lease, append the
  conditional ``LeaseAcquired``) by one candidate on fresh groups, measured in the same
  run: the cost of one election round trip, against which the lag is read.

The script reports; it never fails on a missed goal (exit 0), only on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import nats

from aqe.coordination.lease import LeaderElection, Lease
from aqe.events import LeaseAcquired
from aqe.log import load_stream_specs
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.server import LocalCluster

STREAM = "AQE_COORD"
NS_PER_MS = 1_000_000


@contextlib.asynccontextmanager
async def open_log(urls: list[str], *, apply: bool = False) -> AsyncIterator[JetStreamEventLog]:
    nc = await nats.connect(urls, connect_timeout=2, max_reconnect_attempts=10)
    specs = load_stream_specs()
    if apply:
        await apply_streams(nc, specs)
    log = JetStreamEventLog(nc, specs)
    try:
        yield log
    finally:
        await log.close()


async def one_failover(cluster: LocalCluster, group: str, lease_ms: int) -> dict[str, float]:
    """Crash the leader of a fresh group once; failover measured on server timestamps."""
    names = cluster.names
    conns = [
        await nats.connect([cluster.url(names[i % len(names)])], max_reconnect_attempts=10)
        for i in range(3)
    ]
    elected: asyncio.Queue[tuple[int, Lease]] = asyncio.Queue()
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    elections: list[LeaderElection] = []
    try:
        for i, nc in enumerate(conns):
            election = LeaderElection(JetStreamEventLog(nc), group, f"c{i}", lease_ms=lease_ms)
            elections.append(election)

            def on_elected(lease: Lease, i: int = i) -> None:
                elected.put_nowait((i, lease))

            tasks.append(asyncio.create_task(election.run(stop, on_elected=on_elected)))
        first, first_lease = await asyncio.wait_for(elected.get(), 30)
        # Hold it a while (renewals run), then crash at a random point of a renewal period.
        await asyncio.sleep(lease_ms / 1000 + (time.time_ns() % 1000) / 1000 * lease_ms / 3000)
        killed_at_ns = time.time_ns()
        tasks[first].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tasks[first]
        await conns[first].close()
        second, second_lease = await asyncio.wait_for(elected.get(), 30)
        reader = elections[second].log
        acquired = await reader.get(STREAM, second_lease.term)
        event = acquired.decode()
        assert isinstance(event, LeaseAcquired)
        previous = await reader.get(STREAM, event.after_seq)
        assert second != first
        assert event.after_seq >= first_lease.term
        return {
            "failover_ms": (acquired.recorded_at_ns - killed_at_ns) / NS_PER_MS,
            "lag_ms": (acquired.recorded_at_ns - previous.recorded_at_ns) / NS_PER_MS - lease_ms,
        }
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for nc in conns:
            with contextlib.suppress(Exception):
                await nc.close()


async def acquisitions_per_s(urls: list[str], count: int) -> dict[str, float]:
    """Uncontended acquisitions of fresh groups by one candidate, one after another."""
    async with open_log(urls) as log:
        latencies: list[float] = []
        start = time.perf_counter()
        for i in range(count):
            t0 = time.perf_counter()
            lease = await LeaderElection(log, f"base-{i}", "solo").try_acquire()
            latencies.append((time.perf_counter() - t0) * 1000)
            assert lease is not None
        elapsed = time.perf_counter() - start
    return {"per_s": count / elapsed, "p50_ms": statistics.median(latencies)}


async def measure(cluster: LocalCluster, reps: int, leases: Sequence[int]) -> dict[str, Any]:
    async with open_log(cluster.urls, apply=True):
        pass
    baseline = await acquisitions_per_s(cluster.urls, 200)
    rows = []
    for lease_ms in leases:
        samples = [
            await one_failover(cluster, f"bench-{lease_ms}-{i}", lease_ms) for i in range(reps)
        ]
        failovers = [s["failover_ms"] for s in samples]
        lags = [s["lag_ms"] for s in samples]
        rows.append(
            {
                "lease_ms": lease_ms,
                "reps": reps,
                "failover_p50_ms": statistics.median(failovers),
                "failover_max_ms": max(failovers),
                "p50_over_lease": statistics.median(failovers) / lease_ms,
                "max_over_lease": max(failovers) / lease_ms,
                "lag_p50_ms": statistics.median(lags),
                "lag_max_ms": max(lags),
                "lag_p50_in_acquisitions": statistics.median(lags) / baseline["p50_ms"],
                "samples_ms": [round(f, 1) for f in failovers],
            }
        )
    return {"baseline": baseline, "failover": rows}


def print_table(result: dict[str, Any]) -> None:
    base = result["baseline"]
    print(
        f"baseline: {base['per_s']:.0f} uncontended acquisitions/s "
        f"(p50 {base['p50_ms']:.2f} ms each), 3-node cluster, AQE_COORD at R3"
    )
    header = (
        f"{'lease ms':>8} {'reps':>4} {'p50 ms':>8} {'max ms':>8} {'p50/lease':>9} "
        f"{'max/lease':>9} {'lag p50 ms':>10} {'lag max ms':>10} {'lag/acq':>7}"
    )
    print(header)
    print("-" * len(header))
    for row in result["failover"]:
        print(
            f"{row['lease_ms']:>8} {row['reps']:>4} {row['failover_p50_ms']:>8.0f} "
            f"{row['failover_max_ms']:>8.0f} {row['p50_over_lease']:>9.2f} "
            f"{row['max_over_lease']:>9.2f} {row['lag_p50_ms']:>10.1f} "
            f"{row['lag_max_ms']:>10.1f} {row['lag_p50_in_acquisitions']:>7.1f}"
        )
    print(
        "failover: crash -> next LeaseAcquired (server timestamp); ideal ratio 0.67..1.00 "
        "(renewal every lease/3); lag: acquisition minus expiry of the last renewal"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="failovers per lease length")
    parser.add_argument("--leases", default="1000,2000", help="lease lengths in ms, comma-sep.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    leases = [int(x) for x in args.leases.split(",") if x.strip()]
    if args.reps < 1 or not leases or min(leases) < 100:
        parser.error("--reps must be positive and every lease at least 100 ms")
    workdir = Path(tempfile.mkdtemp(prefix="aqe-bench-election-"))
    try:
        with LocalCluster.start_sync(workdir / "cluster") as cluster:
            result = asyncio.run(measure(cluster, args.reps, leases))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
