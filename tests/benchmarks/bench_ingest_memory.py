"""Peak memory of ``aqe ingest`` on one large JUnit report (issue 21, item 6).

Run with ``python tests/benchmarks/bench_ingest_memory.py [--cases 200000]`` (not
collected by pytest). It writes a JUnit XML report of ``--cases`` test cases (about
1% failing, 1,000 cases per suite, ~21 MB at 200k), starts its own nats-server, and
runs the real ``aqe ingest`` command in a child process, twice on fresh data:

* ``--no-fold``: parse the report and append the run (atomic batches);
* the default: the same, then fold the history projection (its snapshot, written in
  pieces; ``aqe ingest`` leaves the LanceDB tables to ``aqe consume history``);

and then ``aqe consume history`` on the second data directory: nothing left to fold,
it writes the LanceDB tables ``tests`` and ``runs`` (the work ingest no longer does).

For each it prints the child's peak resident set size (``ru_maxrss`` of the child,
the number ``/usr/bin/time -v`` calls "Maximum resident set size") and wall time.
Each measurement uses a fresh stream and data directory, so nothing is a duplicate.
It asserts nothing: the goal (200k cases under 300 MB) is for the reader to compare.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aqe.server import NatsServerProcess


def write_report(path: Path, cases: int) -> None:
    """A JUnit report of ``cases`` cases in suites of 1,000; every 97th fails."""
    per_suite = 1000
    with open(path, "w", encoding="utf-8") as out:
        out.write('<?xml version="1.0" encoding="UTF-8"?>\n<testsuites>\n')
        for start in range(0, cases, per_suite):
            suite = start // per_suite
            out.write(f'<testsuite name="pkg{suite}" timestamp="2026-11-20T10:00:00">\n')
            for i in range(start, min(cases, start + per_suite)):
                module = f"tests.pkg{suite}.test_module_{(i // 50) % 20}.TestClass"
                head = f'<testcase classname="{module}" name="test_case_{i}[p-{i % 7}]" time="0.01"'
                if i % 97:
                    out.write(f"{head}/>\n")
                else:
                    out.write(
                        f'{head}><failure message="assert {i} == {i + 1}">'
                        "Traceback\n  assert x == y</failure></testcase>\n"
                    )
            out.write("</testsuite>\n")
        out.write("</testsuites>\n")


def measure(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of one ``aqe`` child process."""
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "aqe.cli", *args], env=env)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"aqe {' '.join(args)} failed (exit {child.returncode})")
    return usage.ru_maxrss / 1024, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=200_000)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aqe-bench-mem-") as tmp:
        work = Path(tmp)
        report = work / "TEST-big.xml"
        write_report(report, opts.cases)
        size_mb = report.stat().st_size / 1e6
        print(f"report: {opts.cases:,} cases, {size_mb:.1f} MB")
        for label, extra in (("append only (--no-fold)", ["--no-fold"]), ("ingest + fold", [])):
            server = NatsServerProcess.start_sync(work / label[:6], log_file=work / "nats.log")
            try:
                env = {k: v for k, v in os.environ.items() if not k.startswith("AQE_")}
                env.update(AQE_NATS_URL=server.url, AQE_DATA_DIR=str(work / f"data-{label[:6]}"))
                runs = [(label, ["ingest", str(report), "-q", *extra])]
                if extra != ["--no-fold"]:
                    runs.append(("consume history (tables)", ["consume", "history", "-q"]))
                for name, args in runs:
                    peak, seconds = measure(args, env)
                    print(f"{name:24s} peak RSS {peak:6.0f} MB   {seconds:5.1f} s")
            finally:
                server.stop_sync(timeout=5.0)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"(this script itself: {own:.0f} MB)")


if __name__ == "__main__":
    main()
