"""Reruns per verdict: the flaky workflow's sequential rule against a fixed-N rerun baseline.

Usage::

    python tests/benchmarks/bench_flaky.py [--trials T] [--fixed N] [--real] [--json]

Two measurements, in one run, on the labelled sample project (tests/sample_project,
labels.toml):

* **model**: each labelled test is investigated ``T`` times (instance ids differ, so
  seeds differ) by the real workflow (:class:`aqe.workflows.flaky.FlakyWorkflow`, driven
  in memory by ``tests/support/flaky_sim.py``) against a model of the project that
  follows the labels (failure rates, polluters, state-setters). Per label class: the
  share of instances that reached the labelled verdict (and, for order-dependent tests,
  the labelled culprit), and the mean reruns spent. The baseline reruns each test
  alone ``N`` times (default 10) on the same model and calls it flaky when the outcomes
  mix, broken when all fail, fine when all pass.
* **real** (``--real``): one instance per labelled test, every rerun a real pytest run of
  the sample project in the ``process`` sandbox (the same payload a runner agent gets),
  and the fixed-N baseline on the same sandbox; verdicts and reruns per test.

It reports; it exits 0 whatever the numbers (only errors fail it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
import tomllib
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from aqe.workflows.flaky import FlakyParams, pytest_payload, rerun_seed  # noqa: E402
from support.flaky_sim import SUITE, model_passes, sample_behaviour, simulate  # noqa: E402

SAMPLE = HERE.parent / "sample_project"
EXPECTED_VERDICT = {"fine": "fixed"}


def labels() -> dict[str, dict[str, Any]]:
    """labels.toml's tests."""
    with (SAMPLE / "labels.toml").open("rb") as fh:
        tests: dict[str, dict[str, Any]] = tomllib.load(fh)["tests"]
    return tests


def correct(label: dict[str, Any], data: dict[str, str]) -> bool:
    """Whether a verdict's data matches the label (verdict, kind and culprit)."""
    expected = EXPECTED_VERDICT.get(label["class"], label["class"])
    if data.get("verdict") != expected:
        return False
    if expected == "order-dependent":
        culprit = data.get("polluter") or data.get("state_setter")
        return data.get("kind") == label["kind"] and culprit == label["culprit"]
    return True


def fixed_n(passes: list[bool]) -> str:
    """The baseline's verdict from N reruns alone."""
    if all(passes):
        return "fixed"
    if not any(passes):
        return "broken"
    return "flaky"


def model(trials: int, n: int) -> dict[str, Any]:
    """The model measurement (see the module docstring)."""
    rows: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    base = {"order": json.dumps(SUITE), "watch_rounds": "0"}
    for test, label in labels().items():
        cls = label["class"]
        for t in range(trials):
            instance = f"bench-{t}"
            sim = simulate({**base, "test": test}, sample_behaviour, instance_id=instance)
            data = dict(sim.decisions["verdict"].data)
            rows[cls]["ok"].append(float(correct(label, data)))
            rows[cls]["reruns"].append(float(sim.state.reruns))
            passes = [model_passes(test, (), rerun_seed(instance, f"fixed-{i}")) for i in range(n)]
            rows[cls]["base_ok"].append(float(correct(label, {"verdict": fixed_n(passes)})))
    return {
        cls: {
            "instances": len(r["ok"]),
            "correct": statistics.fmean(r["ok"]),
            "reruns_mean": statistics.fmean(r["reruns"]),
            "reruns_max": max(r["reruns"]),
            "fixed_correct": statistics.fmean(r["base_ok"]),
            "fixed_reruns": n,
        }
        for cls, r in rows.items()
    }


