"""Wall clock against CPU clock: how well each tells a slower commit from a faster one.

Usage::

    python tests/benchmarks/bench_clock.py [--rounds 5] [--repeat 3] [--json]

The confirm step's question, on this machine as it is loaded now: two versions of a
function (``--fast`` and ``--slow`` loop iterations, each run as ``python -c``, so every
sample includes the interpreter's start-up) are measured by the timing harness
(:mod:`aqe.perf.harness`, the code ``aqe bench run`` runs) in A B A B order, ``--rounds``
pairs of ``--repeat`` timed runs, once on the wall clock and once on the CPU clock,
the two clocks' steps interleaved too. For each clock: the medians, the measured ratio
slow / fast, the spread of the fast samples (p90 / p10) and the Mann-Whitney p that the
confirm step's verdict rests on. The baseline is the wall clock, measured in the same
run; the line to read is the ratio of the spreads.

It reports; it exits 0 whatever the numbers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
from scipy.stats import mannwhitneyu  # type: ignore[import-untyped]

from aqe.perf.harness import CLOCKS, harness_argv, parse_samples

WORK = "t = 0\nfor i in range({n}):\n    t += i * i\n"


def samples(n: int, clock: str, repeat: int) -> list[float]:
    argv = harness_argv(
        [sys.executable, "-c", WORK.format(n=n)], warmup=1, repeat=repeat, clock=clock
    )
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=True)
    found, _ = parse_samples(out.stdout)
    return list(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--fast", type=int, default=100_000)
    parser.add_argument("--slow", type=int, default=2_000_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    got: dict[str, dict[str, list[float]]] = {c: {"a": [], "b": []} for c in CLOCKS}
    for _ in range(args.rounds):
        for side, n in (("a", args.fast), ("b", args.slow)):
            for clock in CLOCKS:
                got[clock][side] += samples(n, clock, args.repeat)

    rows = {}
    for clock in CLOCKS:
        a, b = np.asarray(got[clock]["a"]), np.asarray(got[clock]["b"])
        p10, p90 = np.percentile(a, [10, 90])
        rows[clock] = {
            "fast_median_s": float(np.median(a)),
            "slow_median_s": float(np.median(b)),
            "ratio": float(np.median(b) / np.median(a)),
            "spread_p90_p10": float(p90 / p10),
            "p_value": float(mannwhitneyu(a, b, alternative="two-sided").pvalue),
            "samples_a_side": int(a.size),
        }
    summary = {
        "clocks": rows,
        "wall_spread_over_cpu_spread": rows["wall"]["spread_p90_p10"]
        / rows["cpu"]["spread_p90_p10"],
        "loadavg": open("/proc/loadavg").read().split()[:3],  # noqa: SIM115
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    side = rows["wall"]["samples_a_side"]
    print(f"fast {args.fast:,} vs slow {args.slow:,} iterations, {side} samples a side")
    for clock, r in rows.items():
        fast, slow = r["fast_median_s"] * 1e3, r["slow_median_s"] * 1e3
        print(
            f"{clock:>4}: fast {fast:7.1f} ms  slow {slow:7.1f} ms  ratio {r['ratio']:5.2f}"
            f"  spread p90/p10 {r['spread_p90_p10']:5.2f}  p {r['p_value']:.2g}"
        )
    print(f"wall spread / cpu spread: {summary['wall_spread_over_cpu_spread']:.2f}x")
    print(f"load average: {' '.join(summary['loadavg'])}")


if __name__ == "__main__":
    main()
