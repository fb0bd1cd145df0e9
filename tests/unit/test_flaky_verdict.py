"""The sequential verdict rule: Wald's bounds, its stated error rates, Wilson intervals."""

from __future__ import annotations

import math

import pytest

from aqe.workflows._verdict import SequentialRule, Tally, wilson_interval


def _tally(outcomes: str) -> Tally:
    tally = Tally()
    for i, c in enumerate(outcomes):
        tally = tally.add(c == "p", seed=i)
    return tally


def test_stable_runs_follow_walds_lower_bound() -> None:
    rule = SequentialRule(p_min=0.25, alpha=0.05, beta=0.05)
    expected = math.ceil(math.log(0.05) / math.log(0.75))
    assert rule.stable_runs() == expected == 11
    assert rule.judge(_tally("p" * (expected - 1))) == "running"
    assert rule.judge(_tally("p" * expected)) == "passes"
    assert rule.judge(_tally("f" * expected)) == "fails"


def test_one_failure_and_one_pass_prove_a_mix_without_noise() -> None:
    rule = SequentialRule()
    assert rule.judge(_tally("pf")) == "mixed"
    assert rule.judge(_tally("fffffp")) == "mixed"
    assert rule.confidence("mixed") == 1.0


def test_the_miss_probability_is_within_beta_at_p_min() -> None:
    """A test failing at exactly p_min is called 'passes' with probability <= beta."""
    for p_min, beta in [(0.25, 0.05), (0.1, 0.05), (0.5, 0.01), (0.2, 0.1)]:
        rule = SequentialRule(p_min=p_min, beta=beta)
        miss = (1 - p_min) ** rule.stable_runs()
        assert miss <= beta
        assert rule.confidence("passes") == pytest.approx(1 - beta)


def test_noise_needs_more_failures_before_a_mix() -> None:
    rule = SequentialRule(p_min=0.3, noise=0.02)
    assert rule.judge(_tally("pppf")) == "running"
    assert rule.judge(_tally("pfpf")) == "mixed"
    assert rule.confidence("mixed") == pytest.approx(0.95)


def test_truncation_leaves_a_context_undecided() -> None:
    rule = SequentialRule(p_min=0.3, noise=0.2, max_runs=6)
    tally = _tally("ppfppp")
    assert rule.judge(tally) == "undecided"
    assert rule.confidence("undecided") == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"p_min": 0.0}, "p_min"),
        ({"p_min": 1.0}, "p_min"),
        ({"noise": 0.3}, "noise"),
        ({"alpha": 0.0}, "alpha"),
        ({"max_runs": 0}, "max_runs"),
    ],
)
def test_bad_parameters_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SequentialRule(**kwargs)  # type: ignore[arg-type]


def test_wilson_interval_known_values() -> None:
    half = wilson_interval(5, 10)
    assert (half.low, half.high) == (
        pytest.approx(0.2366, abs=1e-4),
        pytest.approx(0.7634, abs=1e-4),
    )
    none = wilson_interval(0, 11)
    assert none.low == 0.0
    assert none.high == pytest.approx(0.2588, abs=1e-4)
    assert wilson_interval(0, 0).high == 1.0
    with pytest.raises(ValueError, match="bad counts"):
        wilson_interval(3, 2)


def test_tally_keeps_failing_seeds() -> None:
    tally = _tally("pfpf")
    assert (tally.passes, tally.failures, tally.failing_seeds) == (2, 2, (1, 3))
    assert tally.interval().rate == 0.5
