"""``aqe sandbox run|backends`` as a user types them (no nats-server needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

AQE = [sys.executable, "-m", "aqe.cli"]


def aqe(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AQE_TEST_SECRET": "hunter2", "COLUMNS": "200"}
    return subprocess.run(
        [*AQE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_run_passes_output_and_exit_status(tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("copied\n")
    done = aqe(
        "sandbox", "run", "--wall", "30s", "--memory", "512M", "--env", "GIVEN=1", "--",
        "sh", "-c", 'cat data.txt; echo "${AQE_TEST_SECRET:-scrubbed} $GIVEN"; exit 5',
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 5, done.stderr
    assert done.stdout == "copied\nscrubbed 1\n"
    assert "aqe sandbox (process): exit 5" in done.stderr


def test_run_reports_a_stop_as_json(tmp_path: Path) -> None:
    done = aqe("sandbox", "run", "--wall", "1s", "--json", "--", "sleep", "60", cwd=tmp_path)
    result = json.loads(done.stdout)
    assert result["stopped"] == "wall-time"
    assert result["exit_code"] is None
    assert done.returncode == 128 + result["signal"]


def test_bad_values_and_unavailable_backends_are_one_line_errors(tmp_path: Path) -> None:
    bad = aqe("sandbox", "run", "--wall", "soon", "--", "true", cwd=tmp_path)
    assert bad.returncode == 2
    assert "'soon' is not a duration" in bad.stderr
    listed = json.loads(aqe("sandbox", "backends", "--json", cwd=tmp_path).stdout)
    assert [row["backend"] for row in listed] == ["process", "namespace", "container"]
    assert listed[0]["available"] is True
    for row in listed:
        if not row["available"]:
            refused = aqe("sandbox", "run", "--backend", row["backend"], "--", "true", cwd=tmp_path)
            assert refused.returncode == 2
            assert refused.stderr.startswith(f"aqe: error: sandbox backend '{row['backend']}'")
