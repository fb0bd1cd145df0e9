"""Report parsers: every fixture under tests/fixtures/reports, read exactly."""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aqe.errors import ReportError
from aqe.ingest.model import MAX_MESSAGE, MAX_OUTPUT, CaseResult, ParsedReport
from aqe.ingest.parsers import FORMATS, SPOOL_FORMAT, detect_format, parse_report

REPORTS = Path(__file__).parents[1] / "fixtures" / "reports"

CALC = "tests.unit.test_calc"
CALC_IDS = {
    f"{CALC}.test_add[1-2]",
    f"{CALC}.test_add[2-3]",
    f"{CALC}.TestDivide.test_by_zero",
    f"{CALC}.TestDivide.test_negative",
    f"{CALC}.test_network",
    f"{CALC}.test_db",
    f"{CALC}.test_known_bug",
    f"{CALC}.test_rounding",
}
CALC_OUTCOMES = {
    f"{CALC}.test_add[1-2]": "passed",
    f"{CALC}.test_add[2-3]": "passed",
    f"{CALC}.TestDivide.test_by_zero": "failed",
    f"{CALC}.TestDivide.test_negative": "passed",
    f"{CALC}.test_network": "skipped",
    f"{CALC}.test_db": "error",
    f"{CALC}.test_known_bug": "skipped",  # xfailed
    f"{CALC}.test_rounding": "passed",  # xpassed
}
CALC_REPORTS = ("junit/pytest-xunit2.xml", "junit/pytest-xunit1.xml", "pytest-json/calc.json")


def parse(name: str, fmt: str = "auto") -> ParsedReport:
    return parse_report(REPORTS / name, fmt)


def outcomes(report: ParsedReport) -> Counter[str]:
    return Counter(case.outcome for case in report.cases)


def retried(report: ParsedReport) -> int:
    return sum(1 for case in report.cases if case.attempt > 1)


def by_id(report: ParsedReport, test_id: str) -> list[CaseResult]:
    return [case for case in report.cases if case.test_id == test_id]


def sequence(report: ParsedReport, test_id: str) -> list[tuple[int, str]]:
    return [(case.attempt, case.outcome) for case in by_id(report, test_id)]


# --- detection ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("junit/pytest-xunit2.xml", "junit"),
        ("junit/pytest-xunit1.xml", "junit"),
        ("junit/surefire/TEST-com.acme.FooTest.xml", "junit"),
        ("junit/gotestsum-rerun.xml", "junit"),
        ("junit/jest-junit.xml", "junit"),
        ("junit/jest-junit-file.xml", "junit"),
        ("junit/nested.xml", "junit"),
        ("ctrf/playwright.json", "ctrf"),
        ("ctrf/jest-retries.json", "ctrf"),
        ("ctrf/final-in-attempts.json", "ctrf"),
        ("pytest-json/calc.json", "pytest-json"),
        ("spool/run.aqe.jsonl", SPOOL_FORMAT),
        # broken XML goes to the JUnit reader, which names the problem
        ("bad/truncated.xml", "junit"),
        ("bad/billion-laughs.xml", "junit"),
        ("bad/xxe.xml", "junit"),
    ],
)
def test_detect_format_reads_the_content(name: str, fmt: str) -> None:
    assert detect_format(REPORTS / name) == fmt


def test_detection_ignores_the_extension(tmp_path: Path) -> None:
    renamed = tmp_path / "results.txt"
    renamed.write_bytes((REPORTS / "ctrf/playwright.json").read_bytes())
    assert detect_format(renamed) == "ctrf"
    assert parse_report(renamed).format == "ctrf"


@pytest.mark.parametrize("name", ["bad/not-xml.xml", "bad/unknown.json", "bad/not-junit.xml"])
def test_detect_format_refuses_what_it_cannot_tell(name: str) -> None:
    with pytest.raises(ReportError, match="cannot tell the report format; pass --format") as info:
        detect_format(REPORTS / name)
    assert info.value.path == str(REPORTS / name)


def test_detect_format_names_the_xml_root_it_does_not_know() -> None:
    with pytest.raises(ReportError, match="root is <project>"):
        detect_format(REPORTS / "bad/not-junit.xml")


