"""Detection quality on labelled series: a generator of realistic ones, and the scoring.

:func:`generate` draws series the way benchmark histories look: a level per benchmark
(1 µs to 1 s), relative noise of 0.5-5 %, a slow drift that is *not* a change, some
series bimodal (a point lands in a second mode 10 % slower a third of the time), rare
outliers (1 % of points 1.5-3x slower), and labelled steps of 5 %, 10 %, 25 %, 50 % and
100 %, up or down, at least 40 points apart. Each series can draw fresh samples at any
point (:meth:`LabelledSeries.draw`), which is what the confirm step's re-runs see.

:func:`evaluate` scores :func:`aqe.perf.detect.detect_changes` and the fixed-threshold
rule on the same series: precision, recall, false alarms per 1,000 points, the delay
(points after a change until detection on the growing series first reports it), and
how many of detection's false alarms the confirm step (interleaved re-runs of the two
commits, :func:`aqe.perf.detect.verify_samples`) removes and how many true changes it
loses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import msgspec

from aqe.perf.detect import DetectConfig, detect_changes, threshold_alarms, verify_samples

if TYPE_CHECKING:
    import numpy as np

__all__ = ["LabelledSeries", "QualityRow", "evaluate", "generate"]

STEP_SIZES = (0.05, 0.10, 0.25, 0.50, 1.00)


class LabelledSeries(msgspec.Struct, kw_only=True):
    """One generated series with its true changes."""

    values: list[float]
    levels: list[float]
    """The true mean at each point (drift and steps, no noise)."""
    changes: list[int]
    """Index of the first point after each true change."""
    sizes: list[float]
    cv: float
    bimodal: bool
    outlier_rate: float
    seed: int

    def draw(self, index: int, k: int, rng: np.random.Generator) -> list[float]:
        """``k`` fresh samples at point ``index`` (a re-run of that commit)."""
        return [_sample(self.levels[index], self, rng) for _ in range(k)]


def _sample(level: float, s: LabelledSeries, rng: np.random.Generator) -> float:
    value = level * (1.0 + s.cv * float(rng.standard_normal()))
    if s.bimodal and rng.random() < 0.33:
        value *= 1.10
    if rng.random() < s.outlier_rate:
        value *= float(rng.uniform(1.5, 3.0))
    return max(value, level * 0.05)


def generate(
    n_series: int, length: int, *, seed: int = 0, max_changes: int = 4
) -> list[LabelledSeries]:
    """``n_series`` labelled series of ``length`` points (see the module docstring)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out: list[LabelledSeries] = []
    for k in range(n_series):
        base = float(10 ** rng.uniform(-6, 0))
        cv = float(rng.choice([0.005, 0.01, 0.02, 0.05]))
        drift = float(rng.uniform(-0.03, 0.03))
        count = int(rng.integers(0, max_changes + 1))
        changes: list[int] = []
        for _ in range(count * 10):
            if len(changes) == count:
                break
            at = int(rng.integers(40, length - 20))
            if all(abs(at - c) >= 40 for c in changes):
                changes.append(at)
        changes.sort()
        sizes = [float(rng.choice(STEP_SIZES)) * float(rng.choice([-1, 1])) for _ in changes]
        levels = []
        level = base
        steps = dict(zip(changes, sizes, strict=True))
        for i in range(length):
            if i in steps:
                size = steps[i]
                level = level * (1 + size) if size > 0 else level / (1 - size)
            levels.append(level * (1 + drift * i / length))
        series = LabelledSeries(
            values=[],
            levels=levels,
            changes=changes,
            sizes=sizes,
            cv=cv,
            bimodal=bool(rng.random() < 0.2),
            outlier_rate=float(rng.choice([0.0, 0.01, 0.03])),
            seed=seed * 1_000_003 + k,
        )
        series.values = [_sample(lv, series, rng) for lv in levels]
        out.append(series)
    return out


class QualityRow(msgspec.Struct, kw_only=True):
    """One method's scores over a set of series."""

    method: str
    true_changes: int
    alarms: int
    hits: int
    false_alarms: int
    points: int
    delay_mean: float | None = None
    delay_median: float | None = None
    removed_false_alarms: int | None = None
    """Detection's false alarms the confirm step dismissed (None: no confirm step)."""
    lost_hits: int | None = None
    """True changes detection found that the confirm step dismissed."""

    @property
    def precision(self) -> float:
        """Alarms that match a true change."""
        return self.hits / self.alarms if self.alarms else 1.0

    @property
    def recall(self) -> float:
        """True changes found."""
        return self.hits / self.true_changes if self.true_changes else 1.0

    @property
    def false_per_1000(self) -> float:
        """False alarms per 1,000 points."""
        return 1000.0 * self.false_alarms / self.points if self.points else 0.0


