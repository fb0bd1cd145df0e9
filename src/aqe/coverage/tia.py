"""Test impact analysis: which tests a change can affect, from per-test coverage.

:func:`changed_lines` reads ``git diff -U0 REF`` (:func:`git_diff`) into the lines each
file had at ``REF`` that the change touched: changed and deleted lines, and for a pure
insertion the lines on both sides of it. Coverage was measured on code like ``REF``'s,
so the old side's line numbers are the ones to look up.

:func:`impacted_tests` then selects, among the pending tests:

* ``covers``: tests whose newest coverage ran a touched statement. A touched line that
  is no statement (a continuation line, a comment) counts as the statement before it;
* ``module``: every test covering the file, when a touched statement ran only outside
  tests (module level: a ``def`` line, an import, a constant);
* ``unknown``: tests with no coverage known (new, or never run under coverage);
* ``stale``: tests whose newest coverage is older than the ``stale_runs`` newest
  per-test coverage runs.

Touched statements no run executed, and changed files the coverage does not know, are
reported (``uncovered``, ``unknown_files``): no test can be chosen for them by coverage.
"""

from __future__ import annotations

import bisect
import re
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

import msgspec

from aqe.coverage.projection import CoverageState, fold_events
from aqe.errors import ConfigError
from aqe.events import Event
from aqe.events.coverage import delta_decode

__all__ = [
    "ChangedFile",
    "Impact",
    "changed_lines",
    "git_diff",
    "impacted_by_diff",
    "impacted_tests",
]

_HUNK_RE = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


class ChangedFile(msgspec.Struct, kw_only=True):
    """What a diff did to one file."""

    path: str
    """The path at REF (the new path for an added file)."""
    lines: set[int] = msgspec.field(default_factory=set)
    """Lines at REF the change touched."""
    added: bool = False
    deleted: bool = False


class Impact(msgspec.Struct, kw_only=True):
    """The tests a change selects, and what coverage could not answer for."""

    reasons: dict[str, str]
    """Selected test id -> why: ``covers``, ``module``, ``unknown`` or ``stale``."""
    uncovered: dict[str, list[int]]
    """Per known file, touched statements no test or import ran."""
    unknown_files: list[str]
    """Changed files the coverage does not know (new files, tests, data, other languages)."""
    changed_files: int = 0

    def describe(self) -> str:
        """``3 files changed; impacted: 2 covers, 1 unknown`` (for a status line)."""
        counts: dict[str, int] = {}
        for reason in self.reasons.values():
            counts[reason] = counts.get(reason, 0) + 1
        shown = ", ".join(f"{n} {why}" for why, n in sorted(counts.items())) or "none"
        return f"{self.changed_files} files changed; impacted: {shown}"


def git_diff(ref: str, cwd: Path) -> str:
    """``git diff -U0 REF`` in ``cwd`` (the working tree, staged or not, against REF).

    Raises:
        ConfigError: git is missing, ``cwd`` is no repository, or ``REF`` is unknown.
    """
    command = ["git", "diff", "-U0", "--no-color", "--no-ext-diff", "-M", ref, "--"]
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise ConfigError(f"cannot run git: {exc.strerror or exc}") from exc
    if done.returncode != 0:
        raise ConfigError(f"git diff {ref} failed in {cwd}: {done.stderr.strip()}")
    return done.stdout


def _path(header: str) -> str | None:
    name = header[4:].strip().split("\t")[0]
    if name == "/dev/null":
        return None
    return name[2:] if name.startswith(("a/", "b/")) else name


