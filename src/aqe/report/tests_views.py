"""Test-history views: runs over time, flakiest and broken tests, durations, heatmap, quarantine.

Pure functions from the history projection's state (and, for the heatmap and the
quarantine savings, from a :class:`RunWindow` folded out of the newest runs' events) to
:class:`~aqe.report.model.Section` objects. No I/O, no clock: the same state gives the
same figures, which is what lets the report and the dashboard share them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import msgspec

from aqe.events import TestCaseExecuted, TestRunFinished
from aqe.projections.history import (
    DEFAULT_POLICY,
    HistoryPolicy,
    HistoryState,
    RunHistory,
    iter_test_rows,
)
from aqe.report.model import Figure, Section, Source, Table, verdict_strip

__all__ = [
    "EXECUTED",
    "FINISHED",
    "RunWindow",
    "fold_window",
    "history_sections",
    "layout",
    "window_runs",
]

EXECUTED = "tests.case.executed.v1"
FINISHED = "tests.run.finished.v1"
STARTED = "tests.run.started.v1"
QUARANTINED = "tests.case.quarantined.v1"
STREAM = "AQE_TESTS"

_COLOURS = {"passed": "#2e7d32", "failed": "#c62828", "flaky": "#f9a825", "skipped": "#9e9e9e"}
_HEAT = {"p": 0, "r": 1, "s": None, "f": 2, "e": 3}
_HEAT_NAMES = {"p": "passed", "r": "passed on retry", "f": "failed", "e": "error", "s": "skipped"}


class RunWindow(msgspec.Struct, kw_only=True):
    """The newest runs' verdicts per test, and what quarantine absorbed in every run.

    Folded by :func:`fold_window` from ``tests.case.executed.v1`` events of the newest
    runs and ``tests.run.finished.v1`` events of all runs.
    """

    runs: list[str] = msgspec.field(default_factory=list)
    """The heatmap's columns, oldest first."""
    verdicts: dict[str, dict[str, str]] = msgspec.field(default_factory=dict)
    """Test id -> run id -> verdict character (as in the history's ``recent``)."""
    first_seq: int = 0
    last_seq: int = 0
    quarantined: dict[str, int] = msgspec.field(default_factory=dict)
    """Run id -> failing results of quarantined tests (``TestRunFinished.quarantined``)."""
    kept_green: dict[str, bool] = msgspec.field(default_factory=dict)
    """Run id -> every failure in it was a quarantined test's (the run stayed green)."""
    finished_first_seq: int = 0
    finished_last_seq: int = 0


def window_runs(state: HistoryState, count: int, since_ns: int | None = None) -> list[RunHistory]:
    """The newest ``count`` finished (or undeclared) runs, oldest first, in log order."""
    runs = [r for r in state.runs.values() if r.finished or not r.started]
    if since_ns is not None:
        runs = [r for r in runs if _started(r) >= since_ns]
    runs.sort(key=lambda r: r.first_seq)
    return runs[-count:] if count else []


def fold_window(
    runs: list[str],
    executed: Iterable[tuple[int, TestCaseExecuted]],
    finished: Iterable[tuple[int, TestRunFinished]],
) -> RunWindow:
    """Fold the events of the window's runs into a :class:`RunWindow`.

    A test's verdict in a run is its last attempt's outcome, ``r`` when it passed after
    a failed or erroring attempt (the history projection's rule).

    Args:
        runs: The window's run ids, oldest first.
        executed: ``(stream sequence, event)`` of executions, in log order.
        finished: ``(stream sequence, event)`` of run markers, in log order.
    """
    wanted = set(runs)
    window = RunWindow(runs=list(runs))
    for seq, event in executed:
        if event.run_id not in wanted:
            continue
        window.first_seq = window.first_seq or seq
        window.last_seq = seq
        per_run = window.verdicts.setdefault(event.test_id, {})
        before = per_run.get(event.run_id)
        verdict = _HEAT_CHAR[event.outcome]
        if verdict == "p" and before in {"f", "e", "r"}:
            verdict = "r"
        per_run[event.run_id] = verdict
    for seq, marker in finished:
        window.finished_first_seq = window.finished_first_seq or seq
        window.finished_last_seq = seq
        if marker.quarantined:
            window.quarantined[marker.run_id] = marker.quarantined
            window.kept_green[marker.run_id] = marker.failed + marker.errors <= marker.quarantined
    return window


