"""Questions asked of a :class:`~aqe.coverage.projection.CoverageState` (pure functions).

* :func:`file_summaries` / :func:`overall`: line and branch coverage per file and in all.
* :func:`file_detail`: one file, with per line the tests that ran it.
* :func:`test_files`: what one test covers.
* :func:`gaps`: the least-covered files, weighted by change and failure history, the
  input of the gap -> generate -> measure workflow.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import msgspec

from aqe.coverage.measured import decode_branches
from aqe.coverage.projection import CoverageState, FileState
from aqe.events.coverage import delta_decode

__all__ = [
    "FileDetail",
    "FileSummary",
    "Gap",
    "file_detail",
    "file_summaries",
    "gaps",
    "line_ranges",
    "overall",
    "test_files",
]


class FileSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One file's coverage as of its newest measurement."""

    path: str
    statements: int
    covered: int
    branches: int
    """Branch exits."""
    taken: int
    tests: int
    """Tests known to run some line of it."""
    run_id: str
    changes: int

    @property
    def line_pct(self) -> float | None:
        """Covered statements in percent (None without statements)."""
        return 100.0 * self.covered / self.statements if self.statements else None

    @property
    def branch_pct(self) -> float | None:
        """Taken branch exits in percent (None without branches)."""
        return 100.0 * self.taken / self.branches if self.branches else None


class FileDetail(msgspec.Struct, frozen=True, kw_only=True):
    """One file line by line."""

    summary: FileSummary
    missing: list[int]
    """Statements no test or import ran."""
    partial: list[tuple[int, int, int]]
    """Branch lines not fully taken: ``(line, exits, taken)``."""
    lines: dict[int, list[str]]
    """Per executed statement, the tests that ran it (empty: only outside tests)."""


class Gap(msgspec.Struct, frozen=True, kw_only=True):
    """A poorly covered file and why it ranks where it does."""

    path: str
    statements: int
    missing: int
    missing_branches: int
    line_pct: float | None
    branch_pct: float | None
    changes: int
    failures: int
    """Recent failures of the tests that cover it (from the test history)."""
    score: float
    missing_lines: list[tuple[int, int]]
    """Missing statements as inclusive ``(first, last)`` ranges."""


def _summary(path: str, file: FileState) -> FileSummary:
    statements = set(delta_decode(file.statements))
    executed = set(delta_decode(file.executed))
    branches = decode_branches(file.branches)
    return FileSummary(
        path=path,
        statements=len(statements),
        covered=len(executed & statements),
        branches=sum(e for e, _ in branches.values()),
        taken=sum(t for _, t in branches.values()),
        tests=len(file.tests),
        run_id=file.run_id,
        changes=file.changes,
    )


def file_summaries(state: CoverageState, prefix: str = "") -> list[FileSummary]:
    """Every file (whose path starts with ``prefix``), in path order."""
    return [
        _summary(path, state.files[path]) for path in sorted(state.files) if path.startswith(prefix)
    ]


def overall(summaries: Iterable[FileSummary]) -> dict[str, float | int | None]:
    """Totals of ``summaries``: statements, covered, branches, taken and both percentages."""
    items = list(summaries)
    statements = sum(s.statements for s in items)
    covered = sum(s.covered for s in items)
    branches = sum(s.branches for s in items)
    taken = sum(s.taken for s in items)
    return {
        "files": len(items),
        "statements": statements,
        "covered": covered,
        "line_pct": 100.0 * covered / statements if statements else None,
        "branches": branches,
        "taken": taken,
        "branch_pct": 100.0 * taken / branches if branches else None,
    }


def line_ranges(lines: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted lines as inclusive ``(first, last)`` runs: 1,2,3,7 -> (1,3),(7,7)."""
    out: list[tuple[int, int]] = []
    for line in sorted(set(lines)):
        if out and out[-1][1] == line - 1:
            out[-1] = (out[-1][0], line)
        else:
            out.append((line, line))
    return out


def file_detail(state: CoverageState, path: str) -> FileDetail | None:
    """One file line by line, or None when no run measured it."""
    file = state.files.get(path)
    if file is None:
        return None
    statements = set(delta_decode(file.statements))
    executed = set(delta_decode(file.executed))
    by_line: dict[int, list[str]] = {line: [] for line in sorted(executed & statements)}
    for test_id in sorted(file.tests):
        for line in delta_decode(file.tests[test_id]):
            by_line.setdefault(line, []).append(test_id)
    partial = [
        (line, exits, taken)
        for line, (exits, taken) in sorted(decode_branches(file.branches).items())
        if taken < exits
    ]
    return FileDetail(
        summary=_summary(path, file),
        missing=sorted(statements - executed),
        partial=partial,
        lines=by_line,
    )


def test_files(state: CoverageState, test_id: str) -> dict[str, list[int]]:
    """Per file, the lines ``test_id`` ran in its newest covered run (empty if unknown)."""
    known = state.tests.get(test_id)
    if known is None:
        return {}
    return {
        path: delta_decode(state.files[path].tests[test_id])
        for path in known.files
        if test_id in state.files[path].tests
    }


test_files.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def gaps(
    state: CoverageState,
    *,
    failures: Mapping[str, int] | None = None,
    prefix: str = "",
    limit: int | None = 20,
) -> list[Gap]:
    """The least-covered files first.

    The score is the uncovered work (missing statements plus untaken branch exits)
    times ``1 + log2(1 + changes)`` (how often the file's statements changed between
    measurements) times ``1 + log2(1 + failures)`` (recent failures of the tests that
    cover it, ``failures`` giving them per test id). Fully covered files are left out.

    Args:
        state: the coverage projection's state.
        failures: per test id, its recent failures (e.g. from the test history).
        prefix: only files whose path starts with it.
        limit: at most this many (None: all).
    """
    failures = failures or {}
    out: list[Gap] = []
    for path in sorted(state.files):
        if not path.startswith(prefix):
            continue
        file = state.files[path]
        statements = set(delta_decode(file.statements))
        executed = set(delta_decode(file.executed))
        missing = sorted(statements - executed)
        branches = decode_branches(file.branches)
        missing_branches = sum(e - t for e, t in branches.values())
        if not missing and not missing_branches:
            continue
        failed = sum(failures.get(test_id, 0) for test_id in file.tests)
        score = (
            (len(missing) + missing_branches)
            * (1 + math.log2(1 + file.changes))
            * (1 + math.log2(1 + failed))
        )
        summary = _summary(path, file)
        out.append(
            Gap(
                path=path,
                statements=len(statements),
                missing=len(missing),
                missing_branches=missing_branches,
                line_pct=summary.line_pct,
                branch_pct=summary.branch_pct,
                changes=file.changes,
                failures=failed,
                score=round(score, 6),
                missing_lines=line_ranges(missing),
            )
        )
    out.sort(key=lambda g: (-g.score, g.path))
    return out if limit is None else out[:limit]
