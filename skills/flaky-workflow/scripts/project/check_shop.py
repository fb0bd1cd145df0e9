# ruff: noqa: S101 - pytest tests assert
"""A flaky test, an order-dependent victim with its polluter, and a fine test."""

from shared import CART, draw


def test_add_to_cart():
    """The polluter: leaves an item in the shared cart (and passes)."""
    CART.append("book")
    assert CART


def test_total_is_stable():
    assert sum([1, 2, 3]) == 6


def test_empty_cart_costs_nothing():
    """The victim: passes alone, fails after test_add_to_cart."""
    assert CART == [], f"cart not empty: {CART}"


def test_payment_gateway():
    """Flaky: fails on about half of the seeds."""
    assert draw("gateway") >= 0.5, "gateway timed out"
