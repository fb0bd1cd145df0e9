"""Budgets of a subset: a share of the total, and a 100% budget that selects every test."""

from __future__ import annotations

import pytest

from aqe.learning.selection import parse_budget, select
from aqe.learning.training import Ranked


def _order(durations: list[float]) -> list[Ranked]:
    return [
        Ranked(position=i, test_id=f"t{i}", priority=1.0 / i, expected_duration_s=d)
        for i, d in enumerate(durations, start=1)
    ]


@pytest.mark.parametrize("total", [13.436424411240122, 0.21060533511106927, 23.308445025757262])
def test_a_full_share_is_the_whole_total(total: float) -> None:
    # Each of these came out one float step below itself as ``total * 100 / 100``.
    assert total * 100 / 100 < total
    assert parse_budget("100%", total) == total


def test_a_100_percent_budget_selects_every_test_whatever_the_summing_order() -> None:
    order = _order([0.3, 0.2, 0.1])
    total = sum(r.expected_duration_s for r in order)  # 0.6, as the callers sum it
    # select() runs the `always` test first: 0.1 + 0.3 + 0.2 is 0.6000000000000001.
    assert total < 0.1 + 0.3 + 0.2
    chosen = select(order, budget_s=parse_budget("100%", total), always={"t3"})
    assert [r.test_id for r in chosen.chosen] == ["t3", "t1", "t2"]
    assert chosen.rest == ()


def test_a_budget_still_stops_before_the_test_that_overruns_it() -> None:
    order = _order([0.3, 0.2, 0.1])
    chosen = select(order, budget_s=parse_budget("80%", 0.6))  # 0.48 s
    assert [r.test_id for r in chosen.chosen] == ["t1"]
    assert [r.test_id for r in chosen.rest] == ["t2", "t3"]
    assert chosen.used_s == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("value", "seconds"), [("50%", 30.0), ("300", 300.0), ("300s", 300.0), ("5m", 300.0)]
)
def test_budgets_parse(value: str, seconds: float) -> None:
    assert parse_budget(value, 60.0) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["0%", "101%", "soon"])
def test_bad_budgets_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match=value):
        parse_budget(value, 60.0)
