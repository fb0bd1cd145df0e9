"""Per-test state vectors from a test's history, and cycles from events or IOF/ROL.

A :class:`HistoryTracker` is fed each cycle's results *after* the cycle was ranked
(:meth:`HistoryTracker.observe_cycle`) and answers, for the next cycle, what was known
before it ran (:meth:`HistoryTracker.observation`). A cycle's own verdicts never reach
its features: the tracker has not seen them yet when the observation is built.

Columns (:data:`FEATURE_NAMES`, all float32 in ``[0, 1]``), for one test:

=====================  =============================================================
``verdict_1..10``      the test's last ``K = 10`` verdicts, newest first: 1 failed,
                       0 passed, and 0 where the history is shorter than ``K``
``known``              how many of those are real: ``min(runs, K) / K`` (the "known"
                       mask is exactly the first ``known * K`` columns, so one column
                       carries it)
``fail_rate``          failures / runs over the whole history (0 when never run)
``flip_rate``          verdict changes / (runs - 1) (0 with fewer than 2 runs)
``runs``               ``log1p(runs) / log1p(1000)``, clipped at 1
``since_run``          cycles since the test last ran, ``log1p(gap) / log1p(H)``
                       clipped at 1, ``H = horizon`` (100); 1 when never run
``since_fail``         the same for the last failure; 1 when it never failed
``duration``           its last known duration / the longest last known duration
                       among this cycle's tests (0 when new or all unknown)
``is_new``             1 when the test has never run before this cycle
``fail_streak``        consecutive failures of its latest runs,
                       ``log1p(streak) / log1p(50)`` clipped at 1 (0 when it passed last)
``fails_last_3``       the cycles among the last 3 (``now - 3 .. now - 1``) in which it
                       failed, / 3
``fails_last_5``       the same over the last 5 cycles, / 5
=====================  =============================================================

The last three (feature version 2) came from a study of what the history predicts
(an online logistic-regression ranker over candidate columns, trained on earlier
cycles, ranking the next, both protocols): with them the ranker's normalised score on
IOF/ROL went from 0.458 to 0.464 (``aqe``) and stayed 0.458 (``rows``); co-failure with
the tests that failed last cycle, time since the last failure in cycles, flip rate over
the last 10 runs, the duration's rank in the cycle, the cycle's size and the previous
cycle's failing fraction added nothing (0.459 with co-failure; 0.451 with all of them).

``now`` counts cycles (0, 1, 2, ... in log order) unless the caller passes another
monotonic clock, in which case ``horizon`` must be in the same unit.

Several executions of one test in one cycle (reruns) are folded into one result for
the cycle: verdict 1 when any execution failed (IOF/ROL) or by the final attempt
(events; see :func:`from_events`), and the durations summed (the time the cycle spent
on the test).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import msgspec
import numpy as np
from numpy.typing import NDArray

from aqe.events import Event, TestCaseExecuted, TestRunFinished, TestRunStarted
from aqe.learning.base import CycleObservation

__all__ = [
    "FEATURE_NAMES",
    "HISTORY_K",
    "HORIZON",
    "RECENT_WINDOWS",
    "Cycle",
    "HistoryTracker",
    "as_arrays",
    "cycles_from_iofrol",
    "cycles_from_iofrol_rows",
    "from_events",
]

HISTORY_K = 10
"""How many of a test's most recent verdicts are state columns."""
HORIZON = 100
"""Gaps (in ``now`` units) at and beyond which ``since_*`` saturate at 1."""
_RUNS_SCALE = math.log1p(1000)
_STREAK_SCALE = math.log1p(50)
RECENT_WINDOWS: tuple[int, ...] = (3, 5)
"""The ``fails_last_N`` windows, in ``now`` units (cycles)."""