def test_detect_format_on_an_empty_file() -> None:
    with pytest.raises(ReportError, match="empty file"):
        detect_format(REPORTS / "bad/empty.xml")


def test_a_one_line_spool_is_detected(tmp_path: Path) -> None:
    spool = tmp_path / "one.jsonl"
    spool.write_text('{"event": "tests.run.started.v1", "data": {}}\n')
    assert detect_format(spool) == SPOOL_FORMAT


# --- dispatch -------------------------------------------------------------------------------


def test_formats() -> None:
    assert FORMATS == ("junit", "ctrf", "pytest-json")


def test_digest_and_path() -> None:
    path = REPORTS / "junit/pytest-xunit2.xml"
    report = parse_report(path)
    assert report.digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert report.path == str(path)
    assert report.format == "junit"


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("junit/pytest-xunit2.xml", "junit"),
        ("ctrf/playwright.json", "ctrf"),
        ("pytest-json/calc.json", "pytest-json"),
    ],
)
def test_an_explicit_format_gives_what_auto_gives(name: str, fmt: str) -> None:
    assert parse(name, fmt) == parse(name)


def test_an_unknown_format_lists_the_known_ones() -> None:
    with pytest.raises(ReportError, match="unknown report format 'yaml'; known: junit, ctrf"):
        parse("junit/pytest-xunit2.xml", "yaml")


@pytest.mark.parametrize("fmt", ["auto", SPOOL_FORMAT])
def test_spool_files_are_not_read_here(fmt: str) -> None:
    with pytest.raises(ReportError, match=r"spool files are read by aqe\.ingest\.spool"):
        parse("spool/run.aqe.jsonl", fmt)


def test_a_missing_file() -> None:
    with pytest.raises(ReportError, match="cannot read the file") as info:
        parse("nowhere.xml")
    assert info.value.path.endswith("nowhere.xml")


def test_the_wrong_explicit_format_says_why() -> None:
    with pytest.raises(ReportError, match="not valid JSON") as info:
        parse("junit/pytest-xunit2.xml", "ctrf")
    assert info.value.line == 1
    with pytest.raises(ReportError, match="results is missing"):
        parse("pytest-json/calc.json", "ctrf")
    with pytest.raises(ReportError, match="not well-formed XML") as info:
        parse("ctrf/playwright.json", "junit")
    assert info.value.line == 1


# --- one pytest run, three formats -----------------------------------------------------------


@pytest.mark.parametrize("name", CALC_REPORTS)
def test_the_calc_run(name: str) -> None:
    report = parse(name)
    assert len(report.cases) == 8
    assert outcomes(report) == {"passed": 4, "failed": 1, "error": 1, "skipped": 2}
    assert retried(report) == 0
    assert {case.test_id: case.outcome for case in report.cases} == CALC_OUTCOMES
    assert report.flavour == "pytest"
    assert report.started_at == datetime(2024, 5, 2, 9, 14, 3, 512345, tzinfo=UTC)


def test_the_three_calc_reports_name_the_same_tests() -> None:
    ids = [{case.test_id for case in parse(name).cases} for name in CALC_REPORTS]
    assert ids[0] == ids[1] == ids[2] == CALC_IDS


def test_pytest_xunit2_details() -> None:
    report = parse("junit/pytest-xunit2.xml")
    assert report.suite == "pytest"
    assert report.duration_s == pytest.approx(0.187)
    (failed,) = by_id(report, f"{CALC}.TestDivide.test_by_zero")
    assert failed.name == "test_by_zero"
    assert failed.classname == "tests.unit.test_calc.TestDivide"
    assert failed.suite == "pytest"
    assert failed.duration_s == pytest.approx(0.012)
    assert failed.message is not None
    assert failed.message.startswith("ZeroDivisionError: division by zero\nself = <tests.unit")
    assert failed.message.endswith("src/calc.py:6: ZeroDivisionError")
    assert failed.output is None  # xunit2 keeps no output by default
    (param,) = by_id(report, f"{CALC}.test_add[1-2]")
    assert param.name == "test_add[1-2]"
    (skipped,) = by_id(report, f"{CALC}.test_network")
    assert skipped.message == (
        "no network\n/home/ci/project/tests/unit/test_calc.py:31: no network"
    )
    (xfailed,) = by_id(report, f"{CALC}.test_known_bug")
    assert xfailed.message == "rounding bug #42"


