"""Run pytest N times under coverage and write what each run did (runs inside a sandbox).

``python -m aqe.testgen._measure --source PKG --runs N --out FILE [--omit GLOB] -- ARGS``
runs ``python -m coverage run --branch --source PKG -m pytest ARGS`` N times, each in a
new process, and writes one JSON file: every run's exit code and wall time, and per
measured file the statements, the lines run, the possible branch arcs and the arcs taken
(the union over the runs). It imports nothing of aqe beyond this module, so it runs
wherever the sandbox's interpreter has coverage and pytest.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: The JSON file a measurement writes by default (a sandbox artefact); the same name as
#: :data:`aqe.testgen.measure.MEASURE_OUT` (this module imports nothing of aqe).
DEFAULT_OUT = "aqe-testgen-measure.json"


def _json_report(data_file: str, report: str, args: argparse.Namespace) -> None:
    """coverage.py's JSON report of one data file, in this process (no extra start)."""
    import coverage

    cov = coverage.Coverage(
        data_file=data_file,
        branch=True,
        source=[args.source],
        omit=[args.omit] if args.omit else None,
    )
    cov.load()
    # Nothing measured (the run died before importing the package): no report.
    with contextlib.suppress(coverage.CoverageException):
        cov.json_report(outfile=report)


def _one_run(index: int, args: argparse.Namespace, pytest_args: list[str]) -> dict[str, Any]:
    data_file = f".aqe-testgen-cov-{index}"
    report = f".aqe-testgen-cov-{index}.json"
    cmd = [
        sys.executable,
        "-m",
        "coverage",
        "run",
        "--branch",
        f"--data-file={data_file}",
        f"--source={args.source}",
    ]
    if args.omit:
        cmd.append(f"--omit={args.omit}")
    cmd += ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *pytest_args]
    for plugin in args.plugin:
        cmd += ["-p", plugin]
    env = dict(os.environ)
    if not args.autoload:
        # Entry-point plugins cost about 1 s of CPU a start; a generated test needs none.
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    began = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    wall = time.perf_counter() - began
    files: dict[str, Any] = {}
    if Path(data_file).exists():
        _json_report(data_file, report, args)
        if Path(report).exists():
            files = json.loads(Path(report).read_text(encoding="utf-8")).get("files", {})
    return {
        "exit_code": done.returncode,
        "wall_s": round(wall, 3),
        "tail": (done.stdout[-1500:] + done.stderr[-500:]),
        "files": files,
    }


def measure(args: argparse.Namespace, pytest_args: list[str]) -> dict[str, Any]:
    """Run the tests ``args.runs`` times; return the runs and the union of their coverage."""
    runs = []
    merged: dict[str, dict[str, set[Any]]] = {}
    for index in range(args.runs):
        run = _one_run(index, args, pytest_args)
        for path, entry in run.pop("files").items():
            into = merged.setdefault(
                path, {"statements": set(), "lines": set(), "arcs": set(), "taken": set()}
            )
            into["lines"].update(entry.get("executed_lines", ()))
            into["statements"].update(entry.get("executed_lines", ()))
            into["statements"].update(entry.get("missing_lines", ()))
            taken = [tuple(a) for a in entry.get("executed_branches", ())]
            into["taken"].update(taken)
            into["arcs"].update(taken)
            into["arcs"].update(tuple(a) for a in entry.get("missing_branches", ()))
        runs.append(run)
        if run["exit_code"] != 0 and args.stop_on_failure:
            break
    files = {
        path.replace(os.sep, "/"): {k: sorted(v) for k, v in sets.items()}
        for path, sets in sorted(merged.items())
    }
    return {"runs": runs, "files": files}


def main(argv: list[str] | None = None) -> int:
    """Parse, measure, write the JSON file; exit 0 (the runs' exit codes are in the file)."""
    raw = sys.argv[1:] if argv is None else argv
    split = raw.index("--") if "--" in raw else len(raw)
    parser = argparse.ArgumentParser(prog="aqe.testgen._measure")
    parser.add_argument("--source", required=True)
    parser.add_argument("--omit", default="")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--stop-on-failure", action="store_true")
    parser.add_argument("--autoload", action="store_true", help="load entry-point plugins")
    parser.add_argument("--plugin", action="append", default=[], help="a plugin to load (-p)")
    parser.add_argument("--write", default="", help="a test file to write first")
    parser.add_argument("--code", default="", help="the code of --write")
    args = parser.parse_args(raw[:split])
    if args.write:
        target = Path(args.write)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(args.code, encoding="utf-8")
    result = measure(args, raw[split + 1 :])
    Path(args.out).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
