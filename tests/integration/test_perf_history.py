"""A real benchmark history: ``import aqe.cli`` at this repository's last commits, each in
a sandbox checkout; detection and the threshold rule on it; every alarm re-run A B A B."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_perf.py"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_history_of_this_repository_is_measured_and_every_alarm_checked() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--history", "12", "--repeat", "3", "--rounds", "2"],
        capture_output=True,
        text=True,
        timeout=580,
        check=True,
    )
    report = json.loads(proc.stdout)
    assert report["commits"] + len(report["broken_commits"]) == 12
    assert len(report["medians_ms"]) == report["commits"]
    assert all(v > 0 for v in report["medians_ms"])
    alarms = set(report["change_points"]) | set(report["threshold_alarms"])
    assert {int(k) for k in report["checks"]} == alarms
    for check in report["checks"].values():
        assert check["reason"]
        assert 0.0 <= check["p_value"] <= 1.0
