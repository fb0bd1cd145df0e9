"""``aqe ingest`` and the history questions, end to end on a real nats-server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Runner = Callable[..., Any]  # the `aqe` fixture in conftest.py

pytestmark = pytest.mark.nats


def junit(path: Path, *cases: str, suite: str = "unit") -> Path:
    body = "\n".join(cases)
    path.write_text(
        f'<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<testsuite name="{suite}" tests="{len(cases)}" timestamp="2026-11-20T10:00:00">\n'
        f"{body}\n</testsuite>\n",
        encoding="utf-8",
    )
    return path


def ok(name: str) -> str:
    return f'<testcase classname="com.acme.CartTest" name="{name}" time="0.5"/>'


def failing(name: str, message: str = "expected 3 but was 2") -> str:
    return (
        f'<testcase classname="com.acme.CartTest" name="{name}" time="1.5">'
        f'<failure message="{message}" type="java.lang.AssertionError">trace</failure>'
        "</testcase>"
    )


def flaky(name: str) -> str:
    return (
        f'<testcase classname="com.acme.CartTest" name="{name}" time="0.7">'
        '<flakyFailure message="timeout" type="java.net.SocketTimeoutException">'
        "trace</flakyFailure></testcase>"
    )


def test_ingest_summarises_and_is_idempotent(aqe: Runner, tmp_path: Path) -> None:
    report = junit(tmp_path / "TEST-cart.xml", ok("total"), failing("coupon"), flaky("pay"))
    first = aqe("ingest", str(report), "--commit", "c1", "-q")
    assert first.code == 0, first.err
    assert "3 tests" in first.out
    assert "1 failed" in first.out
    assert "1 flaky on retry" in first.out
    assert "6 events appended, 0 already stored" in first.out
    again = aqe("ingest", str(report), "--commit", "c1", "-q", "--json").json()
    assert (again["appended"], again["duplicates"]) == (0, 6)
    runs = aqe("runs", "--json").json()
    assert len(runs) == 1
    assert (runs[0]["total"], runs[0]["failed"], runs[0]["flaky"]) == (3, 1, 1)
    assert runs[0]["commit"] == "c1"


def test_flaky_and_broken_tables_over_several_runs(aqe: Runner, tmp_path: Path) -> None:
    for i in range(4):
        cases = [ok("total"), ok("pay") if i != 1 else flaky("pay")]
        cases.append(failing("coupon") if i >= 1 else ok("coupon"))
        report = junit(tmp_path / f"run{i}.xml", *cases)
        result = aqe("ingest", str(report), "--commit", f"c{i}", "--run-id", f"r{i}", "-q")
        assert result.code == 0, result.err
    broken = aqe("broken", "--json").json()
    assert [r["test_id"] for r in broken] == ["com.acme.CartTest.coupon"]
    assert broken[0]["failing_since"] == "r1"
    assert broken[0]["last_failure_message"].startswith("expected 3 but was 2\n")
    flaky_rows = aqe("flaky", "--json").json()
    assert [r["test_id"] for r in flaky_rows] == ["com.acme.CartTest.pay"]
    assert "retry" in flaky_rows[0]["reason"]
    one = aqe("history", "CartTest.total", "--json").json()
    assert (one["runs"], one["passes"], one["status"]) == (4, 4, "healthy")
    table = aqe("flaky")
    assert table.code == 0
    assert "CartTest.pay" in table.out
    # A stricter threshold is applied on the fly, from the projection's state.
    assert aqe("broken", "--broken-streak", "4", "--json").json() == []
    quarantined = aqe("quarantine", "com.acme.CartTest.pay", "--reason", "timing")
    assert quarantined.code == 0, quarantined.err
    assert aqe("history", "com.acme.CartTest.pay", "--json").json()["quarantined"] is True
    verify = aqe("replay", "history", "--verify")
    assert verify.code == 0, verify.out + verify.err
    assert "equals a rebuild" in verify.out


def test_a_bad_report_publishes_nothing_and_names_the_line(aqe: Runner, tmp_path: Path) -> None:
    good = junit(tmp_path / "good.xml", ok("total"))
    bad = tmp_path / "bad.xml"
    bad.write_text('<?xml version="1.0"?>\n<testsuite name="x">\n<testcase name="a">\n')
    result = aqe("ingest", str(good), str(bad))
    assert result.code == 2
    assert result.err.startswith("aqe: error: ")
    assert "bad.xml:" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert aqe("events", "tail", "--json").out.strip() == ""


def test_question_errors_are_one_line(aqe: Runner, tmp_path: Path) -> None:
    report = junit(tmp_path / "r.xml", ok("total"))
    assert aqe("ingest", str(report), "-q").code == 0
    since = aqe("history", "--since", "yesterday-ish")
    assert since.code == 2
    assert "--since" in since.err
    missing = aqe("history", "no.such.test")
    assert missing.code == 2
    assert "no test matches" in missing.err
    assert aqe("history", "--since", "1d", "--json").json()[0]["test_id"].endswith("total")


def test_a_huge_non_ascii_test_name_lands_in_a_whole_run(aqe: Runner, tmp_path: Path) -> None:
    # Issue 21 item 1: the encoded subject of this name was ~5.4 KB, past the server's
    # 4 KB control line; ingest hung 10 s and left 1,999 of 2,500 executions stored.
    huge = "test_i18n[" + "漢" * 600 + "]"
    cases = [ok(f"case_{i}") for i in range(2500)]
    cases[1250] = ok(huge)
    report = junit(tmp_path / "TEST-i18n.xml", *cases)
    result = aqe("ingest", str(report), "-q", "--json")
    assert result.code == 0, result.err
    assert result.json()["appended"] == 2502
    runs = aqe("runs", "--json").json()
    assert [(r["finished"], r["executions"], r["total"]) for r in runs] == [(True, 2500, 2500)]
    one = aqe("history", f"com.acme.CartTest.{huge}", "--json").json()
    assert one["test_id"] == f"com.acme.CartTest.{huge}"  # the full name, from the payload


def test_a_six_thousand_character_name_is_ingested(aqe: Runner, tmp_path: Path) -> None:
    name = "test_" + "x" * 6000
    report = junit(tmp_path / "TEST-long.xml", ok(name))
    result = aqe("ingest", str(report), "-q", "--json")
    assert result.code == 0, result.err
    assert result.json()["appended"] == 3
    one = aqe("history", f"com.acme.CartTest.{name}", "--json").json()
    assert (one["runs"], one["passes"]) == (1, 1)


def _limit_tests_stream(url: str, max_msgs: int) -> None:
    """Create (or update) AQE_TESTS as aqe declares it, but refusing past ``max_msgs``."""
    import asyncio

    import nats
    from nats.js.api import DiscardPolicy, StreamConfig

    async def go() -> None:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            config = StreamConfig(
                name="AQE_TESTS",
                subjects=["aqe.tests.>"],
                duplicate_window=3600,
                allow_atomic=True,
                allow_direct=True,
                max_msgs=max_msgs,
                discard=DiscardPolicy.NEW,
            )
            try:
                await js.add_stream(config)
            except nats.js.errors.BadRequestError:
                await js.update_stream(config)
        finally:
            await nc.close()

    asyncio.run(go())


def test_a_run_cut_short_is_invisible_named_and_completed_by_ingesting_again(
    aqe: Runner, tmp_path: Path, nats_url: str
) -> None:
    cases = [ok(f"case_{i:04d}") if i % 10 else failing(f"case_{i:04d}") for i in range(2500)]
    report = junit(tmp_path / "TEST-cut.xml", *cases)
    _limit_tests_stream(nats_url, max_msgs=1500)  # the server refuses the rest
    cut = aqe("ingest", str(report), "-q")
    assert cut.code == 2
    assert f"{report}: not ingested:" in cut.err
    assert len(cut.err.strip().splitlines()) == 1
    assert aqe("runs", "--json").json() == []
    assert aqe("history", "CartTest.case_0001", "--json").code == 2  # not shown yet
    _limit_tests_stream(nats_url, max_msgs=-1)
    again = aqe("ingest", str(report), "-q", "--json")
    assert again.code == 0, again.err
    stored_before = again.json()["duplicates"]
    assert 0 < stored_before <= 1500
    assert again.json()["appended"] == 2502 - stored_before
    runs = aqe("runs", "--json").json()
    assert [(r["finished"], r["executions"], r["failed"]) for r in runs] == [(True, 2500, 250)]
    one = aqe("history", "CartTest.case_0001", "--json").json()
    assert (one["runs"], one["passes"]) == (1, 1)


def test_ingest_caps_file_size_and_skips_links_out_of_a_directory(
    aqe: Runner, tmp_path: Path, aqe_env: dict[str, str]
) -> None:
    import os

    reports = tmp_path / "reports"
    reports.mkdir()
    junit(reports / "TEST-a.xml", ok("total"))
    outside = junit(tmp_path / "private.xml", ok("secret"))
    os.symlink(outside, reports / "TEST-escape.xml")
    result = aqe("ingest", str(reports), "-q", "--json")
    assert result.code == 0, result.err
    assert result.json()["files"] == [str(reports / "TEST-a.xml")]
    assert f"{reports / 'TEST-escape.xml'}: skipped, a symbolic link to outside" in result.err
    big = junit(tmp_path / "TEST-big.xml", *[ok(f"t{i}") for i in range(50)])
    capped = aqe("ingest", str(big), "--max-file-size", "1000", "-q")
    assert capped.code == 2
    assert capped.err.startswith(f"aqe: error: {big}: file too large: ")
    assert "the cap is 1,000 bytes" in capped.err
    from_env = aqe("ingest", str(big), "-q", env={**aqe_env, "AQE_INGEST_MAX_BYTES": "1000"})
    assert from_env.code == 2
    assert "the cap is 1,000 bytes" in from_env.err
