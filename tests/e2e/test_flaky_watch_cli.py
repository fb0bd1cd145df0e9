"""aqe flaky-watch end to end: the history starts one flaky workflow instance per test, once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Runner = Callable[..., Any]  # the `aqe` fixture in conftest.py

pytestmark = pytest.mark.nats

REPORT = """<?xml version="1.0" encoding="UTF-8"?>
<testsuite name="shop" tests="2">
  <testcase classname="tests.test_cart" name="test_total" time="0.1"/>
  <testcase classname="tests.test_cart" name="test_pay" time="0.7">
    <flakyFailure message="timeout" type="TimeoutError">trace</flakyFailure>
  </testcase>
</testsuite>
"""


def test_flaky_watch_starts_an_instance_for_a_pass_on_retry_once(
    aqe: Runner, tmp_path: Path
) -> None:
    report = tmp_path / "TEST-cart.xml"
    report.write_text(REPORT)
    assert aqe("ingest", str(report), "--commit", "c1", "--run-id", "ci-1", "-q").code == 0
    first = aqe("flaky-watch", "--source", str(tmp_path), "--once", "--json")
    assert first.code == 0, first.err
    started = first.json()["started"]
    assert len(started) == 1
    again = aqe("flaky-watch", "--source", str(tmp_path), "--once", "--json")
    assert again.json() == {"started": [], "quarantine_events": 0}
    listing = aqe("workflows", "list", "--json").json()
    (instance,) = [i for i in listing if i["instance_id"] == started[0]]
    assert instance["workflow"] == "flaky"
    shown = aqe("workflows", "show", started[0], "--json")
    assert shown.code == 0, shown.err
    assert "tests.test_cart.test_pay" in shown.out
    assert "passed on retry in run ci-1" in shown.out
