"""A pytest session killed mid-run: its spool, ingested, shows the run as interrupted.

The plugin spools every event as it goes and writes ``TestRunFinished`` (the run's
commit marker) only at the end of the session. Before, a killed session's spool held
no marker, so ``aqe ingest <spool>`` stored the executions and the run stayed
invisible for good.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Runner = Callable[..., Any]  # the `aqe` fixture in conftest.py

pytestmark = pytest.mark.nats

SUITE = """
import os
import signal


def test_a_passes():
    assert 1 + 1 == 2


def test_b_fails():
    assert 1 == 2


def test_c_kills_the_session():
    os.kill(os.getpid(), signal.SIGKILL)


def test_d_never_runs():
    assert 1 + 1 == 2
"""


def _killed_session(project: Path, env: dict[str, str], spool: Path) -> int:
    (project / "test_suite.py").write_text(SUITE, encoding="utf-8")
    (project / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            "--aqe",
            "--aqe-run-id",
            "killed-1",
            "--aqe-spool",
            str(spool),
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return proc.returncode


def test_a_killed_sessions_spool_lands_as_an_interrupted_run(
    aqe: Runner, aqe_env: dict[str, str], tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    spool = tmp_path / "killed-1.jsonl"
    assert _killed_session(project, aqe_env, spool) == -9
    assert b"tests.run.finished.v1" not in spool.read_bytes()
    # Whatever the session published live before it died is held back: no marker.
    assert aqe("runs", "--json").json() == []

    first = aqe("ingest", str(spool), "--json")
    assert first.code == 0, first.err
    ingested = first.json()
    assert ingested["interrupted"] == ["killed-1"]
    assert ingested["appended"] >= 1  # at least the synthesized marker

    [run] = aqe("runs", "--json").json()
    assert run["run_id"] == "killed-1"
    assert run["interrupted"] is True
    assert run["finished"] is True
    assert (run["total"], run["passed"], run["failed"], run["executions"]) == (2, 1, 1, 2)
    table = aqe("runs")
    assert table.code == 0, table.err
    assert "killed-1 (interrupted)" in table.out
    row = aqe("history", "test_suite.test_a_passes", "--json").json()
    assert row["runs"] == 1

    again = aqe("ingest", str(spool), "--json")
    assert again.code == 0, again.err
    assert again.json()["appended"] == 0  # the same marker id: nothing new
    assert len(aqe("runs", "--json").json()) == 1
