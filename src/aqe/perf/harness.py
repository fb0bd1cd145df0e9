"""Measuring a command: warm-up runs, then timed repetitions, every sample kept.

The timing loop is a small stdlib-only script (:data:`HARNESS`) run by the sandbox's
Python inside the working copy, so it measures the command where it runs (a runner's
sandbox at a commit) without aqe installed there. It prints one line,
``AQE-BENCH {"samples": [...], "exit": N}``, which :func:`parse_samples` reads back
from the run's stdout.

Two clocks (:data:`CLOCKS`): ``wall`` (the default) times each run with
``time.perf_counter``; ``cpu`` takes the run's user + system CPU time from the
operating system's accounting of waited-for children (``getrusage(RUSAGE_CHILDREN)``),
which a busy machine stretches far less than wall time (the run waits for a core
without being charged for it). A series measured on one clock is confirmed on the same
clock: :func:`metric_of` and :func:`clock_of` map one to the other.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from aqe.errors import ConfigError

__all__ = [
    "CLOCKS",
    "HARNESS",
    "MARKER",
    "clock_of",
    "harness_argv",
    "metric_of",
    "parse_samples",
]

MARKER = "AQE-BENCH"

HARNESS = r"""
import json, resource, subprocess, sys, time
warmup, repeat, clock = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
cmd = sys.argv[5:]
def now():
    if clock == "cpu":
        used = resource.getrusage(resource.RUSAGE_CHILDREN)
        return used.ru_utime + used.ru_stime
    return time.perf_counter()
samples, code = [], 0
for i in range(warmup + repeat):
    began = now()
    code = subprocess.call(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    took = now() - began
    if code != 0:
        break
    if i >= warmup:
        samples.append(took)
print("AQE-BENCH " + json.dumps({"samples": samples, "exit": code}), flush=True)
sys.exit(1 if code else 0)
"""


CLOCKS = ("wall", "cpu")
"""What a sample measures: elapsed time, or the CPU time the command used."""

_METRICS = {"wall": "time", "cpu": "cpu-time"}


def metric_of(clock: str) -> str:
    """The series metric a clock's samples belong to (``time`` or ``cpu-time``)."""
    return _METRICS.get(clock, "time")


def clock_of(metric: str) -> str:
    """The clock that measures ``metric`` again (``wall`` for any other metric)."""
    return "cpu" if metric == _METRICS["cpu"] else "wall"


def harness_argv(
    command: Sequence[str],
    *,
    warmup: int,
    repeat: int,
    python: str | None = None,
    clock: str = "wall",
) -> tuple[str, ...]:
    """The argv that runs ``command`` ``warmup`` + ``repeat`` times and prints the samples.

    Raises:
        ConfigError: no command, counts out of range, or an unknown clock.
    """
    if not command:
        raise ConfigError("bench: give the command to measure after --")
    if warmup < 0 or repeat < 1:
        raise ConfigError(f"bench: need warmup >= 0 and repeat >= 1, not {warmup} and {repeat}")
    if clock not in CLOCKS:
        raise ConfigError(f"bench: clock {clock!r} is not one of {', '.join(CLOCKS)}")
    return (
        python or sys.executable,
        "-c",
        HARNESS,
        str(warmup),
        str(repeat),
        clock,
        "--",
        *command,
    )


def parse_samples(stdout: str) -> tuple[tuple[float, ...], int]:
    """The samples and the command's last exit status from a harness run's stdout.

    Raises:
        ConfigError: the output holds no harness line (the harness did not run).
    """
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARKER + " "):
            try:
                doc = json.loads(line[len(MARKER) + 1 :])
                samples = tuple(float(v) for v in doc["samples"])
                return samples, int(doc["exit"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"bench: unreadable harness line {line[:80]!r}: {exc}") from exc
    raise ConfigError("bench: the run printed no AQE-BENCH line (did the harness start?)")
