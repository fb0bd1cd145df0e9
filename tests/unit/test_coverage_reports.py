"""Cobertura XML and LCOV readers: what they read, and errors that name file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from aqe.coverage.reports import detect_coverage_format, parse_cobertura, parse_lcov
from aqe.errors import ReportError

COBERTURA = """<?xml version="1.0" ?>
<coverage line-rate="0.5" branch-rate="0.5" version="7.0">
  <sources><source>{source}</source></sources>
  <packages><package name="pkg"><classes>
    <class name="core.py" filename="pkg/core.py">
      <methods/>
      <lines>
        <line number="1" hits="1"/>
        <line number="2" hits="3" branch="true" condition-coverage="50% (1/2)"/>
        <line number="3" hits="0"/>
      </lines>
    </class>
    <class name="core.py" filename="pkg/core.py">
      <lines><line number="9" hits="2"/></lines>
    </class>
  </classes></package></packages>
</coverage>
"""


def test_cobertura_reads_lines_and_branches_and_joins_the_source(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    report = tmp_path / "coverage.xml"
    report.write_text(COBERTURA.format(source=tmp_path / "src"))
    assert detect_coverage_format(report) == "cobertura"
    (core,) = parse_cobertura(report, root=tmp_path)
    assert core.path == "src/pkg/core.py"
    assert core.statements == {1, 2, 3, 9}
    assert core.executed == {1, 2, 9}
    assert core.branches == {2: (2, 1)}
    (plain,) = parse_cobertura(report)
    assert plain.path == "pkg/core.py"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "<coverage><packages><package><classes><class filename='a.py'><lines>"
            "<line number='x' hits='1'/></lines></class></classes></package></packages></coverage>",
            "(a.py): line number 'x' is not a whole number",
        ),
        (
            "<coverage><class filename='a.py'><lines><line number='1' hits='1' branch='true' "
            "condition-coverage='300% (3/1)'/></lines></class></coverage>",
            "line 1: 3 of 1 conditions taken",
        ),
        ("<coverage><class><lines/></class></coverage>", "a <class> without a filename"),
        ("<coverage>\n<class filename='a.py'>\n</coverage>", ":3: malformed XML"),
        ('<!DOCTYPE c [<!ENTITY x "y">]><coverage>&x;</coverage>', "forbidden XML construct"),
    ],
)
def test_cobertura_errors_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    report = tmp_path / "bad.xml"
    report.write_text(text)
    with pytest.raises(ReportError) as info:
        parse_cobertura(report)
    assert message in str(info.value)
    assert str(report) in str(info.value)


def test_lcov_reads_records(tmp_path: Path) -> None:
    report = tmp_path / "lcov.info"
    report.write_text(
        "TN:\nSF:./web/a.js\nFN:1,f\nDA:1,4\nDA:2,0\nDA:3,1,abc\n"
        "BRDA:1,0,0,2\nBRDA:1,0,1,-\nBRDA:3,1,0,0\nBRF:3\nBRH:1\nend_of_record\n"
        "SF:web/b.js\nDA:7,1\nend_of_record\n"
    )
    assert detect_coverage_format(report) == "lcov"
    a, b = parse_lcov(report)
    assert a.path == "web/a.js"
    assert (a.statements, a.executed) == ({1, 2, 3}, {1, 3})
    assert a.branches == {1: (2, 1), 3: (1, 0)}
    assert (b.path, b.executed) == ("web/b.js", {7})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("SF:a\nDA:1\nend_of_record\n", ":2: DA needs line,hits"),
        ("SF:a\nDA:1,-3\nend_of_record\n", ":2: DA hits '-3' is negative"),
        ("SF:a\nBRDA:1,0,0\nend_of_record\n", ":2: BRDA needs line,block,branch,taken"),
        ("DA:1,1\n", ":1: DA outside an SF"),
        ("SF:a\nSF:b\n", ":2: SF before the previous end_of_record"),
        ("SF:a\nDA:1,1\n", "a: no end_of_record before the end of the file"),
    ],
)
def test_lcov_errors_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    report = tmp_path / "bad.info"
    report.write_text(text)
    with pytest.raises(ReportError) as info:
        parse_lcov(report)
    assert message in str(info.value)
    assert str(report) in str(info.value)


def test_unknown_and_empty_files_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("  \n")
    with pytest.raises(ReportError, match="empty file"):
        detect_coverage_format(empty)
    other = tmp_path / "x.json"
    other.write_text("{}")
    with pytest.raises(ReportError, match="neither Cobertura XML nor LCOV"):
        detect_coverage_format(other)