_HEAT_CHAR = {"passed": "p", "failed": "f", "error": "e", "skipped": "s"}


def _started(run: RunHistory) -> int:
    return run.started_ns


def _when(run: RunHistory) -> str:
    if not run.started_ns:
        return ""
    return dt.datetime.fromtimestamp(run.started_ns / 1e9, tz=dt.UTC).strftime("%Y-%m-%d %H:%M")


def history_sections(
    state: HistoryState,
    checkpoint: int,
    window: RunWindow | None = None,
    *,
    since_ns: int | None = None,
    policy: HistoryPolicy | None = None,
    top: int = 20,
) -> list[Section]:
    """The test-history sections of the report and the dashboard.

    Args:
        state: The history projection's state.
        checkpoint: The ``AQE_TESTS`` sequence the state was folded up to.
        window: The newest runs' verdicts (the heatmap) and quarantine counts; the
            heatmap and the savings are left out without it.
        since_ns: Only runs started at or after this time (epoch ns) in the run charts.
        policy: Classification thresholds (the history's defaults).
        top: Rows per table, bars per chart.
    """
    policy = policy or DEFAULT_POLICY
    hist = Source(
        events=(EXECUTED, STARTED, FINISHED, QUARANTINED),
        stream=STREAM,
        first_seq=1 if checkpoint else 0,
        last_seq=checkpoint,
        via="history projection",
    )
    runs = window_runs(state, len(state.runs), since_ns)
    rows = list(iter_test_rows(state, policy))
    sections = [
        Section(key="runs", title="Runs over time", items=[_runs_figure(runs, hist)]),
        Section(
            key="tests",
            title="Flakiest and most broken tests",
            items=_status_tables(rows, hist, top),
        ),
        Section(
            key="durations",
            title="Durations",
            items=[_duration_figure(runs, hist), _slowest_figure(rows, hist, top)],
        ),
    ]
    if window is not None and window.runs:
        sections.append(
            Section(
                key="heatmap", title="Failures: tests x runs", items=[_heatmap(window, top * 2)]
            )
        )
    sections.append(
        Section(key="quarantine", title="Quarantine", items=_quarantine(rows, window, hist))
    )
    return sections


def _runs_figure(runs: list[RunHistory], source: Source) -> Figure:
    labels = [f"{r.run_id} {_when(r)}".rstrip() for r in runs]
    x = list(range(1, len(runs) + 1))
    flaky = [r.flaky for r in runs]
    failed = [r.failed + r.errors for r in runs]
    passed = [max(0, r.passed - r.flaky) for r in runs]
    traces = [
        _bar("passed", x, passed, labels, _COLOURS["passed"]),
        _bar("flaky (passed on retry)", x, flaky, labels, _COLOURS["flaky"]),
        _bar("failed or error", x, failed, labels, _COLOURS["failed"]),
    ]
    return Figure(
        key="runs-over-time",
        title=f"Runs over time ({len(runs):,} runs)",
        source=source,
        data=traces,
        layout=layout(
            barmode="stack",
            bargap=0.05,
            xaxis={"title": {"text": "run (log order; hover for its id and start time)"}},
            yaxis={"title": {"text": "tests"}},
        ),
    )


def _bar(name: str, x: list[Any], y: list[int], labels: list[str], colour: str) -> dict[str, Any]:
    return {
        "type": "bar",
        "name": name,
        "x": x,
        "y": y,
        "customdata": labels,
        "hovertemplate": "%{customdata}<br>" + name + ": %{y}<extra></extra>",
        "marker": {"color": colour},
    }


