"""The perf projection: every benchmark series, its changes, their checks and alerts.

A pure fold of ``AQE_PERF``:

* :class:`~aqe.events.perf.BenchmarkMeasured` adds a point to its series (one series
  per benchmark, metric and machine class, points in log order); a point whose
  ``run_id`` the series holds already is not added twice;
* :class:`~aqe.events.perf.PerfChangeDetected` / ``PerfChangeVerified`` /
  ``PerfAlertRaised`` / ``PerfAlertResolved`` / ``PerfAlertDelivered`` keep each change's
  story: suspected, confirmed or dismissed, alert firing or resolved, sinks told.

Detection itself (:mod:`aqe.perf.detect`) reads this state; it is not part of the fold.
"""

from __future__ import annotations

import statistics

import msgspec

from aqe.events import Envelope, Event
from aqe.events.perf import (
    BenchmarkMeasured,
    PerfAlertDelivered,
    PerfAlertRaised,
    PerfAlertResolved,
    PerfChangeDetected,
    PerfChangeVerified,
)

__all__ = ["ChangeEntry", "PerfProjection", "PerfState", "Point", "Series"]

PERF_STREAM = "AQE_PERF"
MAX_SAMPLES = 200
"""Samples kept per point (the median is computed from all of them first)."""

_ENCODER = msgspec.json.Encoder(order="sorted")


class Point(msgspec.Struct, kw_only=True):
    """One run of a benchmark: where, when in the log, and its samples."""

    commit: str
    seq: int
    median: float
    n: int
    run_id: str = ""
    recorded_at_ns: int = 0
    samples: tuple[float, ...] = ()


class Series(msgspec.Struct, kw_only=True):
    """A benchmark's metric on one machine class, point by point."""

    series_id: str
    benchmark: str
    metric: str
    unit: str
    machine_class: str
    higher_is_better: bool = False
    command: tuple[str, ...] = ()
    repo: str = ""
    points: list[Point] = msgspec.field(default_factory=list)
    runs: list[str] = msgspec.field(default_factory=list)
    """Run ids folded (a run is one point)."""


class ChangeEntry(msgspec.Struct, kw_only=True):
    """A suspected change and what became of it."""

    detected: PerfChangeDetected
    detected_seq: int
    detected_at_ns: int = 0
    verdict: str = "suspected"
    """``suspected``, ``confirmed`` or ``dismissed``."""
    verified: PerfChangeVerified | None = None
    alert: str = ""
    """``""`` (none), ``firing`` or ``resolved``."""
    resolved: PerfAlertResolved | None = None
    delivered: list[str] = msgspec.field(default_factory=list)
    """``<sink>:<state>`` pairs handed over."""


class PerfState(msgspec.Struct, kw_only=True):
    """Every series and change by id."""

    series: dict[str, Series] = msgspec.field(default_factory=dict)
    changes: dict[str, ChangeEntry] = msgspec.field(default_factory=dict)


class PerfProjection:
    """Folds ``AQE_PERF`` into a :class:`PerfState`."""

    name = "perf"
    version = 1
    streams: tuple[str, ...] = (PERF_STREAM,)

    def initial(self) -> PerfState:
        """No series, no changes."""
        return PerfState()

    def apply(self, state: PerfState, envelope: Envelope, event: Event) -> PerfState:
        """Fold one perf event (others are ignored)."""
        if isinstance(event, BenchmarkMeasured):
            _measured(state, envelope, event)
        elif isinstance(event, PerfChangeDetected):
            if event.change_id not in state.changes:
                state.changes[event.change_id] = ChangeEntry(
                    detected=event,
                    detected_seq=envelope.seq,
                    detected_at_ns=envelope.recorded_at_ns,
                )
        elif isinstance(event, PerfChangeVerified):
            entry = state.changes.get(event.change_id)
            if entry is not None and entry.verified is None:
                entry.verified = event
                entry.verdict = event.verdict
        elif isinstance(event, PerfAlertRaised):
            entry = state.changes.get(event.change_id)
            if entry is not None and not entry.alert:
                entry.alert = "firing"
        elif isinstance(event, PerfAlertResolved):
            entry = state.changes.get(event.change_id)
            if entry is not None and entry.alert == "firing":
                entry.alert = "resolved"
                entry.resolved = event
        elif isinstance(event, PerfAlertDelivered):
            entry = state.changes.get(event.change_id)
            key = f"{event.sink}:{event.state}"
            if entry is not None and key not in entry.delivered:
                entry.delivered.append(key)
        return state

    def encode(self, state: PerfState) -> bytes:
        """Canonical JSON."""
        return _ENCODER.encode(state)

    def decode(self, data: bytes) -> PerfState:
        """Invert :meth:`encode`."""
        return msgspec.json.decode(data, type=PerfState)


def _measured(state: PerfState, envelope: Envelope, event: BenchmarkMeasured) -> None:
    if not event.samples:
        raise ValueError(f"benchmark {event.benchmark!r}: a point needs at least one sample")
    series = state.series.get(event.series_id)
    if series is None:
        series = state.series[event.series_id] = Series(
            series_id=event.series_id,
            benchmark=event.benchmark,
            metric=event.metric,
            unit=event.unit,
            machine_class=event.machine.machine_class,
            higher_is_better=event.higher_is_better,
        )
    run = event.run_id or f"seq-{envelope.seq}"
    if run in series.runs:
        return
    series.runs.append(run)
    if event.command:
        series.command = event.command
    if event.repo:
        series.repo = event.repo
    series.points.append(
        Point(
            commit=event.commit,
            seq=envelope.seq,
            median=float(statistics.median(event.samples)),
            n=len(event.samples),
            run_id=run,
            recorded_at_ns=envelope.recorded_at_ns,
            samples=event.samples[:MAX_SAMPLES],
        )
    )
