"""The report's coverage and performance views, from those projections' own folds."""

from __future__ import annotations

from aqe.coverage.measured import MeasuredFile, coverage_events
from aqe.coverage.projection import fold_events
from aqe.events import Event, TestRunFinished, TestRunStarted
from aqe.events.perf import BenchmarkMeasured, MachineFingerprint
from aqe.perf.pipeline import new_changes
from aqe.perf.series import PerfProjection
from aqe.report.model import Figure, Table
from aqe.report.quality_views import coverage_section, perf_section
from support.envelopes import envelope


def measured(run: int) -> list[MeasuredFile]:
    return [
        MeasuredFile(
            path="src/pkg/core.py", statements=set(range(1, 101)), executed=set(range(1, 91))
        ),
        MeasuredFile(
            path="src/pkg/thin.py", statements=set(range(1, 21)), executed=set(range(1, 3 + run))
        ),
    ]


def test_coverage_section_shows_runs_and_the_thinnest_files_first() -> None:
    events: list[Event] = []
    for run in range(3):
        run_id = f"r{run}"
        events.append(TestRunStarted(run_id=run_id))
        events.extend(coverage_events(measured(run), run_id=run_id))
        events.append(TestRunFinished(run_id=run_id, total=1, passed=1, failed=0))
    state = fold_events(events)
    section = coverage_section(state, {"AQE_COVERAGE": 3, "AQE_TESTS": 6})
    assert section is not None
    per_run, thin = section.items
    assert isinstance(per_run, Figure)
    assert isinstance(thin, Figure)
    lines = per_run.data[0]
    assert lines["y"] == [round(100 * (90 + 2 + r) / 120, 2) for r in range(3)]
    assert thin.data[0]["y"] == ["src/pkg/core.py", "src/pkg/thin.py"]  # thinnest drawn on top
    assert thin.data[0]["x"] == [90.0, 20.0]  # the newest run: 4 of 20 lines
    assert "AQE_COVERAGE seq 1-3" in thin.source.describe()


def test_perf_section_marks_the_detected_change_on_its_series() -> None:
    machine = MachineFingerprint(machine_class="x86_64-test-2c", cores=2)
    projection = PerfProjection()
    state = projection.initial()
    levels = [1.0] * 12 + [2.0] * 12
    events: list[Event] = [
        BenchmarkMeasured(
            series_id="s1",
            benchmark="bench_x",
            metric="time",
            unit="s",
            samples=(level * (1 + 0.01 * (i % 3)),) * 3,
            machine=machine,
            commit=f"c{i:03d}",
            run_id=f"r{i}",
        )
        for i, level in enumerate(levels)
    ]
    for seq, event in enumerate(events, start=1):
        state = projection.apply(state, envelope(event, seq), event)
    detected = new_changes(state)
    assert detected, "the detector finds the doubling"
    for seq, event in enumerate(detected, start=len(events) + 1):
        state = projection.apply(state, envelope(event, seq), event)
    section = perf_section(state, len(events) + len(detected))
    assert section is not None
    figure, table = section.items
    assert isinstance(figure, Figure)
    assert isinstance(table, Table)
    assert len(figure.data[0]["y"]) == 24
    shape = figure.layout["shapes"][0]
    assert shape["x0"] == detected[0].index + 0.5 == 12.5  # between the 12th and 13th point
    assert table.rows[0][:4] == [
        "bench_x",
        "time",
        detected[0].direction,
        f"{detected[0].magnitude:+.1%}",
    ]
