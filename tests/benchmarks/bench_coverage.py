"""Coverage: events folded per second, and test impact analysis on a 10k-test suite.

Run with ``just bench`` (or ``python tests/benchmarks/bench_coverage.py``). In memory,
no server (the log's own throughput is bench_log's and bench_replay's business):

* fold: a synthetic suite's coverage runs (files with per-test lines, chunked as
  ``coverage_events`` chunks them) are decoded by the registry and folded by the
  coverage projection, against decoding alone, measured in the same run;
* tia: ``impacted_tests`` on a synthetic suite of 10,000 tests over 1,000 files with
  1,000 changed lines, against reading the projection's snapshot (its JSON decode),
  which any selection pays first.

Medians of interleaved rounds; ratios against the baseline; no time is asserted.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from aqe.coverage.measured import MeasuredFile, coverage_events
from aqe.coverage.projection import CoverageProjection, CoverageState
from aqe.coverage.tia import ChangedFile, impacted_tests
from aqe.events import Envelope, Event, TestRunFinished
from aqe.events._catalog import REGISTRY


def suite(files: int, tests: int, per_test_files: int, lines: int, seed: int) -> list[MeasuredFile]:
    rng = random.Random(seed)
    measured = [
        MeasuredFile(
            path=f"src/pkg/mod_{i}.py",
            statements=set(range(1, 201)),
            executed=set(range(1, 181)),
            branches={line: (2, 1 + line % 2) for line in range(5, 200, 10)},
        )
        for i in range(files)
    ]
    for t in range(tests):
        test_id = f"tests.test_mod_{t % 100}.test_{t}"
        for f in rng.sample(range(files), per_test_files):
            start = rng.randrange(1, 180 - lines)
            measured[f].tests[test_id] = set(range(start, start + lines))
    return measured


def envelopes(runs: int, files: list[MeasuredFile]) -> list[tuple[Envelope, bytes]]:
    out: list[tuple[Envelope, bytes]] = []
    seq = 0
    for run in range(runs):
        events: list[Event] = [*coverage_events(files, run_id=f"r{run}")]
        events.append(TestRunFinished(run_id=f"r{run}", total=1, passed=1, failed=0))
        for event in events:
            seq += 1
            data = event.to_json()
            stream = "AQE_TESTS" if isinstance(event, TestRunFinished) else "AQE_COVERAGE"
            env = Envelope(
                stream=stream,
                seq=seq,
                subject="aqe.coverage.run.x.recorded",
                event_id=str(seq),
                event_type=type(event).type_tag(),
                recorded_at_ns=seq,
                data=data,
            )
            out.append((env, data))
    return out


def decode_only(items: list[tuple[Envelope, bytes]]) -> float:
    start = time.perf_counter()
    for _env, data in items:
        REGISTRY.decode(data)
    return time.perf_counter() - start


def decode_and_fold(items: list[tuple[Envelope, bytes]]) -> float:
    proj = CoverageProjection()
    state = proj.initial()
    start = time.perf_counter()
    for env, data in items:
        state = proj.apply(state, env, REGISTRY.decode(data))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--tests", type=int, default=10_000)
    parser.add_argument("--changed", type=int, default=1000)
    args = parser.parse_args()

    # Fold: 200 files x 2,000 tests (3 files, 20 lines each), 5 runs.
    fold_files = suite(200, 2000, 3, 20, seed=1)
    items = envelopes(5, fold_files)
    chunks = sum(1 for env, _ in items if env.stream == "AQE_COVERAGE")
    mb = sum(len(d) for _, d in items) / 1e6
    base, fold = [], []
    for _ in range(args.rounds):
        base.append(decode_only(items))
        fold.append(decode_and_fold(items))
    b, f = statistics.median(base), statistics.median(fold)
    print(f"fold: 5 runs x 200 files x 2,000 tests = {chunks} chunks ({mb:.1f} MB JSON)")
    print(f"  decode only      {chunks / b:10.0f} chunks/s  {5 * 200 / b:10.0f} files/s")
    print(
        f"  decode + fold    {chunks / f:10.0f} chunks/s  {5 * 200 / f:10.0f} files/s  "
        f"ratio {b / f:.2f} of decode alone"
    )

    # TIA: 10k tests over 1k files, 1k changed lines in 100 files.
    big = suite(args.files, args.tests, 3, 30, seed=2)
    proj = CoverageProjection()
    state: CoverageState = proj.initial()
    for env, data in envelopes(1, big):
        state = proj.apply(state, env, REGISTRY.decode(data))
    snapshot = proj.encode(state)
    rng = random.Random(3)
    changes: dict[str, ChangedFile] = {}
    for f in rng.sample(range(args.files), 100):
        path = f"src/pkg/mod_{f}.py"
        changes[path] = ChangedFile(
            path=path, lines=set(rng.sample(range(1, 201), args.changed // 100))
        )
    pending = list(state.tests)
    reads, selects = [], []
    selected = 0
    for _ in range(args.rounds):
        start = time.perf_counter()
        proj.decode(snapshot)
        reads.append(time.perf_counter() - start)
        start = time.perf_counter()
        impact = impacted_tests(state, changes, pending=pending)
        selects.append(time.perf_counter() - start)
        selected = len(impact.reasons)
    r, s = statistics.median(reads), statistics.median(selects)
    print(
        f"tia: {len(pending)} tests, {args.files} files, "
        f"{sum(len(c.lines) for c in changes.values())} changed lines in {len(changes)} files "
        f"-> {selected} tests selected"
    )
    print(f"  read snapshot ({len(snapshot) / 1e6:.1f} MB)  {r * 1000:8.1f} ms")
    print(f"  select               {s * 1000:8.1f} ms  ratio {s / r:.2f} of reading the snapshot")


if __name__ == "__main__":
    main()