def _status_tables(rows: list[dict[str, Any]], source: Source, top: int) -> list[Figure | Table]:
    flaky = sorted(
        (r for r in rows if r["status"] == "flaky"),
        key=lambda r: (-(r["flip_rate"] or 0.0), -r["failures"], r["test_id"]),
    )[:top]
    broken = sorted(
        (r for r in rows if r["status"] == "broken"),
        key=lambda r: (-r["failures"] - r["errors"], r["test_id"]),
    )[:top]
    counts = {s: sum(1 for r in rows if r["status"] == s) for s in ("flaky", "broken")}
    tables: list[Figure | Table] = []
    for title, key, chosen, extra in (
        (f"Flakiest tests ({counts['flaky']:,} flaky)", "flakiest", flaky, "why"),
        (f"Most broken tests ({counts['broken']:,} broken)", "broken", broken, "failing since"),
    ):
        tables.append(
            Table(
                key=key,
                title=title,
                source=source,
                columns=["test", "runs", "pass", "flip", "recent (old → new)", extra],
                rows=[
                    [
                        r["test_id"] + (" (quarantined)" if r["quarantined"] else ""),
                        f"{r['runs']:,}",
                        _pct(r["pass_rate"]),
                        _pct(r["flip_rate"]),
                        verdict_strip(r["recent"]),
                        r["reason"] if extra == "why" else (r["failing_since"] or ""),
                    ]
                    for r in chosen
                ],
                strips=("recent (old → new)",),
                note="none" if not chosen else "",
            )
        )
    return tables


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.0%}"


def _duration_figure(runs: list[RunHistory], source: Source) -> Figure:
    labels = [r.run_id for r in runs]
    return Figure(
        key="run-durations",
        title="Run duration",
        source=source,
        data=[
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": "run duration",
                "x": list(range(1, len(runs) + 1)),
                "y": [round(r.duration_s, 3) for r in runs],
                "customdata": labels,
                "hovertemplate": "%{customdata}<br>%{y:.2f} s<extra></extra>",
            }
        ],
        layout=layout(
            xaxis={"title": {"text": "run (log order)"}}, yaxis={"title": {"text": "seconds"}}
        ),
    )


def _slowest_figure(rows: list[dict[str, Any]], source: Source, top: int) -> Figure:
    slow = sorted(rows, key=lambda r: (-r["duration_p95_s"], r["test_id"]))[:top][::-1]
    return Figure(
        key="slowest-tests",
        title=f"Slowest tests (p95 of the last runs, top {len(slow)})",
        source=source,
        data=[
            {
                "type": "bar",
                "orientation": "h",
                "name": "p95",
                "y": [r["test_id"] for r in slow],
                "x": [round(r["duration_p95_s"], 4) for r in slow],
                "marker": {"color": "#1565c0"},
            },
            {
                "type": "bar",
                "orientation": "h",
                "name": "p50",
                "y": [r["test_id"] for r in slow],
                "x": [round(r["duration_p50_s"], 4) for r in slow],
                "marker": {"color": "#90caf9"},
            },
        ],
        layout=layout(
            barmode="overlay",
            height=max(300, 22 * len(slow) + 120),
            xaxis={"title": {"text": "seconds"}},
            yaxis={"automargin": True, "tickfont": {"size": 10}},
        ),
    )