def test_pytest_xunit1_keeps_file_and_output() -> None:
    report = parse("junit/pytest-xunit1.xml")
    (failed,) = by_id(report, f"{CALC}.TestDivide.test_by_zero")
    assert failed.file == "tests/unit/test_calc.py"
    assert failed.output is not None
    assert "Captured Out" in failed.output
    assert failed.output.index("dividing 1 by 0") < failed.output.index("warning: dividing")
    assert report.duration_s == pytest.approx(0.191)


def test_pytest_json_details() -> None:
    report = parse("pytest-json/calc.json")
    assert report.duration_s == pytest.approx(0.18734121322631836)
    (failed,) = by_id(report, f"{CALC}.TestDivide.test_by_zero")
    assert failed.name == "test_by_zero"
    assert failed.file == "tests/unit/test_calc.py"
    assert failed.duration_s == pytest.approx(0.0002 + 0.0115 + 0.0003)
    assert failed.message is not None
    assert failed.message.startswith("ZeroDivisionError: division by zero\nself = <tests")
    # control characters survive as text
    assert failed.output == "dividing 1 by 0\n\x1b[33mwarning:\x1b[0m dividing by zero\x07\n"
    (error,) = by_id(report, f"{CALC}.test_db")
    assert error.message is not None
    assert error.message.startswith("RuntimeError: database unavailable\n@pytest.fixture")
    (skipped,) = by_id(report, f"{CALC}.test_network")
    assert skipped.message == (
        "('/home/ci/project/tests/unit/test_calc.py', 31, 'Skipped: no network')"
    )
    (xfailed,) = by_id(report, f"{CALC}.test_known_bug")
    assert xfailed.message is not None
    assert xfailed.message.startswith("AssertionError: assert 0.30000000000000004 == 0.3")
    (param,) = by_id(report, f"{CALC}.test_add[1-2]")
    assert param.name == "test_add[1-2]"
    assert param.duration_s == pytest.approx(0.0009)


# --- Surefire ------------------------------------------------------------------------------

FOO = "com.acme.FooTest"


def test_surefire_counts() -> None:
    report = parse("junit/surefire/TEST-com.acme.FooTest.xml")
    assert report.flavour == "surefire"
    assert report.suite == FOO
    assert len(report.cases) == 10
    assert outcomes(report) == {"passed": 3, "failed": 3, "error": 3, "skipped": 1}
    assert retried(report) == 4
    assert {case.test_id for case in report.cases} == {
        f"{FOO}.{name}"
        for name in (
            "testAdd",
            "testFlakyNetwork",
            "testCheckout",
            "testLegacyImport",
            "testNullConfig",
            "testBulkImport",
        )
    }


def test_surefire_flaky_attempts_come_before_the_pass() -> None:
    report = parse("junit/surefire/TEST-com.acme.FooTest.xml")
    test_id = f"{FOO}.testFlakyNetwork"
    assert sequence(report, test_id) == [(1, "failed"), (2, "error"), (3, "passed")]
    first, second, passed = by_id(report, test_id)
    assert first.message is not None
    assert first.message.startswith("expected: <200> but was: <503>\norg.opentest4j")
    assert "FooTest.java:41" in first.message
    assert first.output == "GET /health -> 503\n"
    assert second.message is not None
    assert second.message.startswith("Connection reset\njava.net.SocketException")
    assert second.output == "retrying after connection reset\n"
    assert passed.duration_s == pytest.approx(0.21)
    assert passed.message is None
    assert passed.output is None


