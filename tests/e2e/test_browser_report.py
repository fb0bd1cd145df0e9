"""``aqe report`` opened in headless Chromium: loads clean, fetches nothing, charts drawn.

One Chromium per module (:mod:`tests.support.browser`, the system's ``chromium``
driven over the DevTools Protocol). Screenshots at 1280x800 go to
``AQE_ARTIFACTS_DIR`` (or the test's temporary directory); the path is printed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.browser import CHARTS_DRAWN, Chromium, artifacts_dir, chromium_or_skip

Runner = Callable[..., Any]  # the `aqe` fixture in conftest.py

pytestmark = pytest.mark.timeout(180)

# Verdicts per test over eight runs (oldest first); "r" failed once, then passed on rerun.
PLAN = {
    "shop.CartTest.test_total": "pppppppp",
    "shop.CartTest.test_coupon": "pfprpfrp",
    "shop.PayTest.test_timeout": "pppppfff",
    "shop.PayTest.test_refund": "pppppppf",
    "shop.AuthTest.test_login": "pprppppp",
}


def junit(run: int) -> str:
    cases = []
    for test_id, verdicts in PLAN.items():
        classname, _, name = test_id.rpartition(".")
        v = verdicts[run]
        body = ""
        if v == "f":
            body = '<failure message="assert 1 == 2">trace</failure>'
        elif v == "r":
            body = '<flakyFailure message="timeout" type="T">trace</flakyFailure>'
        cases.append(
            f'<testcase classname="{classname}" name="{name}" time="0.{run + 1}">{body}</testcase>'
        )
    failures = sum(PLAN[t][run] == "f" for t in PLAN)
    return (
        f'<?xml version="1.0"?><testsuite name="shop" tests="{len(PLAN)}" failures="{failures}" '
        f'timestamp="2026-12-0{1 + run // 4}T0{run}:00:00">{"".join(cases)}</testsuite>'
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    with chromium_or_skip(1280, 800) as chromium:
        yield chromium


def test_report_opens_in_chromium_with_charts_and_no_errors(
    aqe: Runner, tmp_path: Path, browser: Chromium
) -> None:
    reports = tmp_path / "reports"
    reports.mkdir()
    for run in range(8):
        (reports / f"run-{run}.xml").write_text(junit(run))
    result = aqe("ingest", *sorted(str(p) for p in reports.iterdir()), "--run-per-file", "-q")
    assert result.code == 0, result.err
    result = aqe("quarantine", "shop.PayTest.test_refund", "--reason", "ticket 7")
    assert result.code == 0, result.err
    result = aqe("report", "--out", str(tmp_path / "out"), "--json")
    assert result.code == 0, result.err
    path = Path(result.json()["path"])

    load_s = browser.open(path.as_uri())
    # Drawn: every chart's plot area holds marks (bars and lines are paths, a heatmap an image).
    drawn = browser.wait_for(CHARTS_DRAWN, timeout_s=20)
    browser.pump(0.2)
    shot = browser.screenshot(artifacts_dir(tmp_path) / "report-1280x800.png")
    print(f"report opened in {load_s:.2f} s; screenshot {shot}")

    assert browser.log.problems() == []
    assert browser.log.foreign_requests() == []
    loaded = [url for url in browser.log.requests if not url.startswith("data:")]
    assert loaded == [path.as_uri()]  # one file; the heatmap draws itself as a data: image
    charts = dict(drawn)
    assert {"runs-over-time", "run-durations", "slowest-tests", "failure-heatmap"} <= set(charts)
    assert all(count > 0 for count in charts.values()), charts
    text = browser.evaluate("document.body.innerText")
    assert "shop.CartTest.test_coupon" in text  # the flakiest table
    assert "shop.PayTest.test_timeout" in text  # the broken table
    assert "ticket 7" in text  # in quarantine now
    assert "AQE_TESTS seq 1-" in text  # every figure says where it came from
    strips = browser.evaluate("document.querySelectorAll('#flakiest .strip span').length")
    assert strips >= 8
    assert shot.stat().st_size > 10_000
