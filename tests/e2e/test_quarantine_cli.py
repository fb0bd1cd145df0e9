"""`aqe quarantine` / `unquarantine` check the test against the history and speak JSON."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Runner = Callable[..., Any]  # the `aqe` fixture in conftest.py

pytestmark = pytest.mark.nats

REPORT = (
    '<testsuites><testsuite name="pytest">'
    '<testcase classname="tests.test_m" name="test_a" time="0.1"/>'
    '<testcase classname="tests.test_m" name="test_b" time="0.1"/>'
    "</testsuite></testsuites>"
)


def test_quarantine_validates_and_answers_json(aqe: Runner, tmp_path: Path) -> None:
    report = tmp_path / "r.xml"
    report.write_text(REPORT, encoding="utf-8")
    assert aqe("ingest", str(report), "-q").code == 0

    phantom = aqe("quarantine", "no.such.test")
    assert phantom.code == 2
    assert "no test 'no.such.test' in the history (2 tests known)" in phantom.err
    assert "--allow-unknown" in phantom.err
    history = aqe("history", "--json").json()
    assert [r["test_id"] for r in history] == ["tests.test_m.test_a", "tests.test_m.test_b"]

    # A pytest node id names the same test.
    held = aqe("quarantine", "tests/test_m.py::test_a", "--reason", "flaky", "--json")
    assert held.code == 0, held.err
    answer = held.json()
    assert (answer["test_id"], answer["quarantined"], answer["changed"]) == (
        "tests.test_m.test_a",
        True,
        True,
    )
    assert answer["seq"] > 0
    again = aqe("quarantine", "tests.test_m.test_a", "--json").json()
    assert (again["changed"], again["quarantined"]) == (False, True)
    row = aqe("history", "tests.test_m.test_a", "--json").json()
    assert (row["quarantined"], row["quarantine_reason"]) == (True, "flaky")

    released = aqe("unquarantine", "tests.test_m.test_a", "--json").json()
    assert (released["quarantined"], released["changed"]) == (False, True)
    assert aqe("unquarantine", "no.such.test").code == 2

    forced = aqe("quarantine", "tests/test_new.py::test_c", "--allow-unknown", "--json")
    assert forced.code == 0, forced.err
    assert forced.json()["test_id"] == "tests.test_new.test_c"
