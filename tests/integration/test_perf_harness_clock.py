"""The timing harness's clocks on a real command: ``cpu`` counts the command's CPU time,
which a command that waits (for a core, for I/O, here for a timer) is not charged for;
``wall`` counts the wait."""

from __future__ import annotations

import subprocess
import sys

from aqe.perf.harness import harness_argv, parse_samples

NAP = 0.3
COMMAND = [sys.executable, "-c", f"import time; time.sleep({NAP})"]


def samples(clock: str) -> tuple[float, ...]:
    argv = harness_argv(COMMAND, warmup=0, repeat=2, clock=clock)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    found, code = parse_samples(out.stdout)
    assert code == 0
    return found


def test_the_cpu_clock_leaves_out_the_wait_the_wall_clock_counts() -> None:
    wall, cpu = samples("wall"), samples("cpu")
    assert len(wall) == len(cpu) == 2
    assert min(wall) >= NAP
    # The interpreter's start-up is all the CPU a sleeping command uses (about 20 ms).
    assert 0 < max(cpu) < NAP / 2
