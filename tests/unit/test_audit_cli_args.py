"""The audit CLI's small parsers: durations, ranges and --as-of."""

from __future__ import annotations

import click
import pytest

from aqe.cli._audit import _duration, _parse_range
from aqe.cli._projections import _parse_as_of


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("2.5", 2.5)]
)
def test_duration(text: str, seconds: float) -> None:
    assert _duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "-1s", "0m", "soon"])
def test_bad_duration(text: str) -> None:
    with pytest.raises(click.BadParameter):
        _duration(text)


@pytest.mark.parametrize(
    ("text", "parsed"), [("1..500", (1, 500)), ("100..", (100, None)), ("..7", (1, 7))]
)
def test_range(text: str, parsed: tuple[int, int | None]) -> None:
    assert _parse_range(text) == parsed


@pytest.mark.parametrize("text", ["5", "0..3", "9..2", "a..b"])
def test_bad_range(text: str) -> None:
    with pytest.raises(click.BadParameter):
        _parse_range(text)


def test_as_of() -> None:
    assert _parse_as_of("42") == (42, None)
    assert _parse_as_of("2026-12-01T12:00Z") == (None, 1_796_126_400_000_000_000)
    # No zone: UTC. Microseconds are kept.
    assert _parse_as_of("2026-12-01T12:00:00.000250") == (None, 1_796_126_400_000_250_000)
    with pytest.raises(click.BadParameter, match="neither a sequence nor a time"):
        _parse_as_of("yesterday")
