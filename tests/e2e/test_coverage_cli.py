"""``aqe coverage collect|show|gaps|ingest`` and ``aqe subset --changed-since`` end to end:
a small project in a git repository, pytest under coverage.py, a real nats-server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

CORE = """\
def sign(x):
    if x > 0:
        return 1
    if x < 0:
        return -1
    return 0


def double(x):
    return 2 * x


def unused(x):
    return x - 1
"""

TESTS = """\
from pkg.core import double, sign


def test_positive():
    assert sign(5) == 1


def test_negative():
    assert sign(-5) == -1


def test_double():
    assert double(3) == 6
"""


AQE = [sys.executable, "-m", "aqe.cli"]


class Result:
    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.code = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def json(self) -> Any:
        return json.loads(self.out)


def git(project: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=project,
        check=True,
        capture_output=True,
    )


def make_project(root: Path) -> Path:
    project = root / "proj"
    (project / "pkg").mkdir(parents=True)
    (project / "tests").mkdir()
    (project / "pkg" / "__init__.py").write_text("")
    (project / "pkg" / "core.py").write_text(CORE)
    (project / "tests" / "__init__.py").write_text("")
    (project / "tests" / "test_core.py").write_text(TESTS)
    git(project, "init", "-q", "-b", "main")
    git(project, "add", ".")
    git(project, "commit", "-q", "-m", "start")
    return project


def aqe_in(project: Path, env: dict[str, str], *args: str) -> Result:
    proc = subprocess.run(
        [*AQE, *args], cwd=project, env=env, capture_output=True, text=True, timeout=180
    )
    return Result(proc)


def test_collect_show_gaps_and_impact_of_a_change(tmp_path: Path, aqe_env: dict[str, str]) -> None:
    project = make_project(tmp_path)
    # Only aqe's plugin in the measured pytest: the others cost seconds of start-up.
    env = {**aqe_env, "PYTHONPATH": str(project), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    pytest_args = ["-q", "-p", "aqe.pytest_plugin", "-p", "no:cacheprovider", "tests"]
    done = aqe_in(
        project, env, "coverage", "collect", "--source", "pkg", "--json", "--", *pytest_args
    )
    assert done.code == 0, done.out + done.err
    collected = json.loads(done.out.strip().splitlines()[-1])
    assert collected["files"] == 2
    assert collected["exit_code"] == 0

    shown_run = aqe_in(project, env, "coverage", "--json")
    assert shown_run.code == 0, shown_run.err
    shown = shown_run.json()
    by_path = {f["path"]: f for f in shown["files"]}
    core = by_path["pkg/core.py"]
    # 10 statements; sign(0) (line 6) and unused()'s body (line 14) never run.
    assert (core["statements"], core["covered"]) == (10, 8)
    assert (core["branches"], core["taken"]) == (4, 3)
    assert core["tests"] == 3
    detail = aqe_in(project, env, "coverage", "pkg/core.py", "--json").json()
    assert detail["lines"]["3"] == ["tests.test_core.test_positive"]
    assert detail["lines"]["5"] == ["tests.test_core.test_negative"]
    assert detail["lines"]["10"] == ["tests.test_core.test_double"]
    assert detail["missing"] == [6, 14]
    covered = aqe_in(project, env, "coverage", "test", "tests/test_core.py::test_neg", "--json")
    assert covered.code == 2, covered.out
    covered = aqe_in(
        project, env, "coverage", "test", "tests/test_core.py::test_negative", "--json"
    ).json()
    assert covered["test_id"] == "tests.test_core.test_negative"
    assert covered["files"] == {"pkg/core.py": [2, 4, 5]}
    runs = aqe_in(project, env, "coverage", "runs", "--json").json()
    (run,) = runs["runs"]
    assert run["run_id"] == collected["run_id"]
    assert (run["status"], run["tests"], run["per_test"]) == ("applied", 3, True)
    assert round(run["line_pct"], 1) == 80.0  # 8 of 10 statements
    assert runs["pending"] == {}
    table = aqe_in(project, env, "coverage", "pkg/core.py")
    assert table.code == 0
    assert "missing: 6, 14" in table.out
    gaps = aqe_in(project, env, "coverage", "gaps", "--json").json()
    assert [g["path"] for g in gaps] == ["pkg/core.py"]
    assert gaps[0]["missing_lines"] == [[6, 6], [14, 14]]
    assert gaps[0]["missing_branches"] == 1

    # Change the negative branch only: one test is impacted, the others are left out.
    (project / "pkg" / "core.py").write_text(CORE.replace("return -1", "return -2"))
    rest = tmp_path / "rest.txt"
    chosen = aqe_in(
        project, env, "subset", "--changed-since", "HEAD", "--format", "pytest", "--rest", str(rest)
    )
    assert chosen.code == 0, chosen.err
    assert chosen.out.split() == ["tests/test_core.py::test_negative"], chosen.err
    assert sorted(rest.read_text().split()) == [
        "tests/test_core.py::test_double",
        "tests/test_core.py::test_positive",
    ]
    assert "1 covers" in chosen.err
    # --budget still applies, to the impacted tests only.
    budgeted = aqe_in(
        project, env, "subset", "--changed-since", "HEAD", "--budget", "1h", "--format", "ids"
    )
    assert budgeted.code == 0, budgeted.err
    assert budgeted.out.split() == ["tests.test_core.test_negative"], budgeted.err
    # A change to a line no test runs selects nothing and says so.
    (project / "pkg" / "core.py").write_text(CORE.replace("return x - 1", "return x - 2"))
    none = aqe_in(project, env, "subset", "--changed-since", "HEAD", "--format", "ids")
    assert none.code == 0, none.err
    assert none.out.split() == [], none.err
    assert "pkg/core.py: changed lines no test runs: 14" in none.err
    # The subset feeds pytest directly.
    (project / "pkg" / "core.py").write_text(CORE.replace("return -1", "return -2"))
    selected = tmp_path / "subset.txt"
    selected.write_text(chosen.out)
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *selected.read_text().split()],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 1, ran.stdout + ran.stderr  # the selected test catches it
    assert "1 failed" in ran.stdout, ran.stdout
    # The plugin selects the same way: pytest --aqe-changed-since REF.
    plugin = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "aqe.pytest_plugin",
            "-p",
            "no:cacheprovider",
            "-v",
            "--aqe-changed-since",
            "HEAD",
            "tests",
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert plugin.returncode == 1, plugin.stdout + plugin.stderr
    assert "test_negative FAILED" in plugin.stdout, plugin.stdout
    assert "test_positive" not in plugin.stdout, plugin.stdout
    assert "2 deselected" in plugin.stdout, plugin.stdout
    assert "tests impacted since HEAD" in plugin.stdout, plugin.stdout

    # The coverage projection rebuilt from the log equals the live one (after folding the
    # plugin's run: it recorded its results).
    consumed = aqe_in(project, env, "consume", "coverage", "-q")
    assert consumed.code == 0, consumed.out + consumed.err
    verify = aqe_in(project, env, "replay", "coverage", "--verify", "--json")
    assert verify.code == 0, verify.out + verify.err
    assert verify.json()["equal"]


def test_ingest_cobertura_and_lcov_and_refuse_bad_input(
    tmp_path: Path, aqe_env: dict[str, str]
) -> None:
    cobertura = tmp_path / "coverage.xml"
    cobertura.write_text(
        '<?xml version="1.0" ?><coverage><sources><source>.</source></sources><packages>'
        '<package name="p"><classes><class filename="lib/a.py"><lines>'
        '<line number="1" hits="1"/><line number="2" hits="0"/>'
        '<line number="3" hits="4" branch="true" condition-coverage="50% (1/2)"/>'
        "</lines></class></classes></package></packages></coverage>"
    )
    lcov = tmp_path / "lcov.info"
    lcov.write_text("TN:\nSF:web/b.js\nDA:1,1\nDA:2,0\nBRDA:1,0,0,1\nBRDA:1,0,1,-\nend_of_record\n")
    done = aqe_in(tmp_path, aqe_env, "coverage", "ingest", str(cobertura), str(lcov), "--json")
    assert done.code == 0, done.err
    assert done.json()["files"] == 2
    again = aqe_in(tmp_path, aqe_env, "coverage", "ingest", str(cobertura), str(lcov), "--json")
    assert again.json()["new"] == 0  # same files, same run id: deduplicated
    shown = {f["path"]: f for f in aqe_in(tmp_path, aqe_env, "coverage", "--json").json()["files"]}
    assert (shown["lib/a.py"]["covered"], shown["lib/a.py"]["statements"]) == (2, 3)
    assert (shown["web/b.js"]["branches"], shown["web/b.js"]["taken"]) == (2, 1)
    bad = tmp_path / "bad.info"
    bad.write_text("SF:x.c\nDA:one,1\nend_of_record\n")
    refused = aqe_in(tmp_path, aqe_env, "coverage", "ingest", str(bad))
    assert refused.code == 2
    assert f"{bad}:2: DA line 'one' is not a whole number" in refused.err
    hostile = tmp_path / "hostile.xml"
    hostile.write_text('<!DOCTYPE c [<!ENTITY x "y">]><coverage>&x;</coverage>')
    refused = aqe_in(tmp_path, aqe_env, "coverage", "ingest", str(hostile))
    assert refused.code == 2
    assert "forbidden XML construct" in refused.err
