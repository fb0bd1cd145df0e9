"""Change points: steps found with their size and significance; noise, drift, outliers
and bimodality left alone; the confirm test; the generator's labels."""

from __future__ import annotations

import numpy as np
import pytest

from aqe.perf.detect import (
    DetectConfig,
    detect_changes,
    direction_of,
    threshold_alarms,
    verify_samples,
)
from aqe.perf.quality import evaluate, generate


def noisy(levels: list[float], cv: float, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    return [lv * (1 + cv * float(rng.standard_normal())) for lv in levels]


def test_a_twenty_percent_step_is_found_where_it_is() -> None:
    values = noisy([1.0] * 120 + [1.2] * 80, cv=0.02)
    (change,) = detect_changes(values)
    assert abs(change.index - 120) <= 2
    assert change.magnitude == pytest.approx(1.2, rel=0.03)
    assert change.p_value < 1e-6
    assert direction_of(change.magnitude) == "regression"
    assert direction_of(change.magnitude, higher_is_better=True) == "improvement"


def test_noise_drift_outliers_and_two_modes_raise_nothing() -> None:
    rng = np.random.default_rng(3)
    levels = [1.0 + 0.03 * i / 400 for i in range(400)]  # 3 % drift over the series
    values = noisy(levels, cv=0.03, seed=4)
    for i in rng.choice(400, 8, replace=False):
        values[int(i)] *= 2.5  # single-point outliers
    for i in range(400):
        if rng.random() < 0.33:
            values[i] *= 1.10  # a second mode
    assert detect_changes(values) == []
    assert len(threshold_alarms(values)) > 10  # what a fixed threshold makes of it


def test_a_step_below_the_minimum_effect_is_not_a_change() -> None:
    values = noisy([1.0] * 100 + [1.03] * 100, cv=0.002)
    assert detect_changes(values, DetectConfig(min_effect=0.05)) == []
    assert len(detect_changes(values, DetectConfig(min_effect=0.01))) == 1


def test_too_short_series_have_no_changes() -> None:
    assert detect_changes([1.0, 2.0, 1.0]) == []


def test_verify_confirms_a_real_difference_and_dismisses_noise() -> None:
    rng = np.random.default_rng(5)
    before = list(1.0 + 0.02 * rng.standard_normal(10))
    slower = list(1.3 + 0.02 * rng.standard_normal(10))
    same = list(1.0 + 0.02 * rng.standard_normal(10))
    assert verify_samples(before, slower, expected=1.3).confirmed
    assert not verify_samples(before, same, expected=1.3).confirmed
    wrong_way = verify_samples(slower, before, expected=1.3)
    assert not wrong_way.confirmed
    assert "other way" in wrong_way.reason


def test_generator_labels_and_evaluation_rows() -> None:
    series = generate(20, 300, seed=2)
    assert all(len(s.values) == 300 for s in series)
    assert all(
        all(b - a >= 40 for a, b in zip(s.changes, s.changes[1:], strict=False)) for s in series
    )
    rows = {r.method: r for r in evaluate(series, delay_series=3)}
    cp, thr = rows["change points"], rows["fixed threshold 10%"]
    assert cp.true_changes == thr.true_changes == sum(len(s.changes) for s in series)
    assert cp.precision > thr.precision
    assert cp.false_per_1000 < thr.false_per_1000
    confirmed = rows["change points + confirm"]
    assert confirmed.removed_false_alarms is not None
    assert confirmed.false_alarms == cp.false_alarms - confirmed.removed_false_alarms
