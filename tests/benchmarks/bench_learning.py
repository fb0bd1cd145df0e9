"""Training time of every prioritisation algorithm on the earliest IOF/ROL verdicts.

Usage::

    python tests/benchmarks/bench_learning.py [--verdicts 1000] [--seed 0] [--json]

Replays the earliest IOF/ROL cycles holding at least ``--verdicts`` verdicts through
each algorithm (online: rank, observe, train, as ``aqe learn eval`` does) and prints
the seconds spent in ``train()`` and in total, next to the failure-count baseline
measured in the same run. The issue's goal is under 10 s per algorithm on 2 cores;
the script reports, it never fails on a missed goal.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from aqe.ingest.iofrol import find_iofrol
from aqe.learning.evaluate import evaluate_online
from aqe.learning.features import cycles_from_iofrol
from aqe.learning.registry import BASELINES, LEARNERS, make_policy

GOAL_S = 10.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verdicts", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    path = find_iofrol()
    if path is None:
        print("skipped: $AQE_IOFROL names no file (unset it to use data/iofrol.csv.gz)")
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
        started = time.perf_counter()
        report = evaluate_online(make_policy(name, seed=args.seed), cycles)
        total = time.perf_counter() - started
        rows.append(
            {
                "algorithm": name,
                "train_s": round(report.train_seconds, 3),
                "total_s": round(total, 3),
                "met": total < GOAL_S,
            }
        )
    baseline = next(r["total_s"] for r in rows if r["algorithm"] == "failure-count")
    if args.json:
        print(json.dumps({"cycles": len(cycles), "verdicts": seen, "rows": rows}, indent=2))
        return 0
    print(f"{seen:,} verdicts in the first {len(cycles)} IOF/ROL cycles, seed {args.seed}")
    print(f"{'algorithm':<22}{'train s':>9}{'total s':>9}{'vs failure-count':>18}{'< 10 s':>8}")
    for r in rows:
        ratio = r["total_s"] / baseline if baseline else float("inf")
        print(
            f"{r['algorithm']:<22}{r['train_s']:>9.2f}{r['total_s']:>9.2f}"
            f"{ratio:>17.0f}x{'yes' if r['met'] else 'NO':>8}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
