"""Change points in a benchmark series, each checked for significance and size.

A series is one value per point (the median of the point's samples), in commit order.
:func:`detect_changes` does what teams that run this at scale learned to do instead of
a fixed threshold (MongoDB's CI, Daly et al., ICPE 2020; Apache Otava):

1. **Segment the whole series.** The log of the values, with isolated outliers taken
   out by a running median of three, scaled by a robust noise estimate (the MAD of
   successive differences), is cut by penalised change-point search (ruptures'
   ``KernelCPD``, linear kernel: the exact PELT search over the L2 cost, in C).
2. **Test each cut.** The raw values of up to ``window`` points on each side of a cut
   (within the neighbouring segments) are compared with a two-sided Mann-Whitney U
   test; a cut is kept when ``p < alpha`` *and* the ratio of the medians moves by at
   least ``min_effect`` (5 % by default): a real, large-enough step.

:func:`threshold_alarms` is the rule it replaces (a point more than ``threshold`` away
from the median of the points before it), kept to be measured against.

Only numpy, scipy and ruptures, imported here; nothing reads the log.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import msgspec

from aqe.events.perf import ChangeDirection

__all__ = [
    "Change",
    "DetectConfig",
    "Verification",
    "detect_changes",
    "direction_of",
    "threshold_alarms",
    "verify_samples",
]


class DetectConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How eager detection is.

    Attributes:
        min_effect: smallest relative move of the medians that counts (0.05 = 5 %).
        alpha: significance level of the test between segments.
        penalty: change-point penalty per cut, times log(n), in units of the noise.
        min_size: fewest points in a segment (a change is seen this many points late).
        window: most points per side the significance test compares.
    """

    min_effect: float = 0.05
    alpha: float = 0.001
    penalty: float = 3.0
    min_size: int = 5
    window: int = 30


class Change(msgspec.Struct, frozen=True, kw_only=True):
    """One significant change: the first point after it, and how it moved."""

    index: int
    before_median: float
    after_median: float
    magnitude: float
    """after / before."""
    p_value: float
    points_before: int
    points_after: int

    @property
    def confidence(self) -> float:
        """1 - p."""
        return 1.0 - self.p_value


def direction_of(magnitude: float, *, higher_is_better: bool = False) -> ChangeDirection:
    """Whether a move of ``magnitude`` (after / before) is a regression or an improvement."""
    worse = magnitude < 1.0 if higher_is_better else magnitude > 1.0
    return "regression" if worse else "improvement"


def _signal(values: Sequence[float]) -> object:
    import numpy as np

    x = np.asarray(values, dtype=float)
    if x.size and np.all(x > 0):
        x = np.log(x)
    # The noise is estimated before filtering: differences of neighbours cancel steps
    # and drift, and their MAD ignores outliers.
    diffs = np.diff(x)
    deviations = np.abs(diffs - np.median(diffs))
    sigma = 1.4826 * float(np.median(deviations)) / math.sqrt(2)
    # Quantised timings (a coarse clock, repeating patterns) can make the MAD zero or
    # tiny; the mean absolute deviation then stands in.
    mean_sigma = 1.2533 * float(np.mean(deviations)) / math.sqrt(2) if deviations.size else 0.0
    if sigma < 0.5 * mean_sigma:
        sigma = mean_sigma
    if x.size >= 3:
        # A running median of three removes single-point outliers but keeps steps.
        stacked = np.vstack([np.r_[x[0], x[:-1]], x, np.r_[x[1:], x[-1]]])
        x = np.median(stacked, axis=0)
    scale = max(sigma, 1e-3 * max(float(np.median(np.abs(x))), 1e-12), 1e-12)
    return ((x - np.median(x)) / scale).reshape(-1, 1)


