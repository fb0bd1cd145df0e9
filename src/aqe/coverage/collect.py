"""Collect coverage.py data from a pytest run, one dynamic context per test.

The collector is two steps, usable apart:

1. :func:`run_pytest` runs ``python -m coverage run --branch --source=... -m pytest
   --aqe-coverage-contexts ARGS``. The plugin option switches coverage.py's dynamic
   context to each test's node id while it runs (and back to ``""`` between tests),
   so the data file knows which test ran which line. Lines run outside any test
   (imports, collection, module-level code) belong to the empty context.
2. :func:`read_coverage_data` turns the data file into :class:`MeasuredFile` entries
   with paths relative to the project root, statements, executed lines, branches
   ``(exits, taken)`` per branch line and per test id (aqe's identity of the node id,
   :func:`aqe.ingest.identity.test_identity`) the lines it ran.

Then :func:`aqe.coverage.measured.coverage_events` makes the run's events. Example::

    code = run_pytest(["-q", "tests"], cwd=root, source=["src/pkg"], data_file=root / ".cov")
    files = read_coverage_data(root / ".cov", root=root)
    events = coverage_events(files, run_id=run_id)

Under pytest-xdist only the controller is measured; run without ``-n`` to collect.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aqe.coverage.measured import MeasuredFile
from aqe.errors import ReportError
from aqe.ingest.identity import split_pytest_nodeid, test_identity

__all__ = [
    "CONTEXTS_OPTION",
    "looks_like_coverage_json",
    "measured_from_json",
    "pytest_command",
    "read_coverage_data",
    "run_pytest",
]

CONTEXTS_OPTION = "--aqe-coverage-contexts"
"""The pytest option (aqe's plugin) that gives each test its own coverage context."""


def pytest_command(
    pytest_args: Sequence[str],
    *,
    source: Sequence[str],
    data_file: Path,
    python: str | None = None,
) -> list[str]:
    """The command line :func:`run_pytest` runs (for sandboxes and runners that run it)."""
    command = [python or sys.executable, "-m", "coverage", "run", "--branch"]
    command.append(f"--data-file={data_file}")
    if source:
        command.append("--source=" + ",".join(source))
    return [*command, "-m", "pytest", CONTEXTS_OPTION, *pytest_args]


def run_pytest(
    pytest_args: Sequence[str],
    *,
    cwd: Path,
    source: Sequence[str],
    data_file: Path,
    env: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
    python: str | None = None,
    quiet: bool = False,
) -> int:
    """Run pytest under coverage.py with per-test contexts; pytest's exit code.

    Output goes to this process's stdout and stderr (nowhere with ``quiet``). A failing
    test is not an error here: the data file is written either way (exit codes 0 and 1
    both mean "ran").

    Raises:
        subprocess.TimeoutExpired: past ``timeout_s``.
    """
    data_file.unlink(missing_ok=True)
    command = pytest_command(pytest_args, source=source, data_file=data_file, python=python)
    completed = subprocess.run(
        command,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        check=False,
        timeout=timeout_s,
        stdout=subprocess.DEVNULL if quiet else None,
        stderr=subprocess.DEVNULL if quiet else None,
    )
    return completed.returncode


def _relative(name: str, root: Path) -> str:
    path = Path(name)
    if not path.is_absolute():
        path = Path(os.getcwd()) / path
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _test_id(context: str, cache: dict[str, str | None]) -> str | None:
    """The aqe test id of a context label (a pytest node id); None for the empty one."""
    if context in cache:
        return cache[context]
    test_id: str | None = None
    if context:
        try:
            test_id = test_identity(*split_pytest_nodeid(context))
        except ValueError:
            test_id = None
    cache[context] = test_id
    return test_id


def _file(
    name: str, report: Mapping[str, Any], root: Path, cache: dict[str, str | None]
) -> MeasuredFile:
    executed = {int(n) for n in report.get("executed_lines", ())}
    missing = {int(n) for n in report.get("missing_lines", ())}
    measured = MeasuredFile(path=_relative(name, root), statements=executed | missing)
    measured.executed = executed
    exits: dict[int, int] = {}
    taken: dict[int, int] = {}
    for key, counts in (("executed_branches", taken), ("missing_branches", None)):
        for source_line, _target in report.get(key, ()):
            exits[source_line] = exits.get(source_line, 0) + 1
            if counts is not None:
                counts[source_line] = counts.get(source_line, 0) + 1
    measured.branches = {line: (n, taken.get(line, 0)) for line, n in exits.items() if line > 0}
    for line, contexts in report.get("contexts", {}).items():
        for context in contexts:
            test_id = _test_id(context, cache)
            if test_id is not None:
                measured.tests.setdefault(test_id, set()).add(int(line))
    return measured


def read_coverage_data(data_file: Path, *, root: Path) -> list[MeasuredFile]:
    """The measured files of a coverage.py data file, paths relative to ``root``.

    The source files must still be where they were measured (coverage.py reads them to
    know the statements and branches).

    Raises:
        ReportError: no such data file, or one coverage.py cannot read.
    """
    import coverage
    from coverage.exceptions import CoverageException

    if not data_file.is_file():
        raise ReportError(str(data_file), "no coverage data file (did the run start?)")
    cov = coverage.Coverage(data_file=str(data_file))
    with tempfile.TemporaryDirectory(prefix="aqe-cov-") as tmp:
        out = Path(tmp) / "coverage.json"
        try:
            cov.load()
            if not cov.get_data().measured_files():
                return []
            cov.json_report(outfile=str(out), show_contexts=True, ignore_errors=True)
        except CoverageException as exc:
            raise ReportError(str(data_file), str(exc)) from exc
        report = json.loads(out.read_text(encoding="utf-8"))
    return measured_from_json(report, root=root)


def looks_like_coverage_json(doc: object) -> bool:
    """Whether ``doc`` is a coverage.py JSON report (``coverage json``)."""
    return (
        isinstance(doc, dict)
        and isinstance(doc.get("meta"), dict)
        and "format" in doc["meta"]
        and isinstance(doc.get("files"), dict)
    )


def measured_from_json(
    report: Mapping[str, Any], *, root: Path | None = None
) -> list[MeasuredFile]:
    """The measured files of a coverage.py JSON report (``coverage json --show-contexts``).

    Relative paths are kept as the report gives them (relative to where it was made);
    with ``root``, absolute ones are made relative to it. Contexts that are pytest node
    ids become per-test lines. Used for reports made elsewhere (a runner's sandbox)
    where the sources are not at hand.
    """
    cache: dict[str, str | None] = {}
    base = root if root is not None else Path(os.getcwd())
    files = [_file(name, body, base, cache) for name, body in report.get("files", {}).items()]
    return sorted(files, key=lambda f: f.path)