def test_surefire_reruns_come_after_the_failure() -> None:
    report = parse("junit/surefire/TEST-com.acme.FooTest.xml")
    test_id = f"{FOO}.testCheckout"
    assert sequence(report, test_id) == [(1, "failed"), (2, "failed"), (3, "error")]
    main, rerun, timeout = by_id(report, test_id)
    assert main.duration_s == pytest.approx(0.1)
    assert main.output == "cart has 2 items\n"
    assert rerun.duration_s == pytest.approx(0.093)
    assert timeout.duration_s == pytest.approx(5.002)
    assert timeout.message is not None
    assert timeout.message.startswith("checkout timed out after 5 seconds\njava.util")


def test_surefire_times_with_thousands_separators() -> None:
    report = parse("junit/surefire/TEST-com.acme.FooTest.xml")
    assert report.duration_s == pytest.approx(1234.567)
    (bulk,) = by_id(report, f"{FOO}.testBulkImport")
    assert bulk.duration_s == pytest.approx(1002.5)
    (skipped,) = by_id(report, f"{FOO}.testLegacyImport")
    assert (skipped.outcome, skipped.message) == ("skipped", "not supported on JDK 17")


# --- gotestsum -----------------------------------------------------------------------------

CART = "github.com.acme.shop.internal.cart"


def test_gotestsum_reruns_count_up_per_test() -> None:
    report = parse("junit/gotestsum-rerun.xml")
    assert report.flavour == "gotestsum"
    assert report.suite is None  # two packages
    assert report.duration_s == pytest.approx(3.12745)
    assert report.started_at == datetime(2024, 5, 2, 9, 20, 11, tzinfo=UTC)
    assert len(report.cases) == 10
    assert outcomes(report) == {"passed": 4, "failed": 5, "skipped": 1}
    assert retried(report) == 4
    assert sequence(report, f"{CART}.TestRetryable") == [
        (1, "failed"),
        (2, "failed"),
        (3, "passed"),
    ]
    assert sequence(report, f"{CART}.TestCheckout/empty_cart") == [(1, "failed"), (2, "passed")]
    assert sequence(report, f"{CART}.TestCheckout") == [(1, "failed"), (2, "passed")]
    assert [c.duration_s for c in by_id(report, f"{CART}.TestRetryable")] == [0.3, 0.31, 0.28]


def test_gotestsum_package_failure_belongs_to_its_package() -> None:
    report = parse("junit/gotestsum-rerun.xml")
    (main,) = by_id(report, "github.com.acme.shop.internal.db.TestMain")
    assert main.outcome == "failed"
    assert main.classname is None
    assert main.suite == "github.com/acme/shop/internal/db"
    assert main.message is not None
    assert "connection refused\n\ngoroutine 1" in main.message
    assert "\tgithub.com/acme/shop/internal/db\t0.412s" in main.message
    (skipped,) = by_id(report, f"{CART}.TestSkipOnWindows")
    assert skipped.message is not None
    assert "only on windows" in skipped.message


# --- jest-junit ----------------------------------------------------------------------------


def test_jest_junit_uses_the_suite_as_container() -> None:
    report = parse("junit/jest-junit.xml")
    assert report.flavour == "jest"
    assert report.suite == "jest tests"
    assert report.duration_s == pytest.approx(2.345)
    assert report.started_at == datetime(2024, 5, 2, 9, 30, tzinfo=UTC)
    assert len(report.cases) == 5
    assert outcomes(report) == {"passed": 3, "failed": 1, "skipped": 1}
    assert [case.test_id for case in report.cases] == [
        "Cart.Cart adds an item",
        "Cart.Cart totals sums prices",
        "Cart.Cart totals applies coupons",
        "Cart.Cart totals rounds to cents",
        "src.utils.format.test.js.formats money",
    ]
    failed = report.cases[1]
    assert failed.message is not None
    assert failed.message.startswith("Error: expect(received).toBe(expected)")
    assert failed.suite == "Cart"


def test_jest_junit_uses_the_file_when_it_has_one() -> None:
    report = parse("junit/jest-junit-file.xml")
    assert [case.test_id for case in report.cases] == [
        "src.cart.test.js.Cart adds an item",
        "src.cart.test.js.Cart totals sums prices",
        "src.checkout.test.js.Checkout adds an item",
    ]
    assert report.cases[0].file == "src/cart.test.js"
    assert outcomes(report) == {"passed": 3}


# --- nested suites -------------------------------------------------------------------------


