"""Change-point detection time: 1,000 series of 1,000 points, against a plain numpy pass.

Usage::

    python tests/benchmarks/bench_perf.py [--series 1000] [--length 1000] [--json]

The series come from the labelled generator (:func:`aqe.perf.quality.generate`: noise,
drift, bimodality, outliers, steps). Three timings over the same data, in one run:

* **detect**: :func:`aqe.perf.detect.detect_changes` on every series (ruptures KernelCPD
  segmentation plus the Mann-Whitney check of each cut);
* **numpy pass**: the baseline, one vectorised pass a per-series summary takes
  (log, successive differences, median and MAD of each series) over the whole array;
* **threshold rule**: :func:`aqe.perf.detect.threshold_alarms` (a median over a window
  per point, in Python).

With ``--history N`` it measures a real benchmark history instead: ``import aqe.cli``
(what every ``aqe`` command pays first; ``--module`` names another) at each of this
repository's last N commits, each in a fresh sandbox checkout (the code of ``aqe bench
run``: a warm-up, then ``--repeat`` timed runs), oldest first; commits where the import
fails are skipped. Then change points and the fixed-threshold rule on that series, and
for every alarm of either the confirm step's A B A B re-runs of the two commits
(``--rounds`` pairs) say whether it was real.

It reports; it exits 0 whatever the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from aqe.errors import ConfigError
from aqe.perf._fingerprint import local_fingerprint
from aqe.perf.detect import detect_changes, threshold_alarms, verify_samples
from aqe.perf.measure import Source, measure, repo_url
from aqe.perf.quality import generate


def numpy_pass(data: np.ndarray) -> np.ndarray:
    """A robust noise summary per series: the work a plain vectorised pass does."""
    logs = np.log(data)
    diffs = np.diff(logs, axis=1)
    med = np.median(diffs, axis=1, keepdims=True)
    mad = np.median(np.abs(diffs - med), axis=1)
    return np.median(logs, axis=1) + mad


REPO = Path(__file__).resolve().parents[2]


async def _point(sha: str, repeat: int, module: str) -> list[float]:
    point = await measure(
        Source(repo_url(str(REPO)), sha),
        ["env", "PYTHONPATH=src", sys.executable, "-c", f"import {module}"],
        machine=local_fingerprint(),
        name=f"import {module}",
        warmup=1,
        repeat=repeat,
    )
    return list(point.samples)


async def history(n: int, repeat: int, rounds: int, module: str) -> dict[str, object]:
    """Measure the last ``n`` commits, detect, and re-run every alarm A B A B."""
    listed = await asyncio.to_thread(
        subprocess.run,
        ["git", "-C", str(REPO), "rev-list", "--first-parent", f"-{n}", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    )
    began = time.perf_counter()
    shas: list[str] = []
    samples: list[list[float]] = []
    broken: list[str] = []
    for sha in listed.stdout.split()[::-1]:
        try:
            samples.append(await _point(sha, repeat, module))
        except ConfigError:
            broken.append(sha[:10])  # the import fails at this commit: no point, as in CI
            continue
        shas.append(sha)
    measure_s = time.perf_counter() - began
    values = [statistics.median(s) for s in samples]
    changes = detect_changes(values)
    alarms = threshold_alarms(values)
    checked: dict[int, dict[str, object]] = {}
    for index in sorted({c.index for c in changes} | set(alarms)):
        before: list[float] = []
        after: list[float] = []
        for _ in range(rounds):  # A B A B ...
            before += await _point(shas[index - 1], repeat, module)
            after += await _point(shas[index], repeat, module)
        expected = values[index] / values[index - 1]
        v = verify_samples(before, after, expected=expected)
        checked[index] = {
            "commit": shas[index][:10],
            "confirmed": v.confirmed,
            "magnitude": round(v.magnitude, 4),
            "p_value": round(v.p_value, 6),
            "reason": v.reason,
        }
    cp = [c.index for c in changes]
    return {
        "benchmark": f"import {module}",
        "commits": len(shas),
        "broken_commits": broken,
        "measure_s": round(measure_s, 1),
        "medians_ms": [round(1000 * v, 1) for v in values],
        "change_points": cp,
        "change_points_confirmed": sum(bool(checked[i]["confirmed"]) for i in cp),
        "threshold_alarms": alarms,
        "threshold_confirmed": sum(bool(checked[i]["confirmed"]) for i in alarms),
        "checks": {str(k): v for k, v in checked.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--history", type=int, default=0, metavar="N", help="Real history mode.")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--module", default="aqe.cli", help="What the history imports.")
    args = parser.parse_args()
    if args.history:
        print(
            json.dumps(
                asyncio.run(history(args.history, args.repeat, args.rounds, args.module)), indent=1
            )
        )
        return

    made = time.perf_counter()
    series = generate(args.series, args.length, seed=11)
    data = np.array([s.values for s in series])
    made = time.perf_counter() - made

    began = time.perf_counter()
    numpy_pass(data)
    base_s = time.perf_counter() - began

    began = time.perf_counter()
    found = sum(len(detect_changes(s.values)) for s in series)
    detect_s = time.perf_counter() - began

    began = time.perf_counter()
    alarms = sum(len(threshold_alarms(s.values)) for s in series)
    threshold_s = time.perf_counter() - began

    result = {
        "series": args.series,
        "points": args.length,
        "true_changes": sum(len(s.changes) for s in series),
        "detected": found,
        "threshold_alarms": alarms,
        "generate_s": round(made, 3),
        "numpy_pass_s": round(base_s, 4),
        "detect_s": round(detect_s, 3),
        "detect_ms_per_series": round(1000 * detect_s / args.series, 3),
        "threshold_rule_s": round(threshold_s, 3),
        "detect_vs_numpy_pass": round(detect_s / base_s, 1),
        "detect_vs_threshold_rule": round(detect_s / threshold_s, 2),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"perf detection: {args.series} series x {args.length} points")
    per, true = result["detect_ms_per_series"], result["true_changes"]
    print(f"  detect          {detect_s:8.3f} s  ({per} ms a series; {found} found, {true} true)")
    print(f"  numpy pass      {base_s:8.4f} s  (detect = {result['detect_vs_numpy_pass']}x)")
    ratio = result["detect_vs_threshold_rule"]
    print(f"  threshold rule  {threshold_s:8.3f} s  (detect = {ratio}x; {alarms} alarms)")


if __name__ == "__main__":
    main()
