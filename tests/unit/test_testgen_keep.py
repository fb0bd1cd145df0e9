"""The keep rule, coverage-set arithmetic, splitting generated modules (pure)."""

from __future__ import annotations

import json

import pytest

from aqe.errors import ReportError
from aqe.testgen._split import split_tests
from aqe.testgen.generators import Candidate, generator_names
from aqe.testgen.keep import Evaluated, judge
from aqe.testgen.measure import FileSets, Measurement, gain_of, parse_measurement, sum_totals

MOD = "pkg/mod.py"
STATEMENTS = frozenset(range(1, 11))
ARCS = frozenset({(2, 3), (2, 5), (6, 7), (6, 9)})


def sets(lines: set[int], taken: set[tuple[int, int]] | None = None) -> dict[str, FileSets]:
    return {
        MOD: FileSets(
            statements=STATEMENTS, lines=frozenset(lines), arcs=ARCS, taken=frozenset(taken or ())
        )
    }


def cand(name: str, generator: str = "pynguin", **kw: str) -> Candidate:
    return Candidate(
        name=name, target="pkg.mod", generator=generator, seed=1, code=f"# {name}", **kw
    )


def measured(
    name: str, codes: tuple[int, ...], lines: set[int], taken: set[tuple[int, int]] | None = None
) -> Evaluated:
    return Evaluated(
        candidate=cand(name),
        measurement=Measurement(exit_codes=codes, files=sets(lines, taken or set()), tail="boom"),
    )


BASE = sets({1, 2, 3}, {(2, 3)})


def test_kept_only_when_every_run_passes_and_it_adds_coverage() -> None:
    verdicts, after = judge(
        [
            measured("test_a.py", (0, 0, 0), {1, 2, 5}, {(2, 5)}),  # new line 5, new arc
            measured("test_b.py", (0, 1, 0), {1, 7, 8}),  # flaky
            measured("test_c.py", (1, 1, 1), {9}),  # failed
            measured("test_d.py", (0, 0, 0), {1, 2, 3}, {(2, 3)}),  # nothing new
        ],
        BASE,
        runs=3,
    )
    by = {v.candidate.name: v for v in verdicts}
    assert by["test_a.py"].kept
    assert by["test_a.py"].reason == "kept"
    assert by["test_a.py"].gained_lines == {MOD: frozenset({5})}
    assert by["test_a.py"].branches_gained == 1
    assert (by["test_b.py"].reason, by["test_b.py"].passed) == ("flaky", 2)
    assert (by["test_c.py"].reason, by["test_c.py"].passed) == ("failed", 0)
    assert by["test_c.py"].detail == "boom"
    assert by["test_d.py"].reason == "no-gain"
    assert after[MOD].lines == {1, 2, 3, 5}
    assert after[MOD].taken == {(2, 3), (2, 5)}


def test_a_later_test_must_beat_the_tests_kept_before_it() -> None:
    verdicts, _ = judge(
        [
            measured("test_b.py", (0, 0, 0), {5, 6}),
            measured("test_a.py", (0, 0, 0), {5}),
        ],
        BASE,
        runs=3,
    )
    # Judged in name order: test_a first (gains 5), then test_b gains only 6.
    assert [(v.candidate.name, v.kept) for v in verdicts] == [
        ("test_a.py", True),
        ("test_b.py", True),
    ]
    assert verdicts[1].gained_lines == {MOD: frozenset({6})}
    again, _ = judge([measured("test_a.py", (0, 0, 0), {5})] * 2, BASE, runs=3)
    assert [v.kept for v in again] == [True, False]


def test_fewer_runs_than_n_is_not_deterministic_enough() -> None:
    verdicts, _ = judge([measured("test_a.py", (0, 0), {5})], BASE, runs=3)
    assert verdicts[0].reason == "flaky"


def test_stopped_unresolved_and_missing_measurements_are_rejected() -> None:
    verdicts, after = judge(
        [
            Evaluated(candidate=cand("test_s.py"), stopped="wall-time", error="slept"),
            Evaluated(candidate=cand("test_u.py", unresolved="st.nothing()")),
            Evaluated(candidate=cand("test_e.py"), error="SandboxError: no copy"),
        ],
        BASE,
        runs=3,
    )
    reasons = {v.candidate.name: v.reason for v in verdicts}
    assert reasons == {
        "test_s.py": "stopped: wall-time",
        "test_u.py": "unresolved",
        "test_e.py": "error",
    }
    assert not any(v.kept for v in verdicts)
    assert after == BASE


def test_gain_ignores_lines_that_are_not_statements() -> None:
    candidate = {MOD: FileSets(statements=STATEMENTS, lines=frozenset({42}), arcs=ARCS)}
    assert gain_of(candidate, BASE) == ({}, 0)


def test_totals_count_lines_and_branches() -> None:
    t = sum_totals([BASE[MOD].totals(), BASE[MOD].totals()])
    assert (t.statements, t.lines, t.branches, t.taken) == (20, 6, 8, 2)
    assert t.line_pct == pytest.approx(30.0)
    assert t.branch_pct == pytest.approx(25.0)


def test_parse_measurement_reads_the_sandbox_json() -> None:
    data = {
        "runs": [
            {"exit_code": 0, "wall_s": 0.5, "tail": "ok"},
            {"exit_code": 1, "wall_s": 0.4, "tail": "E assert 1 == 2"},
        ],
        "files": {MOD: {"statements": [1, 2], "lines": [1], "arcs": [[1, 2]], "taken": []}},
    }
    m = parse_measurement(json.dumps(data).encode())
    assert m.exit_codes == (0, 1)
    assert m.passed == 1
    assert m.tail == "E assert 1 == 2"
    assert m.files[MOD].arcs == {(1, 2)}
    with pytest.raises(ReportError, match=r"out\.json: not a test-generation measurement"):
        parse_measurement(b'{"files": 3}', origin="out.json")


GENERATED = """# written by a generator
import pytest
import sys
import mod

helper = 3


def test_0():
    assert mod.f(1) == helper


@pytest.mark.xfail(strict=True)
def test_1():
    mod.f("x")


class TestGroup:
    def test_in_class(self):
        assert mod.f(2) == helper + 1
"""


def test_split_gives_one_module_per_test_with_the_shared_header() -> None:
    parts = split_tests(GENERATED)
    assert [name for name, _ in parts] == ["test_0", "test_1", "TestGroup"]
    _, second = parts[1]
    assert second.startswith("# written by a generator\n")
    assert "helper = 3" in second
    assert "@pytest.mark.xfail(strict=True)\ndef test_1():" in second
    assert "def test_0" not in second
    for _, code in parts:
        compile(code, "<candidate>", "exec")


def test_split_of_broken_code_gives_nothing() -> None:
    assert split_tests("def test_x(:\n") == []
    assert split_tests("import os\n") == []


def test_generator_names_are_checked() -> None:
    assert generator_names("pynguin, ghostwriter,pynguin") == ("pynguin", "ghostwriter")
    with pytest.raises(ValueError, match="choose from ghostwriter, pynguin"):
        generator_names("evosuite")