def detect_changes(values: Sequence[float], config: DetectConfig | None = None) -> list[Change]:
    """The significant change points of a series (see the module docstring)."""
    import numpy as np
    import ruptures as rpt
    from scipy.stats import mannwhitneyu  # type: ignore[import-untyped]

    cfg = config or DetectConfig()
    n = len(values)
    if n < 2 * cfg.min_size:
        return []
    raw = np.asarray(values, dtype=float)
    signal = _signal(values)
    cuts = rpt.KernelCPD(kernel="linear", min_size=cfg.min_size).fit(signal)
    bkps = [int(b) for b in cuts.predict(pen=cfg.penalty * math.log(n))]
    bounds = [0, *bkps]
    found: list[Change] = []
    for k in range(1, len(bounds) - 1):
        cut = bounds[k]
        before = raw[max(bounds[k - 1], cut - cfg.window) : cut]
        after = raw[cut : min(bounds[k + 1], cut + cfg.window)]
        b_med, a_med = float(np.median(before)), float(np.median(after))
        if b_med == 0:
            continue
        magnitude = a_med / b_med
        if abs(magnitude - 1.0) < cfg.min_effect:
            continue
        p = float(mannwhitneyu(before, after, alternative="two-sided").pvalue)
        if p >= cfg.alpha:
            continue
        found.append(
            Change(
                index=cut,
                before_median=b_med,
                after_median=a_med,
                magnitude=magnitude,
                p_value=p,
                points_before=len(before),
                points_after=len(after),
            )
        )
    return found


def threshold_alarms(
    values: Sequence[float], *, threshold: float = 0.10, baseline: int = 10
) -> list[int]:
    """Where a fixed-threshold rule alarms: a point ``threshold`` away from the median of
    the ``baseline`` points before it (an alarm each time the rule turns on)."""
    import numpy as np

    x = np.asarray(values, dtype=float)
    alarms: list[int] = []
    on = False
    for i in range(baseline, len(x)):
        base = float(np.median(x[i - baseline : i]))
        hit = base != 0 and abs(x[i] / base - 1.0) > threshold
        if hit and not on:
            alarms.append(i)
        on = hit
    return alarms


class Verification(msgspec.Struct, frozen=True, kw_only=True):
    """What re-running both commits concluded."""

    confirmed: bool
    magnitude: float
    p_value: float
    reason: str


def verify_samples(
    before: Sequence[float],
    after: Sequence[float],
    *,
    expected: float,
    min_effect: float = 0.05,
    alpha: float = 0.01,
) -> Verification:
    """Confirm a suspected change from fresh samples at the commits before and after it.

    Confirmed when the re-runs differ significantly (two-sided Mann-Whitney U,
    ``p < alpha``), by at least ``min_effect``, in the direction of ``expected`` (the
    suspected after / before ratio).
    """
    import numpy as np
    from scipy.stats import mannwhitneyu

    if len(before) < 2 or len(after) < 2:
        return Verification(
            confirmed=False, magnitude=1.0, p_value=1.0, reason="too few samples to compare"
        )
    b_med, a_med = float(np.median(before)), float(np.median(after))
    magnitude = a_med / b_med if b_med else 1.0
    p = float(mannwhitneyu(before, after, alternative="two-sided").pvalue)
    same_way = (magnitude > 1.0) == (expected > 1.0)
    if p >= alpha:
        reason = f"re-runs do not differ (p={p:.3g} >= {alpha:g})"
    elif abs(magnitude - 1.0) < min_effect:
        reason = f"re-runs differ by {abs(magnitude - 1) * 100:.1f} % < {min_effect * 100:g} %"
    elif not same_way:
        reason = f"re-runs moved the other way (x{magnitude:.3f}, suspected x{expected:.3f})"
    else:
        return Verification(
            confirmed=True,
            magnitude=magnitude,
            p_value=p,
            reason=f"re-runs differ: x{magnitude:.3f}, p={p:.3g}",
        )
    return Verification(confirmed=False, magnitude=magnitude, p_value=p, reason=reason)
