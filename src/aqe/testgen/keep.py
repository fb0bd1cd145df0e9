"""The keep rule (pure): which generated tests stay.

A candidate is **kept** when

1. it passed every one of its ``runs`` runs (each a new process in a fresh sandbox
   working copy; none stopped by a limit), and
2. it covers at least one line or branch arc of the measured files that neither the
   existing suite nor a test kept before it covers.

Candidates are judged one after another in a fixed order (generator, target, name), so
the same measurements always give the same verdicts; what a kept test covers is added
to what the next one has to beat. Rejection reasons: ``unresolved`` (not runnable as
written), ``stopped: <limit>``, ``error`` (no measurement came back), ``failed`` (no run
passed), ``flaky`` (some runs passed, some did not), ``no-gain``.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from aqe.testgen.generators import Candidate
from aqe.testgen.measure import CoverageMap, FileSets, Measurement, covered_by, gain_of

__all__ = ["Evaluated", "Verdict", "judge"]


class Evaluated(msgspec.Struct, frozen=True, kw_only=True):
    """A candidate and what its runs did (``measurement`` None: nothing came back)."""

    candidate: Candidate
    measurement: Measurement | None = None
    stopped: str | None = None
    """The sandbox limit that stopped it, if one did."""
    error: str = ""


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    """Kept or not, why, and what it added."""

    candidate: Candidate
    kept: bool
    reason: str
    """``kept`` or one of the rejection reasons."""
    runs: int
    passed: int
    gained_lines: dict[str, frozenset[int]] = msgspec.field(default_factory=dict)
    branches_gained: int = 0
    detail: str = ""

    @property
    def lines_gained(self) -> int:
        """Lines this test was the first to run, over all files."""
        return sum(len(v) for v in self.gained_lines.values())


def _order(item: Evaluated) -> tuple[str, str, str]:
    c = item.candidate
    return (c.generator, c.target, c.name)


def judge(
    evaluated: Sequence[Evaluated], baseline: CoverageMap, *, runs: int
) -> tuple[list[Verdict], dict[str, FileSets]]:
    """Apply the keep rule; returns the verdicts (in judging order) and the coverage after.

    Args:
        evaluated: every candidate with its measurement.
        baseline: what the existing suite covers.
        runs: how many passing runs make a test deterministic (N).
    """
    covered = covered_by(baseline)
    verdicts: list[Verdict] = []
    for item in sorted(evaluated, key=_order):
        cand = item.candidate
        m = item.measurement
        passed = m.passed if m is not None else 0
        done = len(m.exit_codes) if m is not None else 0

        def reject(
            reason: str, detail: str = "", *, c: Candidate = cand, n: int = done, ok: int = passed
        ) -> Verdict:
            return Verdict(candidate=c, kept=False, reason=reason, runs=n, passed=ok, detail=detail)

        if cand.unresolved:
            verdicts.append(reject("unresolved", cand.unresolved))
        elif item.stopped:
            verdicts.append(reject(f"stopped: {item.stopped}", item.error))
        elif m is None:
            verdicts.append(reject("error", item.error))
        elif passed == 0:
            verdicts.append(reject("failed", m.tail))
        elif passed < runs or done < runs:
            verdicts.append(reject("flaky", m.tail))
        else:
            lines, branches = gain_of(m.files, covered)
            if not lines and not branches:
                verdicts.append(reject("no-gain"))
                continue
            covered = covered_by(covered, m.files)
            verdicts.append(
                Verdict(
                    candidate=cand,
                    kept=True,
                    reason="kept",
                    runs=done,
                    passed=passed,
                    gained_lines=lines,
                    branches_gained=branches,
                )
            )
    return verdicts, covered
