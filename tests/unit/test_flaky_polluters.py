"""Bisecting a prefix down to the polluter (victims) or the state-setter (brittles)."""

from __future__ import annotations

import math

import pytest

from aqe.workflows._polluters import Bisection, next_probe, observe, start_bisection


def _search(b: Bisection, passes: object) -> Bisection:
    while not b.done:
        b = observe(b, passes(next_probe(b)))  # type: ignore[operator]
    return b


@pytest.mark.parametrize("size", [1, 2, 3, 7, 8, 19, 64])
def test_every_single_polluter_is_found_within_the_probe_bound(size: int) -> None:
    prefix = tuple(f"t{i}" for i in range(size))
    bound = 2 * math.ceil(math.log2(size)) if size > 1 else 0
    for polluter in prefix:
        b = _search(start_bisection("victim", prefix), lambda probe, p=polluter: p not in probe)
        assert b.culprits == (polluter,)
        assert b.single
        assert b.probes <= bound


def test_a_state_setter_is_found_for_a_brittle_test() -> None:
    prefix = ("a", "b", "setter", "c", "d")
    b = _search(start_bisection("brittle", prefix), lambda probe: "setter" in probe)
    assert b.culprits == ("setter",)


def test_culprits_acting_together_are_reported_together() -> None:
    prefix = ("a", "b", "c", "d")
    # The target fails only when both a and d ran before it: no half alone reproduces it.
    b = _search(start_bisection("victim", prefix), lambda probe: not {"a", "d"} <= set(probe))
    assert b.culprits == prefix
    assert not b.single


def test_probes_keep_the_prefix_order() -> None:
    b = start_bisection("victim", ("a", "b", "c", "d", "e"))
    assert next_probe(b) == ("a", "b")
    b = observe(b, True)
    assert next_probe(b) == ("c", "d", "e")


def test_an_empty_prefix_and_a_finished_search_are_refused() -> None:
    with pytest.raises(ValueError, match="empty prefix"):
        start_bisection("victim", ())
    done = start_bisection("victim", ("only",))
    assert done.culprits == ("only",)
    with pytest.raises(ValueError, match="over"):
        next_probe(done)
    with pytest.raises(ValueError, match="over"):
        observe(done, False)
