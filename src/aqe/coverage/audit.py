"""The escape audit: how many faults a test selection lets through, measured on mutants.

A real package's source and its own test suite are copied into a scratch project
(the copy shadows the installed package). Then:

1. **Baseline.** The suite runs once under coverage.py with one context per test
   (:mod:`aqe.coverage.collect`); the coverage becomes events and is folded by the
   coverage projection, exactly as ``aqe coverage collect`` would. JUnit XML gives
   each test's baseline outcome (tests failing already are left out).
2. **Mutants.** A seeded sample of line-preserving AST mutants
   (:mod:`aqe.coverage.mutants`) of the package's modules. Per mutant the *full*
   suite runs (per-test timeout), and the tests that newly fail kill it.
3. **Strategies.** Per mutant, the change is the mutated line; each strategy picks
   tests without running anything, and it *catches* the mutant when one of its tests
   is among the killers. A mutant the full suite kills and the selection does not is
   an *escape*.

   * ``coverage``: test impact analysis (:func:`aqe.coverage.tia.impacted_tests`);
   * ``history@B``: the tests ranked by failure count in the *other* mutants' runs
     (leave-one-out: the history a CI system would have from earlier faults), ties in
     suite order, cut at the share ``B`` of the suite;
   * ``combined@B``: the coverage selection ranked by that history, then filled with
     the history ranking, cut at ``B`` of the suite.

Recall is caught / killed-by-the-full-suite; ``fraction`` is the mean share of the
suite a strategy runs. Mutants the suite does not kill (equivalent or untested) do
not count against any strategy and are reported apart.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from aqe.coverage.collect import read_coverage_data, run_pytest
from aqe.coverage.measured import coverage_events
from aqe.coverage.mutants import Mutant, apply_mutant, find_mutants, sample_mutants
from aqe.coverage.projection import CoverageState, fold_events
from aqe.coverage.tia import ChangedFile, impacted_tests
from aqe.errors import ConfigError
from aqe.events import Event, TestRunFinished

__all__ = [
    "AuditReport",
    "MutantResult",
    "StrategyRow",
    "prepare_project",
    "run_audit",
    "score_strategies",
]

_PYTEST_FLAGS = ("-q", "-p", "no:cacheprovider")


def _timeout_flags(timeout_s: float) -> list[str]:
    """pytest-timeout's per-test limit where it is installed (a dev dependency); without
    it a hanging mutant is stopped by the whole run's timeout and counts as killed."""
    import importlib.util

    if importlib.util.find_spec("pytest_timeout") is None:
        return []
    return ["-p", "pytest_timeout", f"--timeout={timeout_s:g}"]


class MutantResult(msgspec.Struct, frozen=True, kw_only=True):
    """One mutant and what the full suite and each strategy did with it."""

    mutant: Mutant
    killers: tuple[str, ...]
    """Tests that passed on the original and fail on the mutant."""
    selected: dict[str, int]
    """Per strategy, how many tests it selected."""
    caught: dict[str, bool]
    seconds: float


class StrategyRow(msgspec.Struct, frozen=True, kw_only=True):
    """One line of the audit table."""

    strategy: str
    killed: int
    """Mutants the full suite kills (the denominator of recall)."""
    caught: int
    escaped: int
    recall: float | None
    fraction: float
    """Mean share of the suite's tests the strategy runs (over the killed mutants)."""


class AuditReport(msgspec.Struct, frozen=True, kw_only=True):
    """The whole audit: setup, the table, every mutant."""

    package: str
    tests: int
    modules: tuple[str, ...]
    mutants_found: int
    mutants_run: int
    seed: int
    budgets: tuple[float, ...]
    rows: tuple[StrategyRow, ...]
    mutants: tuple[MutantResult, ...]
    baseline_seconds: float
    seconds: float


def prepare_project(package: str, workdir: Path) -> tuple[Path, Path]:
    """Copy an installed package (with the tests it ships) into ``workdir``.

    Returns:
        ``(project root, the package's directory inside it)``.

    Raises:
        ConfigError: the package is not importable or is a single module.
    """
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"{package!r} is not an installed package (a directory)")
    source = Path(next(iter(spec.submodule_search_locations)))
    root = workdir / "project"
    target = root / package
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (root / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    return root, target


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AQE_", "COV_", "PYTEST_"))}
    env["PYTHONPATH"] = str(root)
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _outcomes(junit: Path) -> dict[str, str]:
    from aqe.ingest.parsers import parse_report

    if not junit.is_file():
        return {}
    report = parse_report(junit, "junit")
    return {case.test_id: case.outcome for case in report.cases}


def _run_suite(root: Path, tests: str, junit: Path, timeout_s: float) -> dict[str, str]:
    junit.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "pytest",
        *_PYTEST_FLAGS,
        *_timeout_flags(timeout_s),
        f"--junitxml={junit}",
        tests,
    ]
    try:
        subprocess.run(
            command,
            cwd=root,
            env=_env(root),
            capture_output=True,
            check=False,
            timeout=timeout_s * 20 + 120,
        )
    except subprocess.TimeoutExpired:
        return {}
    return _outcomes(junit)


def _history_rank(
    suite: Sequence[str], killers: Sequence[Sequence[str]], leave_out: int
) -> list[str]:
    fails: dict[str, int] = {}
    for index, killed_by in enumerate(killers):
        if index != leave_out:
            for test_id in killed_by:
                fails[test_id] = fails.get(test_id, 0) + 1
    order = {t: i for i, t in enumerate(suite)}
    return sorted(suite, key=lambda t: (-fails.get(t, 0), order[t]))


