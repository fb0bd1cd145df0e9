"""The fault suite's checker finds each kind of violation in hand-made histories."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from support.history_checker import (
    History,
    LeaseRecord,
    Op,
    check_events,
    check_leases,
    check_verdicts,
)


class RefusedError(Exception):
    pass


class UnreachableError(RefusedError):
    """Indeterminate although it subclasses a definite error (as LogUnavailableError does)."""


def op(outcome: str, *ids: str, units: tuple[tuple[str, ...], ...] = ()) -> Op:
    return Op("p", "append", ",".join(ids), ids, outcome=outcome, units=units)  # type: ignore[arg-type]


def test_history_records_outcomes_and_keeps_unexplained_errors() -> None:
    history = History()
    with history.op(
        "c", "append", "a", definite=(RefusedError,), indeterminate=(UnreachableError,)
    ):
        pass
    with history.op(
        "c", "append", "b", definite=(RefusedError,), indeterminate=(UnreachableError,)
    ):
        raise RefusedError("no")
    with history.op(
        "c", "append", "c", definite=(RefusedError,), indeterminate=(UnreachableError,)
    ):
        raise UnreachableError("timeout")
    with (
        pytest.raises(KeyError),
        history.op("c", "append", "d", definite=(RefusedError,), indeterminate=(UnreachableError,)),
    ):
        raise KeyError("bug")
    assert [(o.key, o.outcome) for o in history.ops] == [
        ("a", "ok"),
        ("b", "fail"),
        ("c", "info"),
        ("d", "info"),
    ]
    assert history.counts()["append", "info"] == 2


def test_clean_history_passes() -> None:
    ops = [op("ok", "a"), op("fail", "b"), op("info", "c"), op("info", "d")]
    check = check_events(ops, ["a", "c"])
    assert check.ok, check.problems()
    assert (check.acked, check.unknown, check.unknown_present) == (1, 2, 1)


def test_lost_duplicated_and_failed_but_stored_writes_are_found() -> None:
    ops = [op("ok", "a"), op("ok", "b"), op("fail", "c"), op("info", "d")]
    check = check_events(ops, ["a", "c", "d", "d", "x", "x"])
    assert [eid for _, eid in check.lost] == ["b"]
    assert check.duplicates == {"d": 2, "x": 2}
    assert [eid for _, eid in check.failed_present] == ["c"]
    assert not check.ok
    assert len(check.problems()) == 4


@pytest.mark.parametrize(
    ("stored", "whole"),
    [
        ([], True),
        (["b1", "b2"], True),  # body without its marker: invisible, allowed
        (["b1", "b2", "m"], True),
        (["b1"], False),  # body in part
        (["m"], False),  # marker without its body
        (["b1", "m"], False),
    ],
)
def test_units_land_whole_and_in_order(stored: list[str], whole: bool) -> None:
    ingest = op("info", "b1", "b2", "m", units=(("b1", "b2"), ("m",)))
    assert (not check_events([ingest], stored).partial) is whole


def lease_log() -> list[LeaseRecord]:
    return [
        LeaseRecord(1, "acquired", "a", 1, 0),
        LeaseRecord(2, "renewed", "a", 1),
        LeaseRecord(4, "released", "a", 1),
        LeaseRecord(5, "acquired", "b", 5, 4),
    ]


def test_one_leader_per_term_passes_a_clean_chain() -> None:
    claims = [
        Op("a", "elect", "g", outcome="ok", value=1),
        Op("b", "elect", "g", outcome="ok", value=5),
        Op("c", "elect", "g", outcome="fail"),
    ]
    assert check_leases(lease_log(), claims, {3: ("a", 1), 6: ("b", 5)}) == []


def test_two_leaders_racing_for_one_term_are_found() -> None:
    records = [*lease_log(), LeaseRecord(6, "acquired", "c", 6, 4)]  # also replaced seq 4
    assert "two leaders raced" in check_leases(records, [], {})[0]


def test_writes_and_claims_outside_their_term_are_found() -> None:
    records = [*lease_log(), LeaseRecord(7, "renewed", "a", 1)]  # a renews term 1 late
    claims = [Op("c", "elect", "g", outcome="ok", value=5)]  # c told it leads b's term
    problems = check_leases(records, claims, {6: ("a", 1)})  # a's fenced write in term 5
    assert len(problems) == 3, problems
    assert any("renewed at 7 by a for term 1" in p for p in problems)
    assert any("fenced write at 6 by a for term 1 stored under term 5" in p for p in problems)
    assert any("c was told it leads term 5; the log says b" in p for p in problems)


def verdict(choice: str | None, at: int | None) -> SimpleNamespace:
    return SimpleNamespace(status="decided" if choice else "open", choice=choice, decided_at_seq=at)


def test_one_verdict_per_proposal() -> None:
    seen = [
        Op("v1", "tally", "p1", outcome="ok", value=verdict(None, None)),
        Op("v2", "tally", "p1", outcome="ok", value=verdict("ship", 9)),
    ]
    assert check_verdicts({"p1": [verdict("ship", 9)] * 3}, seen) == []
    assert check_verdicts({"p1": [verdict("ship", 9), verdict("block", 9)]}, [])
    late = [Op("v3", "tally", "p1", outcome="ok", value=verdict("block", 11))]
    assert "v3 saw 'block' decided at 11" in check_verdicts({"p1": [verdict("ship", 9)]}, late)[0]
