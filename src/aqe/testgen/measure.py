"""Coverage as sets: what a measured run covered, unions, gains and totals (pure).

A measurement comes back from the sandbox as the JSON that :mod:`aqe.testgen._measure`
writes (per file: statements, lines run, branch arcs, arcs taken, as coverage.py reports
them). Everything here is plain set arithmetic on that, so the keep rule can say
exactly which lines and branches a generated test added over what was covered before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import msgspec

from aqe.errors import ReportError
from aqe.events.testgen import CoverageTotals

__all__ = [
    "MEASURE_OUT",
    "CoverageMap",
    "FileSets",
    "Measurement",
    "covered_by",
    "gain_of",
    "measure_argv",
    "parse_measurement",
    "sum_totals",
    "totals_of",
]

Arc = tuple[int, int]

MEASURE_OUT = "aqe-testgen-measure.json"
"""Where :mod:`aqe.testgen._measure` writes its JSON in the working copy."""


class FileSets(msgspec.Struct, frozen=True, kw_only=True):
    """One file's coverage as sets."""

    statements: frozenset[int] = frozenset()
    lines: frozenset[int] = frozenset()
    arcs: frozenset[Arc] = frozenset()
    """Every branch arc the file has."""
    taken: frozenset[Arc] = frozenset()

    def union(self, other: FileSets) -> FileSets:
        """What either covered (statements and arcs of both)."""
        return FileSets(
            statements=self.statements | other.statements,
            lines=self.lines | other.lines,
            arcs=self.arcs | other.arcs,
            taken=self.taken | other.taken,
        )

    def totals(self) -> CoverageTotals:
        """Counts for a report."""
        return CoverageTotals(
            statements=len(self.statements),
            lines=len(self.lines & self.statements) if self.statements else len(self.lines),
            branches=len(self.arcs),
            taken=len(self.taken & self.arcs) if self.arcs else len(self.taken),
        )


CoverageMap = Mapping[str, FileSets]
"""Relative file path -> its coverage."""


class _RunJson(msgspec.Struct):
    exit_code: int
    wall_s: float = 0.0
    tail: str = ""


class _FileJson(msgspec.Struct):
    statements: list[int] = []
    lines: list[int] = []
    arcs: list[Arc] = []
    taken: list[Arc] = []


class _MeasureJson(msgspec.Struct):
    runs: list[_RunJson]
    files: dict[str, _FileJson] = {}


class Measurement(msgspec.Struct, frozen=True, kw_only=True):
    """N runs of some tests: their exit codes and the union of what they covered."""

    exit_codes: tuple[int, ...]
    wall_s: tuple[float, ...] = ()
    tail: str = ""
    """Output tail of the first run that failed (else of the last run)."""
    files: dict[str, FileSets] = msgspec.field(default_factory=dict)

    @property
    def passed(self) -> int:
        """Runs that exited 0."""
        return sum(1 for code in self.exit_codes if code == 0)


def parse_measurement(data: bytes, *, origin: str = "measurement") -> Measurement:
    """Read the JSON :mod:`aqe.testgen._measure` wrote.

    Raises:
        ReportError: the bytes are not such a measurement (names ``origin``).
    """
    try:
        raw = msgspec.json.decode(data, type=_MeasureJson)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ReportError(origin, f"not a test-generation measurement: {exc}") from exc
    failing = [r for r in raw.runs if r.exit_code != 0]
    tail = (failing[0] if failing else raw.runs[-1]).tail if raw.runs else ""
    files = {
        path: FileSets(
            statements=frozenset(f.statements),
            lines=frozenset(f.lines),
            arcs=frozenset(tuple(a) for a in f.arcs),  # type: ignore[misc]
            taken=frozenset(tuple(a) for a in f.taken),  # type: ignore[misc]
        )
        for path, f in raw.files.items()
    }
    return Measurement(
        exit_codes=tuple(r.exit_code for r in raw.runs),
        wall_s=tuple(r.wall_s for r in raw.runs),
        tail=tail,
        files=files,
    )


def covered_by(*maps: CoverageMap) -> dict[str, FileSets]:
    """The union of several coverage maps."""
    out: dict[str, FileSets] = {}
    for cmap in maps:
        for path, sets in cmap.items():
            have = out.get(path)
            out[path] = sets if have is None else have.union(sets)
    return out


def gain_of(candidate: CoverageMap, covered: CoverageMap) -> tuple[dict[str, frozenset[int]], int]:
    """Lines (per file) and the number of branch arcs ``candidate`` runs that ``covered`` does not.

    Only statements and arcs of the measured files count (a line a report marks as
    run but that is no statement, e.g. a docstring continuation, adds nothing).
    """
    lines: dict[str, frozenset[int]] = {}
    branches = 0
    for path, sets in candidate.items():
        before = covered.get(path, FileSets())
        statements = sets.statements | before.statements
        new_lines = (sets.lines - before.lines) & statements
        if new_lines:
            lines[path] = frozenset(new_lines)
        branches += len((sets.taken - before.taken) & (sets.arcs | before.arcs))
    return lines, branches


def totals_of(cmap: CoverageMap) -> dict[str, CoverageTotals]:
    """Per-file counts, sorted by path."""
    return {path: cmap[path].totals() for path in sorted(cmap)}


def sum_totals(totals: Iterable[CoverageTotals]) -> CoverageTotals:
    """The sum of several files' counts."""
    s = l = b = t = 0  # noqa: E741
    for one in totals:
        s, l, b, t = s + one.statements, l + one.lines, b + one.branches, t + one.taken  # noqa: E741
    return CoverageTotals(statements=s, lines=l, branches=b, taken=t)


def measure_argv(
    python: str,
    *,
    source: str,
    omit: str = "",
    runs: int = 1,
    out: str,
    pytest_args: Sequence[str],
    candidate: tuple[str, str] | None = None,
    stop_on_failure: bool = False,
) -> list[str]:
    """The command that measures ``pytest_args`` ``runs`` times inside a sandbox.

    ``candidate`` is ``(file name, code)``: the test file written into the working
    copy before the first run.
    """
    argv = [python, "-m", "aqe.testgen._measure", "--source", source, "--runs", str(runs)]
    argv += ["--out", out]
    if omit:
        argv += ["--omit", omit]
    if stop_on_failure:
        argv.append("--stop-on-failure")
    if candidate is not None:
        argv += ["--write", candidate[0], "--code", candidate[1]]
    return [*argv, "--", *pytest_args]