def score_strategies(
    suite: Sequence[str],
    state: CoverageState,
    mutants: Sequence[Mutant],
    killers: Sequence[Sequence[str]],
    budgets: Sequence[float],
) -> list[tuple[dict[str, int], dict[str, bool]]]:
    """Per mutant, (tests selected, caught) per strategy (see the module docstring)."""
    out = []
    for index, mutant in enumerate(mutants):
        killed = set(killers[index])
        change = {mutant.path: ChangedFile(path=mutant.path, lines={mutant.line})}
        chosen = set(impacted_tests(state, change, pending=suite, stale_runs=None).reasons)
        ranking = _history_rank(suite, killers, index)
        selections: dict[str, set[str]] = {"full suite": set(suite), "coverage": chosen}
        for budget in budgets:
            size = max(1, math.ceil(budget * len(suite)))
            selections[f"history@{budget:.0%}"] = set(ranking[:size])
            combined = [t for t in ranking if t in chosen]
            combined += [t for t in ranking if t not in chosen]
            selections[f"combined@{budget:.0%}"] = set(combined[:size])
        out.append(
            (
                {name: len(tests) for name, tests in selections.items()},
                {name: bool(tests & killed) for name, tests in selections.items()},
            )
        )
    return out


def _rows(results: Sequence[MutantResult], suite_size: int) -> list[StrategyRow]:
    killed = [r for r in results if r.killers]
    names = list(results[0].selected) if results else []
    rows = []
    for name in names:
        caught = sum(1 for r in killed if r.caught[name])
        fraction = (
            sum(r.selected[name] for r in killed) / (len(killed) * suite_size) if killed else 0.0
        )
        rows.append(
            StrategyRow(
                strategy=name,
                killed=len(killed),
                caught=caught,
                escaped=len(killed) - caught,
                recall=caught / len(killed) if killed else None,
                fraction=round(fraction, 4),
            )
        )
    return rows


def run_audit(
    package: str,
    *,
    mutants: int = 30,
    seed: int = 0,
    budgets: Sequence[float] = (0.1, 0.25, 0.5),
    modules: Sequence[str] | None = None,
    timeout_s: float = 10.0,
    workdir: Path | None = None,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> AuditReport:
    """Run the escape audit on an installed package's own test suite.

    Args:
        package: an installed package that ships its tests (``toolz``).
        mutants: how many mutants to sample.
        seed: the sample's seed.
        budgets: the shares of the suite the history and combined strategies may run.
        modules: the package's modules to mutate, relative to the package directory
            [default: every top-level ``*.py`` except ``__init__.py``].
        timeout_s: per-test timeout (pytest-timeout) in mutant runs.
        workdir: where to build the scratch project [default: a temporary directory].
        on_progress: called with (done, total, label) after each mutant.

    Raises:
        ConfigError: the package is not installed, or its suite fails to run.
    """
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="aqe-audit-", dir=workdir) as tmp:
        root, package_dir = prepare_project(package, Path(tmp))
        tests_dir = f"{package}/tests"
        names = (
            list(modules)
            if modules
            else sorted(p.name for p in package_dir.glob("*.py") if p.name != "__init__.py")
        )
        paths = [f"{package}/{name}" for name in names]
        found = [m for path in paths for m in find_mutants(root, path)]
        chosen = sample_mutants(found, mutants, seed)

        data_file = root / ".coverage-baseline"
        junit = root / "baseline.xml"
        env = _env(root)
        run_pytest(
            [*_PYTEST_FLAGS, "-p", "aqe.pytest_plugin", f"--junitxml={junit}", tests_dir],
            cwd=root,
            source=[package],
            data_file=data_file,
            env=env,
            quiet=True,
        )
        baseline = _outcomes(junit)
        if not baseline:
            raise ConfigError(f"{package}: its test suite did not run in {root}")
        suite = [t for t, outcome in baseline.items() if outcome == "passed"]
        events: list[Event] = [
            *coverage_events(read_coverage_data(data_file, root=root), run_id="baseline"),
            TestRunFinished(run_id="baseline", total=len(suite), passed=len(suite), failed=0),
        ]
        state = fold_events(events)
        baseline_s = time.monotonic() - started

        killers: list[tuple[str, ...]] = []
        seconds: list[float] = []
        sources = {path: (root / path).read_text(encoding="utf-8") for path in paths}
        for done, mutant in enumerate(chosen, start=1):
            t0 = time.monotonic()
            target = root / mutant.path
            target.write_text(apply_mutant(sources[mutant.path], mutant), encoding="utf-8")
            try:
                outcomes = _run_suite(root, tests_dir, root / "mutant.xml", timeout_s)
            finally:
                target.write_text(sources[mutant.path], encoding="utf-8")
            if not outcomes:  # the whole run broke (an import error, a hang): all kill it
                killers.append(tuple(suite))
            else:
                killers.append(
                    tuple(t for t in suite if outcomes.get(t, "error") in ("failed", "error"))
                )
            seconds.append(time.monotonic() - t0)
            if on_progress is not None:
                on_progress(done, len(chosen), mutant.label)

    scored = score_strategies(suite, state, chosen, killers, budgets)
    results = [
        MutantResult(
            mutant=mutant,
            killers=killers[i],
            selected=scored[i][0],
            caught=scored[i][1],
            seconds=round(seconds[i], 3),
        )
        for i, mutant in enumerate(chosen)
    ]
    return AuditReport(
        package=package,
        tests=len(suite),
        modules=tuple(paths),
        mutants_found=len(found),
        mutants_run=len(chosen),
        seed=seed,
        budgets=tuple(budgets),
        rows=tuple(_rows(results, len(suite))),
        mutants=tuple(results),
        baseline_seconds=round(baseline_s, 1),
        seconds=round(time.monotonic() - started, 1),
    )
