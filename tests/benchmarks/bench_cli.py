"""How fast the query commands answer, against starting Python at all.

Run with ``just bench`` (or ``python tests/benchmarks/bench_cli.py``). It runs
``aqe demo`` into a fresh data directory (its embedded nats-server; the demo's
history: 39 tests, 6 runs), then times, in interleaved rounds, each as a fresh
process the way a shell runs it:

* ``python -c pass`` (the baseline: the interpreter's own start);
* ``aqe runs``, ``aqe flaky``, ``aqe broken``, ``aqe history`` (each first folds what
  the log has that the projection lacks: connects to the server);
* the same with ``--offline`` (answered from the projection alone).

Bytecode is cached (``PYTHONDONTWRITEBYTECODE`` dropped, caches in a temporary
``PYTHONPYCACHEPREFIX``), as for any installed package; an untimed first pass writes it.

It prints the median seconds of each and its ratio to the baseline measured in the
same run; it asserts no time. The embedded server is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = ("runs", "flaky", "broken", "history")


def _timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, timeout=120)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="Timed runs of each command.")
    args = parser.parse_args()
    aqe = [sys.executable, "-m", "aqe.cli"]
    with tempfile.TemporaryDirectory(prefix="aqe-bench-cli-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AQE_")}
        env["AQE_DATA_DIR"] = str(Path(tmp) / "data")
        # Bytecode cached as in any installed package, kept out of the source tree.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        subprocess.run(
            [*aqe, "demo", "--runs", "6", "-q"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=600,
        )
        cases = {"python -c pass": [sys.executable, "-c", "pass"]}
        for command in COMMANDS:
            cases[f"aqe {command}"] = [*aqe, command]
            cases[f"aqe {command} --offline"] = [*aqe, command, "--offline"]
        try:
            for argv in cases.values():  # warm the OS caches once, untimed
                _timed(argv, env)
            times: dict[str, list[float]] = {name: [] for name in cases}
            for _ in range(args.rounds):
                for name, argv in cases.items():
                    times[name].append(_timed(argv, env))
        finally:
            subprocess.run([*aqe, "server", "stop"], env=env, check=False, timeout=60)
    base = statistics.median(times["python -c pass"])
    print(f"median of {args.rounds} runs each, the demo's history (39 tests, 6 runs)")
    print(f"{'command':<28} {'median s':>9} {'x python -c pass':>17}")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:<28} {median:>9.3f} {median / base:>17.1f}")


if __name__ == "__main__":
    main()
