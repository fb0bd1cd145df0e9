"""The CI loop on a real suite (toolz's own tests): record, subset, rest, quarantine.

toolz ships its tests inside the package; they are copied into a project of their
own with one more test that always fails and is quarantined after the first run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Runner = Callable[..., Any]  # the `aqe` fixture in conftest.py

pytestmark = pytest.mark.nats

RECORDER = """
import os


def pytest_runtest_logreport(report):
    if report.when == "setup" and os.environ.get("RAN_FILE"):
        with open(os.environ["RAN_FILE"], "a", encoding="utf-8") as out:
            out.write(report.nodeid + "\\n")
"""

BROKEN = "def test_known_bad():\n    assert 1 == 2, 'broken'\n"

RUN_TIMEOUT_S = 300
"""One pytest run of the copied suite: ~7 s alone; wide for a loaded machine."""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    toolz = pytest.importorskip("toolz")
    root = tmp_path / "tz"
    shutil.copytree(
        Path(toolz.__file__).parent / "tests",
        root / "tests",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    (root / "tests" / "test_zz_broken.py").write_text(BROKEN, encoding="utf-8")
    (root / "conftest.py").write_text(RECORDER, encoding="utf-8")
    (root / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    return root


def _pytest(
    root: Path, env: dict[str, str], *args: str, ran: Path | None = None
) -> subprocess.CompletedProcess[str]:
    run_env = {**env, "RAN_FILE": str(ran) if ran else ""}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            *args,
        ],
        cwd=root,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line]


# Nine pytest runs of toolz's suite, and aqe commands: ~85 s alone; 120 s ran out under load.
@pytest.mark.timeout(600)
def test_subset_and_rest_run_the_suite_once(
    aqe: Runner, aqe_env: dict[str, str], project: Path, tmp_path: Path
) -> None:
    env = dict(aqe_env)
    first = _pytest(project, env, "--aqe", "--aqe-run-id", "tz-1")
    assert first.returncode == 1, first.stdout  # the broken test fails the session
    held = aqe("quarantine", "tests/test_zz_broken.py::test_known_bad", "--json")
    assert held.code == 0, held.err
    for i in range(2, 6):
        run = _pytest(project, env, "--aqe", "--aqe-run-id", f"tz-{i}")
        assert run.returncode == 0, run.stdout  # quarantined: green, and still recorded
    assert "1 quarantined test(s) failed without failing the session" in run.stdout
    row = aqe("history", "tests.test_zz_broken.test_known_bad", "--json").json()
    assert (row["runs"], row["failures"], row["quarantined"]) == (5, 5, True)

    collect = _pytest(project, env, "--collect-only")
    full = [line for line in collect.stdout.splitlines() if "::" in line]
    assert len(full) > 150

    subset_file, rest_file = tmp_path / "subset.txt", tmp_path / "rest.txt"
    chosen = aqe("subset", "--budget", "30%", "--rest", str(rest_file), "--format", "pytest")
    assert chosen.code == 0, chosen.err
    subset_file.write_text(chosen.out, encoding="utf-8")
    subset, rest = _lines(subset_file), _lines(rest_file)
    assert subset[0] == "tests/test_zz_broken.py::test_known_bad"  # failed every run
    assert 0 < len(subset) < len(full)

    ran_subset, ran_rest = tmp_path / "ran-subset.txt", tmp_path / "ran-rest.txt"
    assert _pytest(project, env, *subset, ran=ran_subset).returncode == 1  # no --aqe
    assert _pytest(project, env, *rest, ran=ran_rest).returncode == 0
    ran = _lines(ran_subset) + _lines(ran_rest)
    assert sorted(ran) == sorted(full)  # every test once, none twice

    ran_plugin = tmp_path / "ran-plugin.txt"
    selected = _pytest(project, env, "--aqe-subset=30%", "--aqe-run-id", "tz-6", ran=ran_plugin)
    assert selected.returncode == 0, selected.stdout
    assert _lines(ran_plugin) == subset  # the same tests, in the same order
    assert f"aqe: subset 30%: {len(subset)} of {len(full)} tests run" in selected.stdout
