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

It reports; it exits 0 whatever the numbers.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from aqe.perf.detect import detect_changes, threshold_alarms
from aqe.perf.quality import generate


def numpy_pass(data: np.ndarray) -> np.ndarray:
    """A robust noise summary per series: the work a plain vectorised pass does."""
    logs = np.log(data)
    diffs = np.diff(logs, axis=1)
    med = np.median(diffs, axis=1, keepdims=True)
    mad = np.median(np.abs(diffs - med), axis=1)
    return np.median(logs, axis=1) + mad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

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
