"""Events of test generation: which generated tests were kept, which not and why, and the gain.

A *batch* is one run of the generate → keep pipeline over some target modules of one
source tree (one workflow step, or one ``aqe testgen generate``). Every candidate test a
generator wrote ends as exactly one of

* :class:`GeneratedTestKept` on ``aqe.tests.generated.<candidate id>.kept``: it passed
  every one of its runs in a fresh sandbox and covered lines or branches that the
  existing suite and the tests kept before it did not; it carries its code, so the log
  alone can write it out again;
* :class:`GeneratedTestRejected` on ``aqe.tests.generated.<candidate id>.rejected``,
  with the reason (``failed``, ``flaky``, ``no-gain``, ``stopped: <limit>``,
  ``unresolved``);

and the batch's coverage before and after, per measured file, is one
:class:`GenerationMeasured` on ``aqe.tests.generation.<batch id>.measured``, appended
last: a batch whose ``measured`` event is missing did not finish.

The candidate id hashes the batch, the generator and the code, so appending the same
verdict again is deduplicated by the server.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from aqe.events._base import Event

__all__ = [
    "CoverageTotals",
    "GeneratedTestKept",
    "GeneratedTestRejected",
    "GenerationMeasured",
]


class CoverageTotals(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Line and branch coverage of one file (or a sum of files)."""

    statements: int = 0
    lines: int = 0
    """Statements that ran."""
    branches: int = 0
    """Branch arcs the code has (coverage.py: ways out of a line with more than one)."""
    taken: int = 0
    """Branch arcs that ran."""

    @property
    def line_pct(self) -> float:
        """Lines run, in percent of the statements (100 for a file without any)."""
        return 100.0 * self.lines / self.statements if self.statements else 100.0

    @property
    def branch_pct(self) -> float:
        """Branch arcs taken, in percent of the arcs (100 for a file without branches)."""
        return 100.0 * self.taken / self.branches if self.branches else 100.0


class GeneratedTestKept(Event, frozen=True, kw_only=True, tag="tests.generated.kept.v1"):
    """A generated test passed ``runs`` times in fresh sandboxes and added coverage."""

    id_field: ClassVar[str] = "candidate_id"

    candidate_id: str
    batch_id: str
    target: str
    """The module it was generated for (``toolz.itertoolz``)."""
    generator: str
    """``ghostwriter`` or ``pynguin``."""
    seed: int
    name: str
    """A file name for it (``test_gw_toolz_itertoolz_groupby.py``)."""
    code: str
    runs: int
    lines_gained: int
    branches_gained: int
    gained_lines: dict[str, tuple[int, ...]] = msgspec.field(default_factory=dict)
    """Per measured file, the lines this test was the first to run."""
    instance_id: str = ""
    """The workflow instance whose step ran the batch, if one did."""


class GeneratedTestRejected(Event, frozen=True, kw_only=True, tag="tests.generated.rejected.v1"):
    """A generated test was not kept, and why."""

    id_field: ClassVar[str] = "candidate_id"

    candidate_id: str
    batch_id: str
    target: str
    generator: str
    seed: int
    name: str
    reason: str
    """``failed``, ``flaky``, ``no-gain``, ``stopped: <limit>`` or ``unresolved``."""
    runs: int = 0
    passed: int = 0
    """Runs that passed (``flaky``: some did, ``failed``: none did)."""
    detail: str = ""
    """The tail of the output of its first failing run, or what was unresolved."""
    code: str = ""
    instance_id: str = ""


class GenerationMeasured(Event, frozen=True, kw_only=True, tag="tests.generation.measured.v1"):
    """A batch finished: coverage before and after per file, candidates and kept tests."""

    id_field: ClassVar[str] = "batch_id"

    batch_id: str
    source: str
    targets: tuple[str, ...]
    generators: tuple[str, ...]
    seed: int
    runs: int
    """The keep rule's N: passes needed in a row."""
    sandbox: str
    """The sandbox backend the generated code ran in."""
    before: dict[str, CoverageTotals] = msgspec.field(default_factory=dict)
    after: dict[str, CoverageTotals] = msgspec.field(default_factory=dict)
    generated: dict[str, int] = msgspec.field(default_factory=dict)
    """Candidates per generator."""
    kept: dict[str, int] = msgspec.field(default_factory=dict)
    """Kept tests per generator."""
    wall_s: float = 0.0
    instance_id: str = ""