def _match(found: Sequence[int], truth: Sequence[int], tolerance: int) -> tuple[set[int], set[int]]:
    """One-to-one matches: (indexes into ``found`` that hit, indexes into ``truth`` hit)."""
    hit_found: set[int] = set()
    hit_truth: set[int] = set()
    for j, t in enumerate(truth):
        best = None
        for i, f in enumerate(found):
            if i in hit_found or abs(f - t) > tolerance:
                continue
            if best is None or abs(f - t) < abs(found[best] - t):
                best = i
        if best is not None:
            hit_found.add(best)
            hit_truth.add(j)
    return hit_found, hit_truth


def _delay(
    series: LabelledSeries,
    change: int,
    find: Callable[[list[float]], list[int]],
    tolerance: int,
    horizon: int,
) -> int | None:
    """Points after ``change`` until detection on the series so far first reports it."""
    end_limit = min(len(series.values), change + horizon)
    for end in range(change + 1, end_limit + 1):
        if any(abs(f - change) <= tolerance for f in find(series.values[:end])):
            return end - change
    return None


def evaluate(
    series: Sequence[LabelledSeries],
    *,
    config: DetectConfig | None = None,
    threshold: float = 0.10,
    tolerance: int = 5,
    confirm_samples: int = 10,
    delay_series: int = 50,
    horizon: int = 40,
    seed: int = 1,
) -> list[QualityRow]:
    """Score change-point detection (with and without the confirm step) and the
    fixed-threshold rule on ``series`` (see the module docstring)."""
    import numpy as np

    cfg = config or DetectConfig()
    rng = np.random.default_rng(seed)
    rows = {
        "change points": QualityRow(
            method="change points", true_changes=0, alarms=0, hits=0, false_alarms=0, points=0
        ),
        "change points + confirm": QualityRow(
            method="change points + confirm",
            true_changes=0,
            alarms=0,
            hits=0,
            false_alarms=0,
            points=0,
        ),
        f"fixed threshold {threshold:.0%}": QualityRow(
            method=f"fixed threshold {threshold:.0%}",
            true_changes=0,
            alarms=0,
            hits=0,
            false_alarms=0,
            points=0,
        ),
    }
    delays: dict[str, list[int]] = {k: [] for k in rows}
    cp_row, confirm_row, thr_row = rows.values()
    removed_false = lost_true = 0

    def cps(values: list[float]) -> list[int]:
        return [c.index for c in detect_changes(values, cfg)]

    def thr(values: list[float]) -> list[int]:
        return threshold_alarms(values, threshold=threshold)

    for n, s in enumerate(series):
        changes = detect_changes(s.values, cfg)
        found = [c.index for c in changes]
        alarms = thr(s.values)
        for row, idx in ((cp_row, found), (thr_row, alarms)):
            hit_found, _ = _match(idx, s.changes, tolerance)
            row.true_changes += len(s.changes)
            row.points += len(s.values)
            row.alarms += len(idx)
            row.hits += len(hit_found)
            row.false_alarms += len(idx) - len(hit_found)
        # The confirm step: re-run the commits before and after each suspected change.
        hit_found, _ = _match(found, s.changes, tolerance)
        kept = []
        for i, change in enumerate(changes):
            a_idx, b_idx = change.index - 1, change.index
            before, after = [], []
            for _ in range(confirm_samples):  # interleaved A B A B ...
                before += s.draw(a_idx, 1, rng)
                after += s.draw(b_idx, 1, rng)
            v = verify_samples(before, after, expected=change.magnitude, min_effect=cfg.min_effect)
            if v.confirmed:
                kept.append(change.index)
            elif i in hit_found:
                lost_true += 1
            else:
                removed_false += 1
        hit_kept, _ = _match(kept, s.changes, tolerance)
        confirm_row.true_changes += len(s.changes)
        confirm_row.points += len(s.values)
        confirm_row.alarms += len(kept)
        confirm_row.hits += len(hit_kept)
        confirm_row.false_alarms += len(kept) - len(hit_kept)
        if n < delay_series:
            for c in s.changes:
                for key, find in (("change points", cps), (thr_row.method, thr)):
                    d = _delay(s, c, find, tolerance, horizon)
                    if d is not None:
                        delays[key].append(d)
    for key, row in rows.items():
        ds = delays["change points" if key == "change points + confirm" else key]
        if ds:
            row.delay_mean = float(np.mean(ds))
            row.delay_median = float(np.median(ds))
    confirm_row.removed_false_alarms = removed_false
    confirm_row.lost_hits = lost_true
    return list(rows.values())
