"""Sandbox start-up cost per backend against a bare subprocess, in one run.

Usage::

    python tests/benchmarks/bench_sandbox.py [--runs N] [--rounds R] [--json]

For each round (the order of the arms rotated so machine noise hits each alike) it runs
``true`` ``N`` times, one after another:

* **bare**: ``asyncio.create_subprocess_exec("true")`` and ``wait()``: the baseline;
* each backend that works here (``aqe.sandbox.available_backends()``) through
  ``Sandbox.run`` with a fresh working copy of a small source (one file) per run, the
  default limits (pids and memory cgroups where writable), output capture and reaping.

It prints the median and p90 milliseconds per run and the median's ratio to bare. The
script reports; it never fails on a number (exit 0), only on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aqe.sandbox import SandboxSpec, available_backends, open_sandbox


async def bare() -> None:
    proc = await asyncio.create_subprocess_exec("true")
    await proc.wait()


async def timed(one: Callable[[], Awaitable[object]], runs: int) -> list[float]:
    await one()  # warm: templates, imports, probes
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        await one()
        out.append((time.perf_counter() - started) * 1000)
    return out


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


async def main(runs: int, rounds: int) -> dict[str, dict[str, float]]:
    source = Path(tempfile.mkdtemp(prefix="aqe-bench-sandbox-"))
    (source / "README").write_text("bench\n")
    spec = SandboxSpec(source=str(source))
    arms: dict[str, Callable[[], Awaitable[object]]] = {"bare": bare}
    boxes = {name: open_sandbox(name) for name in available_backends()}
    for name, box in boxes.items():

        async def sandboxed(box: object = box) -> object:
            result = await box.run(spec, ["true"])  # type: ignore[attr-defined]
            if result.exit_code != 0:
                raise SystemExit(f"{box!r}: true failed: {result}")
            return result

        arms[name] = sandboxed
    samples: dict[str, list[float]] = {name: [] for name in arms}
    names = list(arms)
    for round_no in range(rounds):
        order = names[round_no % len(names) :] + names[: round_no % len(names)]
        for name in order:
            samples[name].extend(await timed(arms[name], runs))
    for box in boxes.values():
        box.close()  # type: ignore[attr-defined]
    base = statistics.median(samples["bare"])
    return {
        name: {
            "median_ms": statistics.median(values),
            "p90_ms": p90(values),
            "x_bare": statistics.median(values) / base,
        }
        for name, values in samples.items()
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="runs of `true` per arm per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = asyncio.run(main(args.runs, args.rounds))
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print(f"sandbox start-up: `true` x {args.runs} x {args.rounds} rounds")
        print(f"{'arm':<10} {'median ms':>10} {'p90 ms':>8} {'x bare':>7}")
        for name, row in report.items():
            print(
                f"{name:<10} {row['median_ms']:>10.2f} {row['p90_ms']:>8.2f} {row['x_bare']:>7.1f}"
            )
