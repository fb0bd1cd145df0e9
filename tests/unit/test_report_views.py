"""The report's views: pure functions from projection states to figures, and the HTML file."""

from __future__ import annotations

import json
import re

from aqe.events import (
    Envelope,
    Event,
    ExperienceRecorded,
    ExperienceStep,
    TestCaseExecuted,
    TestCaseQuarantined,
    TestRunFinished,
    TestRunStarted,
)
from aqe.learning.experience import ExperienceProjection
from aqe.projections.history import HistoryProjection, HistoryState
from aqe.report.fleet_views import cycle_apfd, learning_section
from aqe.report.html import plotly_js, render_html
from aqe.report.model import Figure, Section, Source, Table, verdict_strip
from aqe.report.tests_views import fold_window, history_sections

# Verdicts per test over six runs, oldest first (attempts of a run joined by "/").
PLAN = {
    "t.ok": ["p", "p", "p", "p", "p", "p"],
    "t.flaky": ["p", "f/p", "p", "f", "p", "f/p"],
    "t.broken": ["p", "p", "p", "f", "f", "f"],
    "t.q": ["p", "p", "p", "p", "p", "f"],
}
OUTCOME = {"p": "passed", "f": "failed"}


def envelope(seq: int, event: Event, stream: str = "AQE_TESTS") -> Envelope:
    return Envelope(
        stream=stream,
        seq=seq,
        subject=f"aqe.x.{seq}.y",
        event_id=str(seq),
        event_type=type(event).type_tag(),
        data=event.to_json(),
        recorded_at_ns=seq * 1_000_000_000,
    )


def plan_events() -> list[Event]:
    events: list[Event] = [TestCaseQuarantined(test_id="t.q", reason="known bad")]
    for run in range(6):
        run_id = f"run-{run + 1}"
        events.append(TestRunStarted(run_id=run_id, suite="s"))
        failed = quarantined = flaky = 0
        for test_id, verdicts in PLAN.items():
            attempts = verdicts[run].split("/")
            for attempt, v in enumerate(attempts, start=1):
                events.append(
                    TestCaseExecuted(
                        test_id=test_id,
                        run_id=run_id,
                        outcome=OUTCOME[v],  # type: ignore[arg-type]
                        attempt=attempt,
                        duration_s=0.5 if test_id == "t.broken" else 0.01,
                        quarantined=test_id == "t.q",
                    )
                )
            if attempts[-1] == "f":
                failed += 1
                quarantined += test_id == "t.q"
            elif len(attempts) > 1:
                flaky += 1
        events.append(
            TestRunFinished(
                run_id=run_id,
                total=len(PLAN),
                passed=len(PLAN) - failed,
                failed=failed,
                flaky=flaky,
                quarantined=quarantined,
                duration_s=1.0 + run,
            )
        )
    return events


def fold(events: list[Event]) -> tuple[HistoryState, list[tuple[int, Event]]]:
    projection = HistoryProjection()
    state = projection.initial()
    seqs = []
    for seq, event in enumerate(events, start=1):
        state = projection.apply(state, envelope(seq, event), event)
        seqs.append((seq, event))
    return state, seqs


def window_of(state: HistoryState, seqs: list[tuple[int, Event]], runs: list[str]):  # type: ignore[no-untyped-def]
    executed = [(s, e) for s, e in seqs if isinstance(e, TestCaseExecuted)]
    finished = [(s, e) for s, e in seqs if isinstance(e, TestRunFinished)]
    return fold_window(runs, executed, finished)


def items(sections: list[Section]) -> dict[str, Figure | Table]:
    return {i.key: i for s in sections for i in s.items}


def test_history_sections_show_runs_tests_heatmap_and_quarantine() -> None:
    state, seqs = fold(plan_events())
    last = seqs[-1][0]
    window = window_of(state, seqs, ["run-4", "run-5", "run-6"])
    by_key = items(history_sections(state, last, window))

    runs = by_key["runs-over-time"]
    assert isinstance(runs, Figure)
    totals = [sum(t["y"][i] for t in runs.data) for i in range(6)]
    assert totals == [4, 4, 4, 4, 4, 4]
    failed = next(t for t in runs.data if t["name"] == "failed or error")
    assert failed["y"] == [0, 0, 0, 2, 1, 2]
    assert runs.source.describe().endswith(f"AQE_TESTS seq 1-{last} · folded by history projection")

    flakiest = by_key["flakiest"]
    assert isinstance(flakiest, Table)
    row = next(r for r in flakiest.rows if r[0] == "t.flaky")
    assert row[4] == "prpfpr"  # the verdict strip, oldest first
    broken = by_key["broken"]
    assert isinstance(broken, Table)
    assert [r[0] for r in broken.rows] == ["t.broken"]
    assert broken.rows[0][-1] == "run-4"  # failing since

    slowest = by_key["slowest-tests"]
    assert isinstance(slowest, Figure)
    assert slowest.data[0]["y"][-1] == "t.broken"  # the slowest is drawn at the top

    heat = by_key["failure-heatmap"]
    assert isinstance(heat, Figure)
    trace = heat.data[0]
    assert trace["x"] == ["run-4", "run-5", "run-6"]
    rows = dict(zip(trace["y"], trace["z"], strict=True))
    assert rows["t.flaky"] == [2, 0, 1]  # failed, passed, passed on retry
    assert rows["t.broken"] == [2, 2, 2]
    assert "t.ok" not in rows  # never failed in the window
    assert heat.source.first_seq > 0
    assert heat.source.last_seq <= last

    quarantined = by_key["quarantined"]
    assert isinstance(quarantined, Table)
    assert [(r[0], r[2], r[3]) for r in quarantined.rows] == [("t.q", "known bad", "pppppf")]
    saved = by_key["quarantine-saved"]
    assert isinstance(saved, Figure)
    assert saved.data[0]["x"] == ["run-6"]
    assert saved.data[0]["y"] == [1]
    assert "1 failures absorbed, 0 runs kept green" in saved.title  # run-6 failed others too


