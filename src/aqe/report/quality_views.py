"""Coverage and performance views: where coverage is thin, benchmark series with change points.

Pure functions from the ``coverage`` projection's state (:mod:`aqe.coverage.projection`)
and the ``perf`` projection's (:mod:`aqe.perf.series`) to report sections. The
report and the dashboard show them only when those projections exist.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aqe.report.model import Figure, Section, Source, Table
from aqe.report.tests_views import layout

if TYPE_CHECKING:
    from aqe.coverage.projection import CoverageState
    from aqe.perf.series import PerfState, Series

__all__ = ["coverage_section", "perf_section"]

_VERDICT_COLOURS = {"confirmed": "#c62828", "suspected": "#f9a825", "dismissed": "#9e9e9e"}


def coverage_section(
    state: CoverageState, checkpoints: dict[str, int], top: int = 20
) -> Section | None:
    """Coverage per run and the files where it is thinnest; None without coverage."""
    from aqe.coverage.queries import file_summaries

    runs = sorted((r for r in state.runs.values() if r.status == "applied"), key=lambda r: r.seq)
    if not runs and not state.files:
        return None
    source = Source(
        events=("coverage.run.recorded.v1", "tests.run.finished.v1"),
        stream="AQE_COVERAGE",
        first_seq=1 if checkpoints.get("AQE_COVERAGE") else 0,
        last_seq=checkpoints.get("AQE_COVERAGE", 0),
        via="coverage projection",
    )

    def pct(part: int, whole: int) -> float | None:
        return round(100.0 * part / whole, 2) if whole else None

    per_run = Figure(
        key="coverage-per-run",
        title=f"Coverage per run ({len(runs)} runs)",
        source=source,
        data=[
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": name,
                "x": list(range(1, len(runs) + 1)),
                "y": values,
                "customdata": [r.run_id for r in runs],
                "hovertemplate": "%{customdata}<br>%{y:.1f}%<extra></extra>",
            }
            for name, values in (
                ("lines", [pct(r.covered, r.statements) for r in runs]),
                ("branches", [pct(r.taken, r.branches) for r in runs]),
            )
        ],
        layout=layout(
            xaxis={"title": {"text": "run (log order)"}},
            yaxis={"title": {"text": "% covered"}, "range": [0, 100]},
        ),
    )
    files = [f for f in file_summaries(state) if f.statements]
    thin = sorted(files, key=lambda f: (f.covered / f.statements, -f.statements, f.path))[:top][
        ::-1
    ]
    thinnest = Figure(
        key="coverage-thin",
        title=f"Where coverage is thin: the {len(thin)} least covered of {len(files)} files",
        source=source,
        data=[
            {
                "type": "bar",
                "orientation": "h",
                "name": "lines covered",
                "y": [f.path for f in thin],
                "x": [round(f.line_pct or 0.0, 2) for f in thin],
                "customdata": [f"{f.covered}/{f.statements} lines, {f.tests} tests" for f in thin],
                "hovertemplate": "%{y}<br>%{x:.1f}% (%{customdata})<extra></extra>",
                "marker": {"color": "#ef6c00"},
            }
        ],
        layout=layout(
            height=max(300, 22 * len(thin) + 120),
            xaxis={"title": {"text": "% of lines covered"}, "range": [0, 100]},
            yaxis={"automargin": True, "tickfont": {"size": 10}},
        ),
    )
    return Section(key="coverage", title="Coverage", items=[per_run, thinnest])


def perf_section(state: PerfState, checkpoint: int, most: int = 8) -> Section | None:
    """Each benchmark series with its change points, and the changes; None without series."""
    if not state.series:
        return None
    source = Source(
        events=("perf.series.measured.v1", "perf.change.detected.v1", "perf.change.verified.v1"),
        stream="AQE_PERF",
        first_seq=1 if checkpoint else 0,
        last_seq=checkpoint,
        via="perf projection",
    )
    changes_by_series: dict[str, list[Any]] = {}
    for change in state.changes.values():
        changes_by_series.setdefault(change.detected.series_id, []).append(change)
    chosen = sorted(
        state.series.values(),
        key=lambda s: (-len(changes_by_series.get(s.series_id, [])), -len(s.points), s.series_id),
    )[:most]
    items: list[Figure | Table] = [
        _series_figure(s, changes_by_series.get(s.series_id, []), source) for s in chosen
    ]
    changes = sorted(state.changes.values(), key=lambda c: -c.detected_seq)
    items.append(
        Table(
            key="perf-changes",
            title=f"Change points ({len(changes)})",
            source=source,
            columns=[
                "benchmark",
                "metric",
                "direction",
                "magnitude",
                "commits",
                "verdict",
                "alert",
            ],
            rows=[
                [
                    c.detected.benchmark,
                    c.detected.metric,
                    c.detected.direction,
                    f"{c.detected.magnitude:+.1%}",
                    f"{c.detected.commit_before[:10]} → {c.detected.commit_after[:10]}",
                    c.verdict,
                    c.alert,
                ]
                for c in changes
            ],
            note="" if changes else "no change point detected",
        )
    )
    return Section(
        key="perf",
        title=f"Performance: {len(state.series)} series (the {len(chosen)} with most changes)",
        items=items,
    )


def _series_figure(series: Series, changes: list[Any], source: Source) -> Figure:
    shapes = []
    for change in changes:
        index = change.detected.index
        shapes.append(
            {
                "type": "line",
                "x0": index + 0.5,
                "x1": index + 0.5,
                "yref": "paper",
                "y0": 0,
                "y1": 1,
                "line": {"color": _VERDICT_COLOURS.get(change.verdict, "#757575"), "dash": "dash"},
            }
        )
    return Figure(
        key=f"perf-{series.series_id}",
        title=f"{series.benchmark} · {series.metric} ({series.unit}) on {series.machine_class}",
        source=source,
        data=[
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": "median",
                "x": list(range(1, len(series.points) + 1)),
                "y": [p.median for p in series.points],
                "customdata": [p.commit[:12] for p in series.points],
                "hovertemplate": "commit %{customdata}<br>%{y}<extra></extra>",
            }
        ],
        layout=layout(
            shapes=shapes,
            xaxis={"title": {"text": "run (log order)"}},
            yaxis={"title": {"text": series.unit}},
        ),
        note="dashed lines: change points (red confirmed, yellow suspected, grey dismissed)"
        if changes
        else "",
    )