def test_nested_suites_take_the_nearest_name() -> None:
    report = parse("junit/nested.xml")
    assert report.suite == "default"
    assert report.duration_s == pytest.approx(0.048213)
    assert [(c.test_id, c.suite, c.outcome) for c in report.cases] == [
        ("Tests.Unit.CartTest.testAdd", "Tests\\Unit\\CartTest", "passed"),
        (
            "Tests.Unit.CartTest.testTotal with data set #0",
            "Tests\\Unit\\CartTest::testTotal",
            "passed",
        ),
        (
            "Tests.Unit.CartTest.testTotal with data set #1",
            "Tests\\Unit\\CartTest::testTotal",
            "failed",
        ),
        ("Tests.Unit.CartTest.testEmpty", "Tests\\Unit\\CartTest", "passed"),
        ("checkout-smoke.places an order", "checkout-smoke", "passed"),
        ("checkout-smoke.refunds an order", "checkout-smoke", "passed"),
    ]
    # an empty and a missing time are both 0.0
    assert report.cases[2].duration_s == 0.0
    assert report.cases[3].duration_s == 0.0


def test_deep_nesting_does_not_recurse(tmp_path: Path) -> None:
    depth = 5000
    deep = tmp_path / "deep.xml"
    deep.write_text(
        '<testsuite name="s0">' * depth
        + '<testcase classname="a.B" name="test_deep" time="0.5"/>'
        + "</testsuite>" * depth
    )
    (case,) = parse_report(deep).cases
    assert (case.test_id, case.suite) == ("a.B.test_deep", "s0")


def test_namespaced_junit(tmp_path: Path) -> None:
    report = tmp_path / "ns.xml"
    report.write_text(
        '<testsuites xmlns="urn:example:junit"><testsuite name="s">'
        '<testcase classname="a.B" name="test_x"><failure message="boom"/></testcase>'
        "</testsuite></testsuites>"
    )
    (case,) = parse_report(report).cases
    assert (case.test_id, case.outcome, case.message) == ("a.B.test_x", "failed", "boom")


def test_outcome_precedence(tmp_path: Path) -> None:
    report = tmp_path / "both.xml"
    report.write_text(
        '<testsuite name="s">'
        '<testcase classname="m" name="a"><error message="teardown"/><failure message="call"/>'
        "</testcase>"
        '<testcase classname="m" name="b"><skipped/><error message="setup"/></testcase>'
        "</testsuite>"
    )
    cases = parse_report(report).cases
    assert [(c.outcome, c.message) for c in cases] == [("failed", "call"), ("error", "setup")]


# --- output and messages -----------------------------------------------------------------


def test_oversized_output_is_truncated_with_a_marker(tmp_path: Path) -> None:
    big = "x" * 200_000
    report = tmp_path / "big.xml"
    report.write_text(
        '<testsuite name="s"><testcase classname="m" name="t">'
        f'<failure message="{"m" * (MAX_MESSAGE + 10)}"/>'
        f"<system-out>{big}</system-out><system-err>tail</system-err>"
        "</testcase></testsuite>"
    )
    (case,) = parse_report(report).cases
    assert case.output is not None
    assert case.output.startswith("x" * MAX_OUTPUT)
    assert case.output.endswith(f"[aqe: truncated {200_000 + 5 - MAX_OUTPUT} characters]")
    assert case.message is not None
    assert case.message.endswith("[aqe: truncated 10 characters]")


def test_ctrf_output_and_control_characters() -> None:
    report = parse("ctrf/playwright.json")
    final = by_id(report, "tests.admin.dashboard.spec.ts.Admin.Dashboard.admin dashboard loads")[-1]
    assert (
        final.output
        == "Loading admin dashboard\n\x1b[2mchecking auth\x1b[22m\nWarning: slow network"
    )
    assert final.message == (
        "Element not found: .dashboard-metrics\n"
        "Error: Element not found: .dashboard-metrics\n"
        "    at tests/admin/dashboard.spec.ts:42:5"
    )


# --- CTRF -------------------------------------------------------------------------------

CHECKOUT = "tests.checkout.checkout.spec.ts.Checkout.user can check out"


