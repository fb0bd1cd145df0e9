"""`aqe ingest` given a coverage report (Cobertura XML, LCOV) says which command reads it.

`aqe ingest` stores test results as one run; coverage goes through `aqe coverage
ingest`, whose options mean other things (``--run-id`` there holds the coverage until
that test run finishes). Before, a named coverage file failed with "cannot tell the
report format; pass --format junit, ctrf, pytest-json", and a coverage.xml lying in a
reports directory failed the whole directory. Now a named one is refused with the right
command; one found in a directory is skipped with a message and the rest is ingested.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Runner = Callable[..., Any]  # the `aqe` fixture in conftest.py

pytestmark = pytest.mark.nats

COBERTURA = (
    '<?xml version="1.0" ?>\n<coverage line-rate="0.5"><sources><source>.</source></sources>'
    '<packages><package name="p"><classes><class filename="lib/a.py"><lines>'
    '<line number="1" hits="1"/><line number="2" hits="0"/>'
    "</lines></class></classes></package></packages></coverage>\n"
)
LCOV = "TN:\nSF:web/b.js\nDA:1,1\nDA:2,0\nend_of_record\n"
JUNIT = (
    '<testsuite name="unit" tests="1"><testcase classname="t.A" name="test_ok" time="0.1"/>'
    "</testsuite>\n"
)


def test_a_named_coverage_report_is_refused_with_the_command_that_reads_it(
    aqe: Runner, tmp_path: Path
) -> None:
    cobertura = tmp_path / "coverage.xml"
    cobertura.write_text(COBERTURA)
    lcov = tmp_path / "lcov.info"
    lcov.write_text(LCOV)
    for path, kind in ((cobertura, "Cobertura XML"), (lcov, "LCOV")):
        result = aqe("ingest", str(path))
        assert result.code == 2, result.err
        assert result.err.strip() == (
            f"aqe: error: {path}: a {kind} coverage report, not test results; "
            f"load it with `aqe coverage ingest {path}`"
        )


def test_a_coverage_report_in_a_reports_directory_is_skipped(aqe: Runner, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "coverage.xml").write_text(COBERTURA)
    (reports / "junit.xml").write_text(JUNIT)
    result = aqe("ingest", str(reports), "--json")
    assert result.code == 0, result.err
    done = result.json()
    assert done["files"] == [str(reports / "junit.xml")]
    assert done["summary"]["tests"] == 1
    assert (
        f"{reports / 'coverage.xml'}: skipped, a Cobertura XML coverage report "
        f"(`aqe coverage ingest {reports / 'coverage.xml'}`)"
    ) in result.err