def real(n: int) -> dict[str, Any]:
    """The real measurement: reruns in the process sandbox (see the module docstring)."""
    from aqe.runners import runner_task
    from aqe.sandbox import open_sandbox

    sandbox = open_sandbox("process")
    params = FlakyParams(test="-", source=str(SAMPLE), python=sys.executable, wall_s=120)
    runs = {"n": 0, "s": 0.0}
    scratch = Path(tempfile.mkdtemp(prefix="aqe-bench-flaky-"))

    def run(tests: tuple[str, ...], seed: int) -> dict[str, str] | None:
        from aqe.ingest.parsers import parse_report

        task = runner_task(pytest_payload(params, tests, seed))
        began = time.perf_counter()
        result = asyncio.run(sandbox.run(task.spec, task.argv, workdir=task.workdir))
        runs["n"] += 1
        runs["s"] += time.perf_counter() - began
        xml = result.artefacts.get("aqe-rerun.xml")
        if xml is None:
            return None
        path = scratch / "report.xml"
        path.write_bytes(xml)
        report = parse_report(path, "junit")
        return {c.nodeid or c.test_id: c.outcome for c in report.cases}

    out: dict[str, Any] = {}
    try:
        for test, label in labels().items():
            sim = simulate(
                {"test": test, "order": json.dumps(SUITE), "watch_rounds": "0"},
                run,
                instance_id="bench-real",
            )
            data = dict(sim.decisions["verdict"].data)
            passes = []
            for i in range(n):
                outcome = run((test,), rerun_seed("bench-real", f"fixed-{i}"))
                passes.append(bool(outcome) and outcome.get(test) == "passed")
            out[test] = {
                "label": label["class"],
                "verdict": data["verdict"],
                "culprit": data.get("polluter") or data.get("state_setter") or "",
                "correct": correct(label, data),
                "reruns": sim.state.reruns,
                "fixed": fixed_n(passes),
                "fixed_correct": correct(label, {"verdict": fixed_n(passes)}),
            }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    out["_sandbox_runs"] = runs["n"]
    out["_mean_run_s"] = runs["s"] / max(1, runs["n"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--fixed", type=int, default=10, help="the baseline's reruns per test")
    parser.add_argument("--real", action="store_true", help="also rerun in real sandboxes")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    began = time.perf_counter()
    result: dict[str, Any] = {"model": model(args.trials, args.fixed)}
    result["model_s"] = round(time.perf_counter() - began, 2)
    if args.real:
        began = time.perf_counter()
        result["real"] = real(args.fixed)
        result["real_s"] = round(time.perf_counter() - began, 2)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"flaky workflow on the labelled sample project: {args.trials} instances per test "
        f"(model), sequential rule (p_min 0.25, beta 0.05) vs {args.fixed} reruns alone"
    )
    head = f"{'class':<16}{'inst':>6}{'correct':>9}{'reruns':>8}{'max':>6}"
    print(f"{head}  |{'fixed-N ok':>11}{'reruns':>8}")
    for cls, row in sorted(result["model"].items()):
        print(
            f"{cls:<16}{row['instances']:>6}{row['correct']:>9.1%}{row['reruns_mean']:>8.1f}"
            f"{row['reruns_max']:>6.0f}  |{row['fixed_correct']:>11.1%}{row['fixed_reruns']:>8}"
        )
    if args.real:
        rows = {k: v for k, v in result["real"].items() if not k.startswith("_")}
        print(
            f"\nreal reruns in the process sandbox ({result['real']['_sandbox_runs']} runs, "
            f"{result['real']['_mean_run_s']:.2f} s each, {result['real_s']:.0f} s in all)"
        )
        print(f"{'test':<48}{'label':<17}{'verdict':<17}{'reruns':>7}  {'fixed-N':<8}")
        for test, row in rows.items():
            mark = "" if row["correct"] else "  (wrong)"
            culprit = f" <- {row['culprit'].split('::')[-1]}" if row["culprit"] else ""
            print(
                f"{test:<48}{row['label']:<17}{row['verdict']:<17}{row['reruns']:>7}  "
                f"{row['fixed']:<8}{culprit}{mark}"
            )
        ok = sum(r["correct"] for r in rows.values())
        base_ok = sum(r["fixed_correct"] for r in rows.values())
        spent = sum(r["reruns"] for r in rows.values())
        print(
            f"correct: workflow {ok}/{len(rows)} with {spent} reruns; "
            f"fixed-{args.fixed} alone {base_ok}/{len(rows)} with {args.fixed * len(rows)} reruns"
        )
    print(f"\n(model {result['model_s']:.1f} s)")


if __name__ == "__main__":
    main()