FEATURE_NAMES: tuple[str, ...] = (
    *(f"verdict_{i}" for i in range(1, HISTORY_K + 1)),
    "known",
    "fail_rate",
    "flip_rate",
    "runs",
    "since_run",
    "since_fail",
    "duration",
    "is_new",
    "fail_streak",
    "fails_last_3",
    "fails_last_5",
)
_COL = {name: i for i, name in enumerate(FEATURE_NAMES)}


class Cycle(msgspec.Struct, frozen=True, kw_only=True):
    """One CI cycle's results: per item (unique ids), its duration (s) and verdict (1 failed).

    An item is a test (reruns folded), except under the ``rows`` protocol
    (:func:`cycles_from_iofrol_rows`), where each execution is an item and
    ``history_ids`` names the test whose history each item shares (empty: the
    ``test_ids`` themselves).
    """

    cycle_id: str
    test_ids: tuple[str, ...]
    durations: tuple[float, ...]
    verdicts: tuple[int, ...]
    history_ids: tuple[str, ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        """Per item, the id its history is kept under."""
        return self.history_ids or self.test_ids

    @property
    def failures(self) -> int:
        """How many tests failed."""
        return sum(1 for v in self.verdicts if v)


class _TestHistory:
    __slots__ = (
        "fail_times",
        "fails",
        "flips",
        "last_duration",
        "last_fail",
        "last_run",
        "recent",
        "runs",
        "streak",
    )

    def __init__(self) -> None:
        self.recent: list[int] = []  # newest first, at most HISTORY_K
        self.streak = 0  # consecutive failures of the latest runs
        self.fail_times: list[int] = []  # the latest failures' ``now``, newest last
        self.runs = 0
        self.fails = 0
        self.flips = 0
        self.last_run = 0
        self.last_fail: int | None = None
        self.last_duration = 0.0


class HistoryTracker:
    """Everything known about each test, from the cycles observed so far.

    Args:
        horizon: the gap (in ``now`` units) at which ``since_run`` / ``since_fail``
            reach 1.
    """

    def __init__(self, *, horizon: int = HORIZON) -> None:
        self._tests: dict[str, _TestHistory] = {}
        self._horizon_scale = math.log1p(max(horizon, 1))
        self._pending_now: dict[str, int] = {}
        self._cycles = 0

    @property
    def cycles_observed(self) -> int:
        """How many cycles :meth:`observe_cycle` has taken."""
        return self._cycles

    def known_tests(self) -> int:
        """How many distinct tests have run at least once."""
        return len(self._tests)

    def observation(self, cycle_id: str, test_ids: Sequence[str], *, now: int) -> CycleObservation:
        """The state of ``test_ids`` before cycle ``cycle_id`` runs.

        Args:
            cycle_id: the cycle to rank.
            test_ids: the tests it offers.
            now: the cycle's index (or another monotonic clock; see the module docstring).

        Returns:
            Features from cycles observed before this one only; ``durations`` holds each
            test's last known duration (0 when new).
        """
        self._pending_now[cycle_id] = now
        n = len(test_ids)
        feats = np.zeros((n, len(FEATURE_NAMES)), dtype=np.float32)
        durations = np.zeros(n, dtype=np.float64)
        for i, test_id in enumerate(test_ids):
            h = self._tests.get(test_id)
            if h is None:
                feats[i, _COL["since_run"]] = 1.0
                feats[i, _COL["since_fail"]] = 1.0
                feats[i, _COL["is_new"]] = 1.0
                continue
            feats[i, : len(h.recent)] = h.recent
            feats[i, _COL["known"]] = min(h.runs, HISTORY_K) / HISTORY_K
            feats[i, _COL["fail_rate"]] = h.fails / h.runs
            feats[i, _COL["flip_rate"]] = h.flips / (h.runs - 1) if h.runs > 1 else 0.0
            feats[i, _COL["runs"]] = min(math.log1p(h.runs) / _RUNS_SCALE, 1.0)
            feats[i, _COL["since_run"]] = self._since(now, h.last_run)
            feats[i, _COL["since_fail"]] = (
                1.0 if h.last_fail is None else self._since(now, h.last_fail)
            )
            feats[i, _COL["fail_streak"]] = min(math.log1p(h.streak) / _STREAK_SCALE, 1.0)
            for window in RECENT_WINDOWS:
                within = sum(1 for t in h.fail_times if now - window <= t < now)
                feats[i, _COL[f"fails_last_{window}"]] = within / window
            durations[i] = h.last_duration
        longest = float(durations.max()) if n else 0.0
        if longest > 0:
            feats[:, _COL["duration"]] = durations / longest
        return CycleObservation(
            cycle=cycle_id,
            test_ids=tuple(test_ids),
            features=feats,
            durations=durations,
            feature_names=FEATURE_NAMES,
        )

    def _since(self, now: int, then: int) -> float:
        return min(math.log1p(max(now - then, 0)) / self._horizon_scale, 1.0)

    def observe_cycle(
        self,
        cycle_id: str,
        test_ids: Sequence[str],
        durations: Sequence[float],
        verdicts: Sequence[int],
        *,
        now: int | None = None,
    ) -> None:
        """Record a cycle's results, after it was ranked.

        Args:
            cycle_id: the cycle.
            test_ids: the tests that ran; a repeated id is folded into one result
                (failed if any repeat failed, durations summed).
            durations: seconds, per entry of ``test_ids``.
            verdicts: 1 failed, 0 passed, per entry of ``test_ids``.
            now: the cycle's clock; default the ``now`` given to :meth:`observation`
                for this cycle, else the number of cycles observed before it.
        """
        if not len(test_ids) == len(durations) == len(verdicts):
            raise ValueError("test_ids, durations and verdicts differ in length")
        if now is None:
            now = self._pending_now.pop(cycle_id, self._cycles)
        else:
            self._pending_now.pop(cycle_id, None)
        folded: dict[str, tuple[float, int]] = {}
        for test_id, duration, verdict in zip(test_ids, durations, verdicts, strict=True):
            d, v = folded.get(test_id, (0.0, 0))
            folded[test_id] = (d + float(duration), 1 if (v or verdict) else 0)
        for test_id, (duration, verdict) in folded.items():
            h = self._tests.get(test_id)
            if h is None:
                h = self._tests[test_id] = _TestHistory()
            elif h.recent and h.recent[0] != verdict:
                h.flips += 1
            h.recent.insert(0, verdict)
            del h.recent[HISTORY_K:]
            h.runs += 1
            h.fails += verdict
            h.last_run = now
            h.streak = h.streak + 1 if verdict else 0
            if verdict:
                h.last_fail = now
                h.fail_times.append(now)
                del h.fail_times[: -max(RECENT_WINDOWS)]
            h.last_duration = duration
        self._cycles += 1


def from_events(events: Iterable[Event]) -> list[Cycle]:
    """One :class:`Cycle` per complete run, in the order runs first appear.

    A run starts with its ``TestRunStarted`` or its first ``TestCaseExecuted``. A run
    that declared its start is complete once its ``TestRunFinished`` (the commit
    marker) is among the events; until then it is left out, as the test history
    (:mod:`aqe.projections.history`) leaves it out, so learning never trains on a run
    cut short. Executions of a run that never declared a start count at once. Per
    test, the verdict is the final (highest) attempt's: 1 for ``failed`` or ``error``,
    0 for ``passed``; ``skipped`` executions are ignored (nothing ran). The duration is
    the sum over all its attempts. Other events are ignored.
    """
    runs: dict[str, dict[str, tuple[int, float, int]]] = {}
    started: set[str] = set()
    finished: set[str] = set()
    for event in events:
        if isinstance(event, TestRunStarted):
            runs.setdefault(event.run_id, {})
            started.add(event.run_id)
        elif isinstance(event, TestRunFinished):
            finished.add(event.run_id)
        elif isinstance(event, TestCaseExecuted):
            tests = runs.setdefault(event.run_id, {})
            if event.outcome == "skipped":
                continue
            verdict = 1 if event.outcome in ("failed", "error") else 0
            attempt, duration, old = tests.get(event.test_id, (0, 0.0, 0))
            if event.attempt >= attempt:
                attempt, old = event.attempt, verdict
            tests[event.test_id] = (attempt, duration + event.duration_s, old)
    return [
        Cycle(
            cycle_id=run_id,
            test_ids=tuple(tests),
            durations=tuple(d for _, d, _ in tests.values()),
            verdicts=tuple(v for _, _, v in tests.values()),
        )
        for run_id, tests in runs.items()
        if tests and (run_id not in started or run_id in finished)
    ]


def cycles_from_iofrol(path: Path | str) -> list[Cycle]:
    """One :class:`Cycle` per IOF/ROL ``Cycle`` value, ascending (as the published anchors).

    Tests keep file order of their first execution in the cycle; a test executed
    several times in the cycle fails if any execution failed and its duration is the
    sum (seconds, ``Duration / 1000``). Ids are :func:`aqe.ingest.iofrol.iofrol_test_id`.

    Raises:
        ReportError: the file cannot be read or parsed.
    """
    from aqe.ingest.iofrol import DURATION_UNITS_PER_S, iofrol_test_id, read_iofrol

    by_cycle: dict[int, dict[str, tuple[float, int]]] = {}
    for row in read_iofrol(path):
        tests = by_cycle.setdefault(row.cycle, {})
        test_id = iofrol_test_id(row.name)
        d, v = tests.get(test_id, (0.0, 0))
        tests[test_id] = (d + row.duration / DURATION_UNITS_PER_S, 1 if (v or row.verdict) else 0)
    return [
        Cycle(
            cycle_id=f"iofrol-{cycle:04d}",
            test_ids=tuple(tests),
            durations=tuple(d for d, _ in tests.values()),
            verdicts=tuple(v for _, v in tests.values()),
        )
        for cycle, tests in sorted(by_cycle.items())
    ]


def cycles_from_iofrol_rows(path: Path | str) -> list[Cycle]:
    """One :class:`Cycle` per IOF/ROL ``Cycle`` value with **one item per CSV row**.

    The protocol of Bagherzadeh, Kahani and Briand (TSE 2021): reruns of a test in a
    cycle count as separate items. Item ids are the test id, then ``#2``, ``#3``... for
    its later rows in the cycle; every row of a test shares that test's history
    (``history_ids``), which holds earlier cycles only (the CSV's own ``LastResults``
    of a rerun row include the same cycle's earlier verdicts; they are not used).

    Raises:
        ReportError: the file cannot be read or parsed.
    """
    from aqe.ingest.iofrol import DURATION_UNITS_PER_S, iofrol_test_id, read_iofrol

    by_cycle: dict[int, list[tuple[str, str, float, int]]] = {}
    for row in read_iofrol(path):
        items = by_cycle.setdefault(row.cycle, [])
        test_id = iofrol_test_id(row.name)
        seen = sum(1 for _, key, _, _ in items if key == test_id)
        item_id = test_id if seen == 0 else f"{test_id}#{seen + 1}"
        items.append(
            (item_id, test_id, row.duration / DURATION_UNITS_PER_S, 1 if row.verdict else 0)
        )
    return [
        Cycle(
            cycle_id=f"iofrol-{cycle:04d}",
            test_ids=tuple(i for i, _, _, _ in items),
            durations=tuple(d for _, _, d, _ in items),
            verdicts=tuple(v for _, _, _, v in items),
            history_ids=tuple(k for _, k, _, _ in items),
        )
        for cycle, items in sorted(by_cycle.items())
    ]


def as_arrays(cycle: Cycle) -> tuple[NDArray[np.float64], NDArray[np.int8]]:
    """A cycle's durations and verdicts as arrays."""
    return np.asarray(cycle.durations, dtype=np.float64), np.asarray(cycle.verdicts, dtype=np.int8)
