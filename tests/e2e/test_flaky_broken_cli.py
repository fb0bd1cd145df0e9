"""``aqe flaky`` and ``aqe broken`` decide by evidence (issue 11, item 5), end to end."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Runner = Callable[..., Any]  # the `aqe` fixture in conftest.py

pytestmark = pytest.mark.nats

TEST = "com.acme.CartTest.coupon"


def case(passed: bool) -> str:
    if passed:
        return '<testcase classname="com.acme.CartTest" name="coupon" time="0.5"/>'
    return (
        '<testcase classname="com.acme.CartTest" name="coupon" time="1.5">'
        '<failure message="expected 3 but was 2" type="AssertionError">trace</failure>'
        "</testcase>"
    )


def report(path: Path, minute: int, *attempts: bool) -> Path:
    """A gotestsum-style report: one ``<testcase>`` per attempt, in order."""
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<testsuite name="unit" tests="{len(attempts)}" '
        f'timestamp="2026-11-20T10:{minute:02d}:00">\n'
        + "\n".join(case(a) for a in attempts)
        + "\n</testsuite>\n",
        encoding="utf-8",
    )
    return path


def test_a_failing_streak_of_a_test_that_passes_on_retry_is_flaky(
    aqe: Runner, tmp_path: Path
) -> None:
    # The test, oldest first: 9 of 16 passed (two on retry), the newest 3 failed.
    attempts = {"p": (True,), "f": (False,), "r": (False, True)}
    files = [
        str(report(tmp_path / f"run{i:02d}.xml", i, *attempts[v]))
        for i, v in enumerate("pfpppprrpfffpfff")
    ]
    done = aqe("ingest", *files, "--run-per-file", "-q")
    assert done.code == 0, done.err
    row = aqe("history", TEST, "--json").json()
    assert row["recent"] == "fffpfffprrppppfp"  # newest first: the files' order held
    assert aqe("broken", "--json").json() == []
    (flaky,) = aqe("flaky", "--json").json()
    assert flaky["test_id"] == TEST
    assert flaky["reason"].startswith("failed the last 3 runs, 19.1% likely")
    # Three more failing runs make the streak too unlikely for bad luck.
    more = [str(report(tmp_path / f"run{i}.xml", i, False)) for i in (16, 17, 18)]
    assert aqe("ingest", *more, "--run-per-file", "-q").code == 0
    (broken,) = aqe("broken", "--json").json()
    assert broken["reason"].startswith("failed the last 6 runs, 3.7% likely")


def test_broken_since_its_first_run_names_that_run(aqe: Runner, tmp_path: Path) -> None:
    # Runs r0 and r1 end failed after a pass in between (failed, passed, failed), as a
    # rerun plugin's teardown report made them; r2 failed. The streak began at r0.
    for i, attempts in enumerate([(False, True, False), (False, True, False), (False,)]):
        path = report(tmp_path / f"r{i}.xml", i, *attempts)
        done = aqe("ingest", str(path), "--run-id", f"r{i}", "-q")
        assert done.code == 0, done.err
    (row,) = aqe("broken", "--json").json()
    assert (row["test_id"], row["failing_since"], row["first_run"]) == (TEST, "r0", "r0")
    table = aqe("broken")
    assert table.code == 0, table.err
    assert "r0 (first seen): expected 3 but was 2" in table.out
    assert "None" not in table.out