def _heatmap(window: RunWindow, top: int) -> Figure:
    scored = sorted(
        window.verdicts.items(),
        key=lambda kv: (-sum(v in "fe" for v in kv[1].values()), kv[0]),
    )
    chosen = [(t, v) for t, v in scored if any(x in "fer" for x in v.values())][:top][::-1]
    z: list[list[int | None]] = []
    text: list[list[str]] = []
    for _test, per_run in chosen:
        z.append([_HEAT.get(per_run.get(run, "s")) for run in window.runs])
        text.append([_HEAT_NAMES.get(per_run.get(run, ""), "not run") for run in window.runs])
    source = Source(
        events=(EXECUTED,),
        stream=STREAM,
        first_seq=window.first_seq,
        last_seq=window.last_seq,
        via=f"the newest {len(window.runs)} runs read from the log",
    )
    return Figure(
        key="failure-heatmap",
        title=f"Tests that failed in the newest {len(window.runs)} runs ({len(chosen)} tests)",
        source=source,
        data=[
            {
                "type": "heatmap",
                "z": z,
                "x": list(window.runs),
                "y": [t for t, _ in chosen],
                "text": text,
                "zmin": 0,
                "zmax": 3,
                "colorscale": [
                    [0.0, "#c8e6c9"],
                    [0.33, "#fff59d"],
                    [0.66, "#ef9a9a"],
                    [1.0, "#ce93d8"],
                ],
                "showscale": False,
                "xgap": 1,
                "ygap": 1,
                "hovertemplate": "%{y}<br>%{x}: %{text}<extra></extra>",
            }
        ],
        layout=layout(
            height=max(300, 18 * len(chosen) + 160),
            xaxis={"showticklabels": len(window.runs) <= 40, "tickangle": -45},
            yaxis={"automargin": True, "tickfont": {"size": 10}},
        ),
        note="green passed, yellow passed on retry, red failed, purple error, "
        "blank not run or skipped"
        if chosen
        else "no test failed in these runs",
    )


def _quarantine(
    rows: list[dict[str, Any]], window: RunWindow | None, source: Source
) -> list[Figure | Table]:
    held = [r for r in rows if r["quarantined"]]
    notes = [] if held else ["no test is in quarantine"]
    if window is not None and not window.quarantined:
        notes.append("no quarantined test has failed in a run")
    items: list[Figure | Table] = [
        Table(
            key="quarantined",
            title=f"In quarantine now ({len(held)} tests)",
            source=source,
            columns=["test", "status", "reason", "recent (old → new)"],
            rows=[
                [
                    r["test_id"],
                    r["status"],
                    r["quarantine_reason"] or "",
                    verdict_strip(r["recent"]),
                ]
                for r in held
            ],
            strips=("recent (old → new)",),
            note="; ".join(notes),
        )
    ]
    if window is not None and window.quarantined:
        runs = sorted(window.quarantined)
        green = sum(1 for r in runs if window.kept_green.get(r))
        absorbed = sum(window.quarantined.values())
        items.append(
            Figure(
                key="quarantine-saved",
                title=f"What quarantine saved: {absorbed:,} failures absorbed, "
                f"{green:,} runs kept green",
                source=Source(
                    events=(FINISHED,),
                    stream=STREAM,
                    first_seq=window.finished_first_seq,
                    last_seq=window.finished_last_seq,
                    via="every run's marker read from the log",
                ),
                data=[
                    {
                        "type": "bar",
                        "name": "quarantined failures",
                        "x": runs,
                        "y": [window.quarantined[r] for r in runs],
                        "marker": {
                            "color": [
                                "#2e7d32" if window.kept_green.get(r) else "#f9a825" for r in runs
                            ]
                        },
                    }
                ],
                layout=layout(
                    xaxis={"title": {"text": "run"}, "type": "category"},
                    yaxis={"title": {"text": "failing results of quarantined tests"}},
                ),
                note="green: the run's only failures were quarantined tests, so it stayed green",
            )
        )
    return items


def layout(**extra: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "margin": {"l": 60, "r": 20, "t": 30, "b": 50},
        "height": 340,
        "legend": {"orientation": "h", "y": 1.12},
        "plot_bgcolor": "#ffffff",
        "paper_bgcolor": "#ffffff",
        "font": {"family": "system-ui, sans-serif", "size": 12},
    }
    layout.update(extra)
    return layout
