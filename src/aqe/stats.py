"""Small pure statistics shared by the projections and the workflows.

No I/O and no third-party imports beyond msgspec, so the pure folds may use it.
"""

from __future__ import annotations

import math

import msgspec

__all__ = ["RateInterval", "wilson_interval"]


class RateInterval(msgspec.Struct, frozen=True, kw_only=True):
    """A failure rate with its Wilson score interval."""

    failures: int
    runs: int
    rate: float
    low: float
    high: float


def wilson_interval(failures: int, runs: int, z: float = 1.96) -> RateInterval:
    """The Wilson score interval of ``failures`` in ``runs`` (well behaved at 0 and n).

    Raises:
        ValueError: negative counts or more failures than runs.
    """
    if runs < 0 or not 0 <= failures <= runs:
        raise ValueError(f"bad counts: {failures} failures in {runs} runs")
    if runs == 0:
        return RateInterval(failures=0, runs=0, rate=0.0, low=0.0, high=1.0)
    rate = failures / runs
    z2 = z * z
    centre = (rate + z2 / (2 * runs)) / (1 + z2 / runs)
    half = z * math.sqrt(rate * (1 - rate) / runs + z2 / (4 * runs * runs)) / (1 + z2 / runs)
    return RateInterval(
        failures=failures,
        runs=runs,
        rate=rate,
        # At 0 (or n) failures the bound is 0 (or 1) exactly, not a rounding error off it.
        low=0.0 if failures == 0 else max(0.0, centre - half),
        high=1.0 if failures == runs else min(1.0, centre + half),
    )
