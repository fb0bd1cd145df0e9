"""IOF/ROL end to end through JetStream: ingest and history fold vs the runtime's replay.

Run with ``just bench`` (or ``python tests/benchmarks/bench_ingest.py``). It reads the
ABB IOF/ROL CI history (``../shared/data/iofrol.csv`` or ``$AQE_IOFROL``; it skips,
exit 0, when the file is absent), starts its own nats-server and measures in
interleaved rounds on that server, each round on a freshly created ``AQE_TESTS``
stream (deleted and re-created, so deduplication never turns an append into a
duplicate):

* raw append: ``append_batch`` of the already built events, one call (atomic chunks
  of 1,000; the ingest's ceiling);
* ingest: ``cycle_events`` (rows to events) and one ``append_batch`` per cycle, as a
  loader does it;
* history fold: ``ProjectionRunner`` folding ``HistoryProjection`` from sequence 0
  into a fresh directory (decode, apply, snapshots every 10,000 events, each also
  materialising the LanceDB ``tests`` and ``runs`` tables);
* catalog replay: ``ProjectionRunner`` folding ``CatalogProjection`` over the same
  events, the projection-runtime rate ``bench_replay.py`` measures (the baseline).

Parsing the CSV is outside every measurement (it is done once). LanceDB is imported
before the first round so that no round pays for the import. It prints medians and
ratios against the catalog replay of the same run; it asserts no time.
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
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
from nats.aio.client import Client

from aqe.ingest.iofrol import IofrolRow, cycle_events, find_iofrol, read_iofrol
from aqe.log import NewEvent, load_stream_specs
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.projections import CatalogProjection, MemoryDeadLetters, ProjectionRunner, SnapshotStore
from aqe.projections.base import Projection
from aqe.projections.history import HistoryProjection
from aqe.server import NatsServerProcess

STREAM = "AQE_TESTS"


async def fresh_stream(nc: Client) -> None:
    js = nc.jetstream()
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await js.delete_stream(STREAM)
    await apply_streams(nc, load_stream_specs())


async def raw_append(log: JetStreamEventLog, items: list[NewEvent]) -> float:
    started = time.perf_counter()
    result = await log.append_batch(items)
    elapsed = time.perf_counter() - started
    assert result.duplicates == 0, result
    return len(items) / elapsed


async def ingest(log: JetStreamEventLog, rows: list[IofrolRow]) -> tuple[float, int]:
    started = time.perf_counter()
    count = 0
    for _cycle, events in cycle_events(rows):
        result = await log.append_batch([NewEvent(event=e) for e in events])
        assert result.duplicates == 0, result
        count += len(events)
    return count / (time.perf_counter() - started), count


async def fold(
    log: JetStreamEventLog, projection: Projection[Any], directory: Path, n: int
) -> float:
    store = SnapshotStore(projection, directory)
    runner = ProjectionRunner(projection, log, store, MemoryDeadLetters())
    started = time.perf_counter()
    stats = await runner.run()
    elapsed = time.perf_counter() - started
    assert stats.applied == n, stats
    assert stats.dead_letters == 0, stats
    return n / elapsed


async def main(path: Path, rounds: int, as_json: bool) -> int:
    import lancedb  # noqa: F401 - imported up front: no round pays for it

    rows = read_iofrol(path)
    prebuilt = [NewEvent(event=e) for _, events in cycle_events(rows) for e in events]
    n = len(prebuilt)
    results: dict[str, list[float]] = {"raw": [], "ingest": [], "history": [], "catalog": []}
    with tempfile.TemporaryDirectory(prefix="aqe-bench-ingest-") as tmp:
        workdir = Path(tmp)
        server = await NatsServerProcess.start(workdir / "js", log_file=workdir / "nats.log")
        try:
            nc = await nats.connect(server.url, pending_size=64 * 1024 * 1024)
            log = JetStreamEventLog(nc, load_stream_specs())
            for r in range(rounds):  # interleaved so noise hits every side alike
                await fresh_stream(nc)
                results["raw"].append(await raw_append(log, prebuilt))
                await fresh_stream(nc)
                rate, count = await ingest(log, rows)
                assert count == n, (count, n)
                results["ingest"].append(rate)
                results["history"].append(
                    await fold(log, HistoryProjection(), workdir / f"history-{r}", n)
                )
                results["catalog"].append(
                    await fold(log, CatalogProjection(), workdir / f"catalog-{r}", n)
                )
            await nc.close()
        finally:
            await server.stop()
    med = {k: statistics.median(v) for k, v in results.items()}
    base = med["catalog"]
    rows_out = [
        ("catalog replay (runtime baseline)", med["catalog"]),
        ("history fold (HistoryProjection)", med["history"]),
        ("ingest (cycle_events + batch/cycle)", med["ingest"]),
        ("raw append_batch (prebuilt, 1 call)", med["raw"]),
    ]
    if as_json:
        print(
            json.dumps(
                {
                    "rows": len(rows),
                    "events": n,
                    "rounds": rounds,
                    "results": [
                        {
                            "name": name,
                            "events_per_s": round(rate),
                            "vs_catalog": round(rate / base, 3),
                        }
                        for name, rate in rows_out
                    ],
                }
            )
        )
        return 0
    print(
        f"IOF/ROL: {len(rows):,} rows -> {n:,} events in {len(cycle_events(rows))} cycles, "
        f"median of {rounds} interleaved rounds, nats-server {server.version}"
    )
    print(f"{'measurement':38} {'events/s':>10} {'seconds':>8} {'vs catalog':>10}")
    for name, rate in rows_out:
        print(f"{name:38} {rate:>10,.0f} {n / rate:>8.2f} {rate / base:>9.2f}x")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    found = find_iofrol()
    if found is None:
        print(
            "bench_ingest: skipped, $AQE_IOFROL names no file (unset it to use data/iofrol.csv.gz)"
        )
        sys.exit(0)
    sys.exit(asyncio.run(main(found, args.rounds, args.json)))