def test_ctrf_playwright() -> None:
    report = parse("ctrf/playwright.json")
    assert report.flavour == "playwright"
    assert report.started_at == datetime(2024, 5, 2, 9, 40, tzinfo=UTC)
    assert report.duration_s == pytest.approx(5.2)
    assert len(report.cases) == 9
    assert outcomes(report) == {"passed": 2, "failed": 4, "skipped": 3}
    assert retried(report) == 3
    assert sequence(report, CHECKOUT) == [(1, "failed"), (2, "failed"), (3, "passed")]
    first, second, passed = by_id(report, CHECKOUT)
    assert first.duration_s == pytest.approx(3.1)
    assert first.message is not None
    assert first.message.startswith("Timeout 3000ms exceeded.\nTimeoutError")
    assert first.started_at == datetime(2024, 5, 2, 9, 40, 1, 300000, tzinfo=UTC)
    assert second.output == "POST /pay -> 502"
    assert passed.duration_s == pytest.approx(2.8)
    login = "tests.auth.login.spec.ts.Authentication.Login.user can log in"
    (case,) = by_id(report, login)
    assert case.suite == "Authentication > Login"
    assert case.file == "tests/auth/login.spec.ts"
    assert case.name == "user can log in"
    assert sequence(
        report, "tests.admin.dashboard.spec.ts.Admin.Dashboard.admin dashboard loads"
    ) == [(1, "failed"), (2, "failed")]
    # pending and other are skipped; no suite and no file path leave the name alone
    assert by_id(report, "tests.reports.export.spec.ts.Reports.imports CSV")[0].outcome == (
        "skipped"
    )
    assert by_id(report, "tests.legacy.spec.ts.legacy flow")[0].outcome == "skipped"


def test_ctrf_retries_without_attempt_details() -> None:
    report = parse("ctrf/jest-retries.json")
    assert report.flavour == "jest"
    assert len(report.cases) == 7
    assert outcomes(report) == {"passed": 3, "failed": 4}
    assert retried(report) == 3
    prefix = "src.cart.test.js.Cart."
    assert sequence(report, f"{prefix}Cart applies a coupon") == [
        (1, "failed"),
        (2, "failed"),
        (3, "passed"),
    ]
    assert sequence(report, f"{prefix}Cart checks stock") == [(1, "failed"), (2, "failed")]
    assert sequence(report, f"{prefix}Cart totals") == [(1, "passed")]  # not flaky
    coupon = by_id(report, f"{prefix}Cart applies a coupon")
    assert [c.duration_s for c in coupon] == [0.0, 0.0, pytest.approx(0.035)]
    assert coupon[0].message is None
    assert coupon[0].suite == "Cart"


def test_ctrf_retry_attempts_that_include_the_final_one() -> None:
    report = parse("ctrf/final-in-attempts.json")
    assert len(report.cases) == 6
    assert outcomes(report) == {"passed": 3, "failed": 3}
    assert retried(report) == 3
    for name in (
        "tests.checkout.checkout.test.js.Checkout.user can check out",
        "tests.search.test.js.Search.search works",
        "tests.profile.test.js.Profile.profile loads",
    ):
        assert sequence(report, name) == [(1, "failed"), (2, "passed")]
    checkout = by_id(report, "tests.checkout.checkout.test.js.Checkout.user can check out")
    assert checkout[0].message == "Payment gateway timeout"  # sorted by attempt number


def test_ctrf_suite_as_string_or_list(tmp_path: Path) -> None:
    report = tmp_path / "ctrf.json"
    report.write_text(
        '{"results": {"tool": {"name": "x"}, "tests": ['
        '{"name": "a", "status": "passed", "duration": 1, "suite": "One > Two"},'
        '{"name": "b", "status": "passed", "duration": 1, "suite": ["One", "Two"]},'
        '{"name": "c", "status": "passed", "duration": 1}'
        "]}}"
    )
    cases = parse_report(report).cases
    assert [c.test_id for c in cases] == ["One > Two.a", "One.Two.b", "c"]
    assert [c.suite for c in cases] == ["One > Two", "One > Two", None]


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bad/billion-laughs.xml", "bad/xxe.xml"])
def test_entities_are_refused(name: str) -> None:
    with pytest.raises(ReportError, match="entities forbidden") as info:
        parse(name)
    assert info.value.path == str(REPORTS / name)
    assert str(REPORTS / name) in str(info.value)


