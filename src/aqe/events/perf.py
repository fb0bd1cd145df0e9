"""Events of performance tracking: benchmark results, change points, their check, alerts.

Everything lives on stream ``AQE_PERF`` (``aqe.perf.>``):

* ``aqe.perf.series.<series id>.measured``: :class:`BenchmarkMeasured`, one benchmark's
  samples at one commit on one machine class (the series id names benchmark, metric
  and machine class, so a series is one aggregate and folds in order);
* ``aqe.perf.change.<change id>.*``: :class:`PerfChangeDetected` (a suspected change
  point with its significance) and :class:`PerfChangeVerified` (what re-running the
  benchmark at the commits before and after, interleaved, concluded);
* ``aqe.perf.alert.<change id>.*``: :class:`PerfAlertRaised`, :class:`PerfAlertResolved`
  and :class:`PerfAlertDelivered` (one per sink and alert state: the dedup record that
  makes a sink see an alert once).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec

from aqe.events._base import Event

__all__ = [
    "BenchmarkMeasured",
    "ChangeDirection",
    "MachineFingerprint",
    "PerfAlertDelivered",
    "PerfAlertRaised",
    "PerfAlertResolved",
    "PerfChangeDetected",
    "PerfChangeVerified",
    "PerfVerdict",
]

ChangeDirection = Literal["regression", "improvement"]
PerfVerdict = Literal["confirmed", "dismissed"]


class MachineFingerprint(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What the numbers were measured on; ``machine_class`` groups comparable machines."""

    machine_class: str
    """Derived from the fields below (CPU model, cores, architecture, Python minor)."""
    cpu: str = ""
    cores: int = 0
    arch: str = ""
    system: str = ""
    python: str = ""
    host: str = ""


class BenchmarkMeasured(Event, frozen=True, kw_only=True, tag="perf.series.measured.v1"):
    """Samples of one benchmark's metric at one commit (one point of a series).

    Lower is better for times; ``higher_is_better`` marks throughput-like metrics.
    """

    id_field: ClassVar[str] = "series_id"

    series_id: str
    """``benchmark|metric|machine class``, hashed into a subject-safe id."""
    benchmark: str
    metric: str
    unit: str
    samples: tuple[float, ...]
    machine: MachineFingerprint
    commit: str = ""
    commit_time: str = ""
    run_id: str = ""
    """What produced it (a file's digest, a ``bench run`` id): one run, one point."""
    source_format: str = ""
    """``pytest-benchmark``, ``pyperf``, ``google-benchmark`` or ``aqe-bench``."""
    higher_is_better: bool = False
    command: tuple[str, ...] = ()
    """How to measure it again (argv), if known: the confirm step re-runs it."""
    repo: str = ""
    """Where ``commit`` lives (a path or git URL), if known."""


class _PerfChange(Event, frozen=True, kw_only=True):
    """The fields that say which change of which series, and how big and how sure.

    Shared by :class:`PerfChangeDetected` and :class:`PerfAlertRaised` (an alert repeats
    the change it is about); a subclass's own fields come after these, so both keep
    their field order, wire bytes and schema.
    """

    id_field: ClassVar[str] = "change_id"

    change_id: str
    series_id: str
    benchmark: str
    metric: str
    machine_class: str
    direction: ChangeDirection
    magnitude: float
    """Ratio of medians, after / before (1.2: the metric grew by 20 %)."""
    confidence: float
    """1 - p of the significance test between the segments."""


class PerfChangeDetected(_PerfChange, frozen=True, kw_only=True, tag="perf.change.detected.v1"):
    """A suspected change point in a series, significant between its segments."""

    p_value: float
    commit_before: str
    commit_after: str
    index: int
    """Position of the first point after the change in the series."""
    before_median: float
    after_median: float
    points_before: int
    points_after: int
    method: str = ""


class PerfChangeVerified(Event, frozen=True, kw_only=True, tag="perf.change.verified.v1"):
    """Re-running the benchmark at both commits, interleaved, confirmed or dismissed it."""

    id_field: ClassVar[str] = "change_id"

    change_id: str
    verdict: PerfVerdict
    magnitude: float
    """Ratio of medians of the re-runs, after / before."""
    p_value: float
    samples_before: int
    samples_after: int
    instance_id: str = ""
    """The workflow instance that ran the check."""
    reasons: tuple[str, ...] = ()


class PerfAlertRaised(_PerfChange, frozen=True, kw_only=True, tag="perf.alert.raised.v1"):
    """A confirmed change alerts; ``change_id`` is the dedup key (one alert per change)."""

    commit_before: str
    commit_after: str
    summary: str


class PerfAlertResolved(Event, frozen=True, kw_only=True, tag="perf.alert.resolved.v1"):
    """The series returned to its level before the change."""

    id_field: ClassVar[str] = "change_id"

    change_id: str
    commit: str
    """The first commit of the points that returned."""
    level_ratio: float
    """Median of the recent points / median before the change."""
    reason: str = ""


class PerfAlertDelivered(Event, frozen=True, kw_only=True, tag="perf.alert.delivered.v1"):
    """Sink ``sink`` was handed the alert in ``state``; it is not handed it again."""

    id_field: ClassVar[str] = "change_id"

    change_id: str
    sink: str
    state: Literal["firing", "resolved"]
    status: str = ""
    """What the sink answered (an HTTP status, ``printed``)."""