def test_a_run_whose_only_failure_is_quarantined_stayed_green() -> None:
    events = [
        TestRunStarted(run_id="r1"),
        TestCaseExecuted(test_id="t.q", run_id="r1", outcome="failed", quarantined=True),
        TestCaseExecuted(test_id="t.ok", run_id="r1", outcome="passed"),
        TestRunFinished(run_id="r1", total=2, passed=1, failed=1, quarantined=1),
    ]
    state, seqs = fold(events)
    window = window_of(state, seqs, ["r1"])
    assert window.kept_green == {"r1": True}
    saved = items(history_sections(state, len(events), window))["quarantine-saved"]
    assert "1 runs kept green" in saved.title


def test_since_leaves_older_runs_out_and_no_window_means_no_heatmap() -> None:
    state, seqs = fold(plan_events())
    by_key = items(history_sections(state, seqs[-1][0], None, since_ns=10**30))
    runs = by_key["runs-over-time"]
    assert isinstance(runs, Figure)
    assert all(t["x"] == [] for t in runs.data)
    assert "failure-heatmap" not in by_key
    assert "quarantine-saved" not in by_key


def test_apfd_per_policy_is_read_from_recorded_rewards() -> None:
    projection = ExperienceProjection()
    state = projection.initial()
    # Cycle c1: the failing test ranked first (APFD 1 - 1/(3*1) + 1/6 = 0.8333).
    # Cycle c2: ranked last (1 - 3/3 + 1/6 = 0.1667). Cycle c3 has no failure: skipped.
    cycles = {
        "c1": [("a", 0.9, 1.0), ("b", 0.5, 0.0), ("c", 0.1, 0.0)],
        "c2": [("a", 0.9, 0.0), ("b", 0.5, 0.0), ("c", 0.1, 1.0)],
        "c3": [("a", 0.9, 0.0), ("b", 0.5, 0.0)],
    }
    for seq, (cycle, steps) in enumerate(cycles.items(), start=1):
        event = ExperienceRecorded(
            policy_id="p1",
            algorithm="ppo",
            cycle=cycle,
            feature_version=1,
            steps=tuple(
                ExperienceStep(test_id=t, state=(0.0,), action=a, reward=r) for t, a, r in steps
            ),
        )
        state = projection.apply(state, envelope(seq, event, "AQE_LEARNING"), event)
    series = cycle_apfd(state)
    assert [c for c, _ in series["p1"]] == ["c1", "c2"]
    assert [round(v, 4) for _, v in series["p1"]] == [0.8333, 0.1667]
    section = learning_section(state, 3)
    assert section is not None
    means = next(i for i in section.items if isinstance(i, Table))
    assert means.rows == [["p1", "ppo", "2", "0.5000"]]


def test_html_is_one_file_that_fetches_nothing_and_escapes_ids() -> None:
    hostile = "t.</script><img src=http://example.com/x>"
    source = Source(events=("e.v1",), stream="S", first_seq=1, last_seq=9)
    figure = Figure(
        key="f1",
        title="chart",
        source=source,
        data=[{"type": "bar", "x": [hostile], "y": [1]}],
        layout={},
    )
    table = Table(
        key="t1",
        title="table",
        source=source,
        columns=["test", "recent"],
        rows=[[hostile, "pfr"]],
        strips=("recent",),
    )
    page = render_html("title", "sub", [Section(key="s", title="S", items=[figure, table])])
    assert page.count("</script>") == page.count("<script")  # nothing closed a block early
    assert page.count(plotly_js()) == 1
    ours = page.replace(plotly_js(), "")  # Plotly.js's own strings hold links it never follows
    # Figure data is JSON text inside <script type="application/json">, never parsed as HTML.
    ours = re.sub(r'<script type="application/json"[^>]*>.*?</script>', "", ours, flags=re.S)
    assert not re.search(r"""<[a-z]+[^<>]*\b(src|href)\s*=\s*["']?https?:""", ours)  # no fetch
    assert "<img" not in ours
    assert 'class="v-f"' in page
    assert "from e.v1 · S seq 1-9" in page
    start = page.index('data-target="f1">') + len('data-target="f1">')
    payload = page[start : page.index("</script>", start)]
    assert json.loads(payload)["data"][0]["x"] == [hostile]
    assert page.count("Plotly.newPlot") == 1  # one drawing loop, Plotly.js embedded once


def test_verdict_strip_is_oldest_first_and_bounded() -> None:
    assert verdict_strip("fpr", 2) == "pf"
    assert verdict_strip("") == ""
