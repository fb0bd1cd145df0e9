"""Training time of every prioritisation algorithm on the earliest IOF/ROL verdicts.

Usage::

    python tests/benchmarks/bench_learning.py [--verdicts 1000] [--seed 0] [--json]
    python tests/benchmarks/bench_learning.py --table runs.jsonl [--seeds 5]
        [--protocol aqe,rows] [--algo a,b,...] [--summary]

Replays the earliest IOF/ROL cycles holding at least ``--verdicts`` verdicts through
each algorithm (online: rank, observe, train, as ``aqe learn eval`` does) and prints
the seconds spent in ``train()`` and in total, next to the failure-count baseline
measured in the same run. The issue's goal is under 10 s per algorithm on 2 cores;
the script reports, it never fails on a missed goal.

``--table FILE`` is the evaluation table instead (what ``aqe learn eval --protocol P
--seeds N`` prints, for both protocols): every (seed, protocol, algorithm) replay of
the whole IOF/ROL history appends one JSON line to FILE, seed by seed, so an
interrupted run keeps its complete seeds and a rerun skips what FILE holds;
``--summary`` prints the markdown tables (mean ± sd over the seeds each row has) from
FILE without running anything.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from aqe.ingest.iofrol import find_iofrol
from aqe.learning.evaluate import evaluate_online
from aqe.learning.features import cycles_from_iofrol
from aqe.learning.registry import BASELINES, LEARNERS, ORACLES, make_policy

GOAL_S = 10.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verdicts", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--table", metavar="FILE", help="JSON lines of the evaluation table")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--protocol", default="aqe,rows")
    parser.add_argument("--algo", default=",".join([*BASELINES, *LEARNERS]))
    parser.add_argument("--summary", action="store_true")
    args = parser.parse_args(argv)
    path = find_iofrol()
    if path is None:
        print("skipped: $AQE_IOFROL names no file (unset it to use data/iofrol.csv.gz)")
        return 0
    if args.table:
        protocols = args.protocol.split(",")
        if not args.summary:
            table(path, args.table, protocols, args.algo.split(","), args.seeds)
        print(summary(args.table, protocols))
        return 0
    cycles = []
    seen = 0
    for cycle in cycles_from_iofrol(path):
        cycles.append(cycle)
        seen += len(cycle.test_ids)
        if seen >= args.verdicts:
            break
    rows = []
    for name in [*BASELINES, *LEARNERS]:
        started, cpu = time.perf_counter(), time.process_time()
        report = evaluate_online(make_policy(name, seed=args.seed), cycles)
        total = time.perf_counter() - started
        rows.append(
            {
                "algorithm": name,
                "train_s": round(report.train_seconds, 3),
                "total_s": round(total, 3),
                "cpu_s": round(time.process_time() - cpu, 3),
                "met": total < GOAL_S,
            }
        )
    baseline = next(r["total_s"] for r in rows if r["algorithm"] == "failure-count")
    if args.json:
        print(json.dumps({"cycles": len(cycles), "verdicts": seen, "rows": rows}, indent=2))
        return 0
    print(f"{seen:,} verdicts in the first {len(cycles)} IOF/ROL cycles, seed {args.seed}")
    print("(wall seconds; cpu s = this process's CPU time, what a loaded machine inflates least)")
    print(
        f"{'algorithm':<22}{'train s':>9}{'total s':>9}{'cpu s':>8}{'vs failure-count':>18}"
        f"{'< 10 s':>8}"
    )
    for r in rows:
        ratio = r["total_s"] / baseline if baseline else float("inf")
        print(
            f"{r['algorithm']:<22}{r['train_s']:>9.2f}{r['total_s']:>9.2f}{r['cpu_s']:>8.2f}"
            f"{ratio:>17.0f}x{'yes' if r['met'] else 'NO':>8}"
        )
    return 0


def table(path: object, out: str, protocols: list[str], names: list[str], seeds: int) -> None:
    """Append one JSON line per (seed, protocol, algorithm) not yet in ``out``."""
    import msgspec

    from aqe.learning.evaluate import expected_random
    from aqe.learning.features import cycles_from_iofrol_rows

    done: set[tuple[int, str, str]] = set()
    try:
        with open(out, encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                done.add((row["seed"], row["protocol"], row["policy"]))
    except FileNotFoundError:
        pass
    histories = {
        p: (cycles_from_iofrol_rows if p == "rows" else cycles_from_iofrol)(path)  # type: ignore[arg-type]
        for p in protocols
    }
    with open(out, "a", encoding="utf-8") as fh:
        for p in protocols:
            for name, make in (
                ("random (expected)", lambda p=p: expected_random(histories[p], protocol=p)),
                *((o, lambda o=o, p=p: _run(o, 0, histories[p], p)) for o in ORACLES),
            ):
                if (0, p, name) not in done:
                    _append(fh, make())
        for seed in range(seeds):
            for p in protocols:
                for name in names:
                    if (seed, p, name) in done:
                        continue
                    started = time.perf_counter()
                    report = _run(name, seed, histories[p], p)
                    print(
                        f"seed {seed} {p} {name}: APFD {report.mean_apfd:.4f} "
                        f"({time.perf_counter() - started:.0f} s)",
                        file=sys.stderr,
                        flush=True,
                    )
                    _append(fh, report)
    del msgspec


def _run(name: str, seed: int, cycles: list, protocol: str):  # type: ignore[no-untyped-def,type-arg]
    return evaluate_online(make_policy(name, seed=seed), cycles, protocol=protocol)


def _append(fh, report) -> None:  # type: ignore[no-untyped-def]
    import msgspec

    row = {k: v for k, v in msgspec.to_builtins(report).items() if k not in ("per_cycle",)}
    fh.write(json.dumps(row) + "\n")
    fh.flush()


def summary(out: str, protocols: list[str]) -> str:
    """Markdown tables, one per protocol, from the JSON lines in ``out``."""
    import msgspec

    from aqe.learning.evaluate import EvalReport, across_seeds

    by: dict[tuple[str, str], list[EvalReport]] = {}
    with open(out, encoding="utf-8") as fh:
        for line in fh:
            report = msgspec.convert(json.loads(line), EvalReport)
            by.setdefault((report.protocol, report.policy), []).append(report)
    parts = []
    for p in protocols:
        sums = [across_seeds(v) for (pp, _), v in by.items() if pp == p]
        sums.sort(key=lambda x: -(x.mean["mean_apfd"] or 0.0))
        if not sums:
            continue
        head = sums[0]
        order = p == "aqe"
        cols = ["algorithm", "seeds", "APFD"] + (["APFD (order matters)"] if order else [])
        cols += ["NAPFD@50%", "normalised", "train s", "inference s"]
        lines = [
            f"protocol {p}: {head.failing_cycles} cycles counted"
            + (f", {head.order_cycles} where order can matter" if order else ""),
            "",
            "| " + " | ".join(cols) + " |",
            "| --- |" + " ---: |" * (len(cols) - 1),
        ]
        for sm in sums:
            cells = [sm.policy, str(len(sm.seeds)), _pm(sm, "mean_apfd")]
            if order:
                cells.append(_pm(sm, "mean_apfd_order"))
            cells += [
                _pm(sm, "mean_napfd"),
                _pm(sm, "normalised"),
                f"{sm.mean['train_seconds'] or 0.0:.1f}",
                f"{sm.mean['inference_seconds'] or 0.0:.2f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _pm(sm, field: str) -> str:  # type: ignore[no-untyped-def]
    value, spread = sm.mean[field], sm.std[field]
    if value is None:
        return "-"
    return f"{value:.3f}" if not spread or spread < 5e-4 else f"{value:.3f} ± {spread:.3f}"


if __name__ == "__main__":
    sys.exit(main())
