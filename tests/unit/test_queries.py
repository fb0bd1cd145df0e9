"""The query layer both faces (CLI, MCP server) share: pure selection over history rows."""

from __future__ import annotations

import time
from typing import Any

import pytest

from aqe.errors import AqeError, ConfigError
from aqe.queries import (
    algorithm_names,
    find_tests,
    history_policy,
    parse_since,
    select_runs,
    select_tests,
)


def _test(
    test_id: str, *, last_seen_ns: int = 0, runs: int = 1, flip: float = 0.0
) -> dict[str, Any]:
    return {"test_id": test_id, "last_seen_ns": last_seen_ns, "runs": runs, "flip_rate": flip}


def _run(run_id: str, *, started_ns: int, failed: int, first_seq: int) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "started_ns": started_ns,
        "failed": failed,
        "errors": 0,
        "first_seq": first_seq,
    }


def test_since_reads_durations_and_iso_dates_and_names_a_bad_value() -> None:
    assert parse_since(None) is None
    assert parse_since("") is None
    now_ns = time.time() * 1e9
    assert abs(parse_since("2h") - (now_ns - 7200e9)) < 60e9  # type: ignore[operator]
    assert parse_since("2026-11-01") == parse_since("2026-11-01T00:00:00+00:00")
    with pytest.raises(ConfigError, match="'soon': use a duration like 7d"):
        parse_since("soon")


TESTS = [
    _test("b", last_seen_ns=5, runs=3, flip=0.5),
    _test("a", last_seen_ns=1, runs=9, flip=0.1),
    _test("c", last_seen_ns=9, runs=3, flip=0.9),
]
RUNS = [
    _run("r1", started_ns=1, failed=2, first_seq=1),
    _run("r2", started_ns=2, failed=0, first_seq=5),
    _run("r3", started_ns=3, failed=2, first_seq=9),
]


@pytest.mark.parametrize(
    ("select", "rows", "since_ns", "sort", "limit", "expected"),
    [
        (select_tests, TESTS, None, "name", None, ["a", "b", "c"]),
        (select_tests, TESTS, None, "runs", None, ["a", "b", "c"]),
        (select_tests, TESTS, 5, "flip-rate", None, ["c", "b"]),
        (select_tests, TESTS, None, "flip-rate", 1, ["c"]),
        (select_runs, RUNS, None, "newest", None, ["r3", "r2", "r1"]),
        (select_runs, RUNS, None, "oldest", 2, ["r1", "r2"]),
        (select_runs, RUNS, 2, "failures", None, ["r3", "r2"]),
        (select_runs, RUNS, None, "failures", None, ["r3", "r1", "r2"]),
    ],
)
def test_rows_are_filtered_sorted_and_cut(
    select: Any,
    rows: list[dict[str, Any]],
    since_ns: int | None,
    sort: str,
    limit: int | None,
    expected: list[str],
) -> None:
    key = "test_id" if select is select_tests else "run_id"
    assert [r[key] for r in select(rows, since_ns, sort, limit)] == expected


def test_a_test_is_found_exactly_before_by_substring() -> None:
    rows = [_test("pkg.test_a"), _test("pkg.test_a_slow"), _test("pkg.test_b")]
    assert [r["test_id"] for r in find_tests(rows, "pkg.test_a")] == ["pkg.test_a"]
    assert [r["test_id"] for r in find_tests(rows, "test_a")] == ["pkg.test_a", "pkg.test_a_slow"]
    with pytest.raises(AqeError, match=r"no test matches 'nope' \(3 tests known\)"):
        find_tests(rows, "nope")


def test_policy_overrides_only_what_is_given() -> None:
    from aqe.projections.history import DEFAULT_POLICY

    assert history_policy(None, None) is None
    policy = history_policy(0.5, None)
    assert policy is not None
    assert (policy.flip_threshold, policy.broken_streak) == (0.5, DEFAULT_POLICY.broken_streak)
    assert policy.window == DEFAULT_POLICY.window


def test_algorithm_names_are_checked() -> None:
    assert algorithm_names("failure-count") == ["failure-count"]
    assert "failure-count" in algorithm_names("all")
    with pytest.raises(ConfigError, match="'nope': one of"):
        algorithm_names("nope")
