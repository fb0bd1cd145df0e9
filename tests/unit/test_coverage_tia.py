"""Test impact analysis (diff parsing, selection rules), mutants and the audit's scoring."""

from __future__ import annotations

import ast
from pathlib import Path

import msgspec

from aqe.coverage.audit import score_strategies
from aqe.coverage.measured import MeasuredFile, coverage_events
from aqe.coverage.mutants import apply_mutant, find_mutants, sample_mutants
from aqe.coverage.projection import CoverageState, fold_events
from aqe.coverage.tia import ChangedFile, changed_lines, impacted_tests
from aqe.events import Event, TestRunFinished

DIFF = """\
diff --git a/src/pkg/core.py b/src/pkg/core.py
index 1..2 100644
--- a/src/pkg/core.py
+++ b/src/pkg/core.py
@@ -4 +4 @@ def sign(x):
-        return -1
+        return -2
@@ -10,2 +10,0 @@ def double(x):
-    a = 1
-    b = 2
@@ -20,0 +19,3 @@ def tail():
+    x = 1
+    y = 2
+    z = 3
diff --git a/new.py b/new.py
new file mode 100644
--- /dev/null
+++ b/new.py
@@ -0,0 +1,2 @@
+a = 1
+b = 2
diff --git a/gone.py b/gone.py
deleted file mode 100644
--- a/gone.py
+++ /dev/null
@@ -1,2 +0,0 @@
-a = 1
-b = 2
"""


def test_changed_lines_take_the_old_side() -> None:
    files = changed_lines(DIFF)
    assert set(files) == {"src/pkg/core.py", "new.py", "gone.py"}
    core = files["src/pkg/core.py"]
    # Line 4 changed, 10-11 deleted, an insertion after line 20 touches 20 and 21.
    assert core.lines == {4, 10, 11, 20, 21}
    assert not core.added
    assert not core.deleted
    assert files["new.py"].added
    assert files["gone.py"].deleted
    assert files["gone.py"].lines == {1, 2}


def state_of(*runs: list[MeasuredFile]) -> CoverageState:
    events: list[Event] = []
    for index, files in enumerate(runs):
        events += coverage_events(files, run_id=f"r{index}")
        events.append(TestRunFinished(run_id=f"r{index}", total=1, passed=1, failed=0))
    return fold_events(events)


CORE = MeasuredFile(
    path="src/pkg/core.py",
    statements={1, 2, 3, 4, 5, 7, 8, 12, 13},
    executed={1, 2, 3, 4, 7, 8, 12},
    tests={"t.pos": {2, 3}, "t.neg": {2, 4}, "t.dbl": {8}},
)


def test_selection_rules() -> None:
    state = state_of([CORE])
    pending = ["t.pos", "t.neg", "t.dbl", "t.new"]

    def pick(lines: set[int]) -> dict[str, str]:
        change = {"src/pkg/core.py": ChangedFile(path="src/pkg/core.py", lines=lines)}
        return impacted_tests(state, change, pending=pending).reasons

    # A covered statement: its tests; a new test always.
    assert pick({4}) == {"t.neg": "covers", "t.new": "unknown"}
    # A continuation line (6 is no statement) counts as the statement before it (5),
    # which no run executed: nothing selected by coverage, reported as uncovered.
    change = {"src/pkg/core.py": ChangedFile(path="src/pkg/core.py", lines={6})}
    impact = impacted_tests(state, change, pending=pending)
    assert impact.reasons == {"t.new": "unknown"}
    assert impact.uncovered == {"src/pkg/core.py": [5]}
    # A line run only at import time (1, 7: module level): every test of the file.
    assert pick({7}) == {
        "t.pos": "module",
        "t.neg": "module",
        "t.dbl": "module",
        "t.new": "unknown",
    }
    # An unknown file is reported; only the new test is selected.
    other = impacted_tests(state, {"x.cfg": ChangedFile(path="x.cfg", lines={1})}, pending=pending)
    assert other.unknown_files == ["x.cfg"]
    assert other.reasons == {"t.new": "unknown"}


def test_stale_coverage_is_selected() -> None:
    newer = MeasuredFile(
        path="src/pkg/core.py", statements=CORE.statements, executed={2, 3}, tests={"t.pos": {2, 3}}
    )
    state = state_of([CORE], [newer], [newer])
    change = {"src/pkg/core.py": ChangedFile(path="src/pkg/core.py", lines={3})}
    fresh = impacted_tests(state, change, pending=["t.pos", "t.neg"], stale_runs=2)
    # t.neg's coverage is from r0, older than the 2 newest coverage runs.
    assert fresh.reasons == {"t.pos": "covers", "t.neg": "stale"}
    never = impacted_tests(state, change, pending=["t.pos", "t.neg"], stale_runs=None)
    assert never.reasons == {"t.pos": "covers"}


SOURCE = '''\
def f(x, y):
    """Doc."""
    if x > 0 and y:
        return x + 1
    return [x == y, True, "s"]
'''


def test_mutants_keep_every_line_and_parse(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(SOURCE)
    mutants = find_mutants(tmp_path, "m.py")
    operators = {m.operator for m in mutants}
    assert operators == {"compare", "arith", "constant", "negate", "boolop", "return"}
    assert all(m.original != "'Doc.'" for m in mutants)  # docstrings are left alone
    for mutant in mutants:
        mutated = apply_mutant(SOURCE, mutant)
        ast.parse(mutated)
        assert len(mutated.splitlines()) == len(SOURCE.splitlines())
        changed = [
            i + 1
            for i, (a, b) in enumerate(zip(SOURCE.splitlines(), mutated.splitlines(), strict=True))
            if a != b
        ]
        assert changed == [mutant.line]
    labels = [m.label for m in mutants]
    assert "m.py:3 compare: x > 0 -> (x <= 0)" in labels
    assert "m.py:4 return: x + 1 -> None" in labels
    assert sample_mutants(mutants, 3, seed=5) == sample_mutants(mutants, 3, seed=5)
    assert len(sample_mutants(mutants, 3, seed=5)) == 3


def test_strategies_are_scored_against_the_killers(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    state = state_of([CORE])
    suite = ["t.pos", "t.neg", "t.dbl"]
    source = "\n".join(f"x{i} = {i}" for i in range(1, 14)) + "\n"
    (tmp_path / "src" / "core.py").write_text(source)
    mutants = [m for m in find_mutants(tmp_path, "src/core.py") if m.line in (4, 8)]
    mutants = [msgspec.structs.replace(m, path="src/pkg/core.py") for m in mutants]
    killers = [("t.neg",) if m.line == 4 else ("t.pos",) for m in mutants]
    scored = score_strategies(suite, state, mutants, killers, budgets=(0.34,))
    by_line = dict(zip([m.line for m in mutants], scored, strict=True))
    selected, caught = by_line[4]
    assert selected["coverage"] == 1
    assert caught["coverage"]
    assert caught["full suite"]
    # Line 8 is covered by t.dbl only, but t.pos kills it: an escape for coverage.
    selected, caught = by_line[8]
    assert not caught["coverage"]
    assert selected["history@34%"] == 2
