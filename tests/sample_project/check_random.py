"""Tests that fail at random, at several rates (seeded through AQE_RERUN_SEED)."""

from sample_state import draw


def test_fails_a_quarter_of_runs():
    assert draw("quarter") >= 0.25, "lost a 1-in-4 draw"


def test_fails_half_of_runs():
    assert draw("half") >= 0.5, "lost a coin flip"


def test_fails_most_runs():
    assert draw("most") >= 0.7, "lost a 7-in-10 draw"
