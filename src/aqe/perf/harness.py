"""Measuring a command: warm-up runs, then timed repetitions, every sample kept.

The timing loop is a small stdlib-only script (:data:`HARNESS`) run by the sandbox's
Python inside the working copy, so it measures the command where it runs (a runner's
sandbox at a commit) without aqe installed there. It prints one line,
``AQE-BENCH {"samples": [...], "exit": N}``, which :func:`parse_samples` reads back
from the run's stdout.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from aqe.errors import ConfigError

__all__ = ["HARNESS", "MARKER", "harness_argv", "parse_samples"]

MARKER = "AQE-BENCH"

HARNESS = r"""
import json, subprocess, sys, time
warmup, repeat = int(sys.argv[1]), int(sys.argv[2])
cmd = sys.argv[4:]
samples, code = [], 0
for i in range(warmup + repeat):
    began = time.perf_counter()
    code = subprocess.call(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    took = time.perf_counter() - began
    if code != 0:
        break
    if i >= warmup:
        samples.append(took)
print("AQE-BENCH " + json.dumps({"samples": samples, "exit": code}), flush=True)
sys.exit(1 if code else 0)
"""


def harness_argv(
    command: Sequence[str], *, warmup: int, repeat: int, python: str | None = None
) -> tuple[str, ...]:
    """The argv that runs ``command`` ``warmup`` + ``repeat`` times and prints the samples.

    Raises:
        ConfigError: no command, or counts out of range.
    """
    if not command:
        raise ConfigError("bench: give the command to measure after --")
    if warmup < 0 or repeat < 1:
        raise ConfigError(f"bench: need warmup >= 0 and repeat >= 1, not {warmup} and {repeat}")
    return (python or sys.executable, "-c", HARNESS, str(warmup), str(repeat), "--", *command)


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
