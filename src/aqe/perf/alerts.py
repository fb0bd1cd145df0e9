"""Which alerts are due: pure decisions over the perf state.

* A **confirmed** change without an alert gets one (:class:`PerfAlertRaised`, appended
  with the id ``alert-<change id>``: the change id is the dedup key, so one change
  alerts once however often this runs).
* A **firing** alert resolves (:class:`PerfAlertResolved`) once the series has returned:
  the median of its last ``settle`` points, all after the change, is back within half
  of the change's move from the level before it.
"""

from __future__ import annotations

import math
import statistics

from aqe.events.perf import PerfAlertRaised, PerfAlertResolved
from aqe.log.port import NewEvent
from aqe.perf.series import ChangeEntry, PerfState

__all__ = ["alert_events", "alert_summary"]


def alert_summary(entry: ChangeEntry) -> str:
    """One line a person reads: what got how much slower or faster, between which commits."""
    d = entry.detected
    pct = abs(d.magnitude - 1.0) * 100
    word = "slower" if d.magnitude > 1.0 else "faster"
    if d.metric not in ("time", "real_time"):
        word = "higher" if d.magnitude > 1.0 else "lower"
    return (
        f"{d.direction}: {d.benchmark} ({d.metric}) {pct:.1f} % {word} "
        f"between {d.commit_before[:12]} and {d.commit_after[:12]} on {d.machine_class}"
    )


def _returned(state: PerfState, entry: ChangeEntry, settle: int) -> PerfAlertResolved | None:
    d = entry.detected
    series = state.series.get(d.series_id)
    if series is None or d.before_median <= 0 or d.magnitude <= 0:
        return None
    after = (
        series.points[d.index + d.points_after :]
        if d.index + d.points_after <= len(series.points)
        else []
    )
    if len(after) < settle:
        return None
    recent = after[-settle:]
    level = statistics.median(p.median for p in recent) / d.before_median
    if level <= 0 or abs(math.log(level)) >= abs(math.log(d.magnitude)) / 2:
        return None
    return PerfAlertResolved(
        change_id=d.change_id,
        commit=recent[0].commit,
        level_ratio=round(level, 6),
        reason=f"the last {settle} points are at x{level:.3f} of the level before the change",
    )


def alert_events(state: PerfState, *, settle: int = 5) -> list[NewEvent]:
    """The alert events due now (empty when everything is raised and resolved already)."""
    out: list[NewEvent] = []
    for change_id, entry in sorted(state.changes.items()):
        d = entry.detected
        if entry.verdict == "confirmed" and not entry.alert:
            v = entry.verified
            raised = PerfAlertRaised(
                change_id=change_id,
                series_id=d.series_id,
                benchmark=d.benchmark,
                metric=d.metric,
                machine_class=d.machine_class,
                direction=d.direction,
                magnitude=v.magnitude if v is not None else d.magnitude,
                confidence=d.confidence,
                commit_before=d.commit_before,
                commit_after=d.commit_after,
                summary=alert_summary(entry),
            )
            out.append(NewEvent(event=raised, event_id=f"alert-{change_id}"))
        elif entry.alert == "firing":
            resolved = _returned(state, entry, settle)
            if resolved is not None:
                out.append(NewEvent(event=resolved, event_id=f"resolved-{change_id}"))
    return out