def changed_lines(diff: str) -> dict[str, ChangedFile]:
    """Per file (its path at REF), the lines a unified ``-U0`` diff touched."""
    files: dict[str, ChangedFile] = {}
    current: ChangedFile | None = None
    old: str | None = None
    for line in diff.splitlines():
        if line.startswith("--- "):
            old = _path(line)
        elif line.startswith("+++ "):
            new = _path(line)
            key = old or new
            if key is None:
                current = None
                continue
            current = files.setdefault(key, ChangedFile(path=key))
            current.added = old is None
            current.deleted = new is None
        elif line.startswith("@@") and current is not None:
            match = _HUNK_RE.match(line)
            if match is None:
                continue
            start = int(match[1])
            count = 1 if match[2] is None else int(match[2])
            if count:
                current.lines.update(range(start, start + count))
            else:  # a pure insertion after line `start`: both neighbours
                current.lines.update((start, start + 1) if start else (1,))
    return files


def _touched(statements: list[int], lines: Iterable[int]) -> set[int]:
    """The statements ``lines`` belong to (a non-statement line: the one before it)."""
    out: set[int] = set()
    for line in lines:
        at = bisect.bisect_right(statements, line) - 1
        if at >= 0:
            out.add(statements[at])
    return out


def impacted_tests(
    state: CoverageState,
    changes: Mapping[str, ChangedFile],
    *,
    pending: Iterable[str],
    stale_runs: int | None = 20,
) -> Impact:
    """The pending tests a change can affect (see the module docstring).

    Args:
        state: the coverage projection's state.
        changes: :func:`changed_lines` of the diff.
        pending: the tests of the pending run (test ids).
        stale_runs: coverage older than this many per-test coverage runs is stale
            (None: never).
    """
    pending_set = set(pending)
    reasons: dict[str, str] = {}
    uncovered: dict[str, list[int]] = {}
    unknown: list[str] = []
    for path in sorted(changes):
        change = changes[path]
        file = state.files.get(path)
        if file is None:
            unknown.append(path)
            continue
        statements = delta_decode(file.statements)
        touched = _touched(statements, change.lines)
        if change.deleted or change.added:
            touched = set(statements)
        if not touched:
            continue
        by_tests: set[int] = set()
        for test_id, encoded in file.tests.items():
            lines = delta_decode(encoded)
            by_tests.update(lines)
            if test_id in pending_set and test_id not in reasons and not touched.isdisjoint(lines):
                reasons[test_id] = "covers"
        executed = set(delta_decode(file.executed))
        if (touched & executed) - by_tests:
            for test_id in file.tests:
                if test_id in pending_set:
                    reasons.setdefault(test_id, "module")
        missing = sorted(touched - executed)
        if missing:
            uncovered[path] = missing
    newest = sorted((r.seq for r in state.runs.values() if r.per_test), reverse=True)
    cutoff = newest[stale_runs - 1] if stale_runs and len(newest) >= stale_runs else None
    for test_id in sorted(pending_set):
        known = state.tests.get(test_id)
        if known is None:
            reasons.setdefault(test_id, "unknown")
        elif cutoff is not None and known.seq < cutoff:
            reasons.setdefault(test_id, "stale")
    return Impact(
        reasons=reasons, uncovered=uncovered, unknown_files=unknown, changed_files=len(changes)
    )


def impacted_by_diff(
    events: Iterable[Event],
    ref: str,
    root: Path,
    pending: Iterable[str],
    *,
    nodeids: Mapping[str, str] | None = None,
    stale_runs: int | None = 20,
) -> Impact:
    """:func:`impacted_tests` for ``git diff REF`` in ``root``, the coverage folded from
    ``events`` (the log's coverage chunks and run markers, in log order).

    Tests whose node id (``nodeids``: test id -> node id) lies in a changed file are
    selected too (``changed-file``).

    Raises:
        ConfigError: git failed (see :func:`git_diff`).
    """
    changes = changed_lines(git_diff(ref, root))
    pending = list(pending)
    impact = impacted_tests(fold_events(events), changes, pending=pending, stale_runs=stale_runs)
    for test_id, nodeid in (nodeids or {}).items():
        if nodeid.partition("::")[0] in changes:
            impact.reasons.setdefault(test_id, "changed-file")
    return impact
