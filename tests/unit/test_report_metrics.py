"""The metrics collector's arithmetic, and the Grafana dashboard that charts every metric."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from aqe.metrics import METRIC_NAMES, AqeMetrics
from aqe.projections.runner import Progress

GRAFANA = Path(__file__).parents[2] / "ops" / "grafana" / "aqe-dashboard.json"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def samples(metrics: AqeMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }


def progress(seq: int) -> Progress:
    return Progress(projection="history", stream="AQE_TESTS", seq=seq, applied=0, dead_letters=0)


def test_lag_is_appended_minus_checkpoint_and_age_counts_from_the_last_move() -> None:
    clock = Clock()
    metrics = AqeMetrics(clock=clock)
    report = metrics.progress()
    metrics.checkpoint("history", "AQE_TESTS", 8)  # where the runner starts
    report(progress(10))
    metrics.appended("AQE_TESTS", 25)
    clock.now = 103.0
    report(progress(15))
    clock.now = 110.0
    got = samples(metrics)
    key = (("projection", "history"), ("stream", "AQE_TESTS"))
    assert got[("aqe_events_folded_total", key)] == 7
    assert got[("aqe_projection_checkpoint", key)] == 15
    assert got[("aqe_consumer_lag_events", key)] == 10
    assert got[("aqe_projection_checkpoint_age_seconds", key)] == 7.0
    assert got[("aqe_events_appended_total", (("stream", "AQE_TESTS"),))] == 25
    metrics.appended("AQE_TESTS", 20)  # an older poll never moves a counter back
    assert samples(metrics)[("aqe_events_appended_total", (("stream", "AQE_TESTS"),))] == 25


def test_workflow_counts_replace_and_bridge_reads_a_status_snapshot() -> None:
    metrics = AqeMetrics()
    metrics.workflows({("flaky", "running"): 2, ("flaky", "succeeded"): 1})
    metrics.workflows({("flaky", "succeeded"): 3})
    metrics.bridge(
        {"links": {"b": {"totals": {"lag_events": 4, "lag_ms": 250.0}, "transport": {}}}}
    )
    got = samples(metrics)
    assert got[("aqe_workflow_instances", (("state", "succeeded"), ("workflow", "flaky")))] == 3
    assert ("aqe_workflow_instances", (("state", "running"), ("workflow", "flaky"))) not in got
    assert got[("aqe_bridge_lag_events", (("peer", "b"),))] == 4
    assert got[("aqe_bridge_lag_seconds", (("peer", "b"),))] == 0.25
    assert ("aqe_bridge_rtt_seconds", (("peer", "b"),)) not in got  # no estimate, no sample


def test_grafana_dashboard_charts_every_metric_with_a_datasource_variable() -> None:
    dashboard = json.loads(GRAFANA.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    for name in METRIC_NAMES:
        assert any(re.search(rf"\b{name}(_total)?\b", e) for e in exprs), name
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource"}
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dashboard["panels"])
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