def test_xxe_never_reads_the_file() -> None:
    with pytest.raises(ReportError) as info:
        parse("bad/xxe.xml", "junit")
    assert "root:" not in str(info.value)
    assert "'xxe'" in str(info.value)


def test_truncated_xml_names_the_line() -> None:
    path = REPORTS / "bad/truncated.xml"
    with pytest.raises(ReportError, match="not well-formed XML: unclosed token") as info:
        parse_report(path)
    assert info.value.line == 7
    assert str(info.value).startswith(f"{path}:7: ")


def test_truncated_json_names_the_line() -> None:
    path = REPORTS / "bad/truncated-ctrf.json"
    with pytest.raises(ReportError, match="not valid JSON") as info:
        parse_report(path)
    assert info.value.line == 27
    assert str(info.value).startswith(f"{path}:27: ")


@pytest.mark.parametrize("fmt", ["auto", "junit", "ctrf", "pytest-json"])
def test_an_empty_file(fmt: str) -> None:
    with pytest.raises(ReportError, match="empty file"):
        parse("bad/empty.xml", fmt)


def test_a_file_that_is_not_xml() -> None:
    with pytest.raises(ReportError, match="not well-formed XML: syntax error") as info:
        parse("bad/not-xml.xml", "junit")
    assert info.value.line == 1


def test_xml_that_is_not_junit() -> None:
    with pytest.raises(ReportError, match="not a JUnit report: the root element is <project>"):
        parse("bad/not-junit.xml", "junit")


def test_a_testcase_without_a_name() -> None:
    with pytest.raises(
        ReportError, match=r"a <testcase> in suite 'com\.acme\.BazTest' has no name"
    ):
        parse("bad/no-name.xml")


def test_a_time_that_is_not_a_number() -> None:
    with pytest.raises(ReportError, match="time of testcase 'testSlow': 'fast'"):
        parse("bad/bad-time.xml")


def test_a_ctrf_status_outside_the_spec() -> None:
    with pytest.raises(ReportError, match=r"results\.tests\[1\]\.status is 'broken'"):
        parse("bad/ctrf-bad-status.json")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('{"tests": [{"nodeid": "t.py::a", "outcome": "weird"}]}', r"tests\[0\]\.outcome"),
        ('{"tests": [{"nodeid": 3, "outcome": "passed"}]}', r"tests\[0\]\.nodeid"),
        (
            '{"tests": [{"nodeid": "t.py::a", "outcome": "passed", "call": {"duration": "x"}}]}',
            r"tests\[0\]\.call\.duration",
        ),
        ('{"tests": {}}', "'tests' is missing or not a list"),
    ],
)
def test_pytest_json_field_errors(tmp_path: Path, body: str, reason: str) -> None:
    report = tmp_path / "report.json"
    report.write_text(body)
    with pytest.raises(ReportError, match=reason):
        parse_report(report, "pytest-json")


@pytest.mark.parametrize(
    ("test", "reason"),
    [
        ('{"status": "passed", "duration": 1}', r"tests\[0\]\.name"),
        ('{"name": "a", "status": "passed", "duration": "1"}', r"tests\[0\]\.duration"),
        ('{"name": "a", "status": "passed", "duration": 1, "retries": "2"}', "retries"),
        ('{"name": "a", "status": "passed", "duration": 1, "stdout": "x"}', "stdout"),
        (
            '{"name": "a", "status": "passed", "duration": 1,'
            ' "retryAttempts": [{"status": "failed"}]}',
            r"retryAttempts\[0\]\.attempt",
        ),
    ],
)
def test_ctrf_field_errors(tmp_path: Path, test: str, reason: str) -> None:
    report = tmp_path / "report.json"
    report.write_text(f'{{"results": {{"tests": [{test}]}}}}')
    with pytest.raises(ReportError, match=reason):
        parse_report(report, "ctrf")
