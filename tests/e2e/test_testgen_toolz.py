"""Test generation on a real PyPI package (toolz) with part of its suite removed.

``aqe testgen eval`` copies the installed toolz, deletes ``test_dicttoolz.py`` and
``test_itertoolz.py``, measures line and branch coverage of the rest of the suite,
generates tests for ``toolz.dicttoolz`` and ``toolz.itertoolz`` with both backends
(Hypothesis ghostwriter, Pynguin from its own venv) in the namespace sandbox where
there is one, keeps those that pass 3 times and add coverage, and measures again. The
kept tests, written out with ``aqe testgen write``, pass beside the remaining suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aqe.testgen.generators import pynguin_venv, setup_pynguin

pytestmark = [pytest.mark.nats, pytest.mark.slow, pytest.mark.timeout(900)]

AQE = [sys.executable, "-m", "aqe.cli"]
REPO = Path(__file__).resolve().parents[2]


def aqe(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AQE, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture
def pynguin_ready(aqe_env: dict[str, str]) -> None:
    """Pynguin's venv, made once under the checkout's .aqe (what `aqe testgen setup` does)."""
    shared = pynguin_venv(REPO / ".aqe")
    setup_pynguin(shared)
    mine = pynguin_venv(Path(aqe_env["AQE_DATA_DIR"]))
    mine.parent.mkdir(parents=True, exist_ok=True)
    mine.symlink_to(shared.resolve(), target_is_directory=True)


def test_toolz_before_and_after_generation(
    aqe_env: dict[str, str], pynguin_ready: None, tmp_path: Path
) -> None:
    pytest.importorskip("toolz")
    workdir = tmp_path / "tz"
    done = aqe(
        aqe_env,
        "testgen",
        "eval",
        "--generator",
        "ghostwriter,pynguin",
        "--budget",
        "15",
        "--max-candidates",
        "6",
        "--workdir",
        str(workdir),
        "--json",
        timeout=840,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary: dict[str, Any] = json.loads(done.stdout)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("before", "after")}))
    assert summary["generation_errors"] == {}
    generated, kept = summary["generated"], summary["kept"]
    assert generated["pynguin"] > 0
    assert generated["ghostwriter"] > 0
    assert sum(kept.values()) >= 1
    assert all(kept[g] <= generated[g] for g in generated)
    assert summary["line_pct_after"] > summary["line_pct_before"]
    assert summary["branch_pct_after"] >= summary["branch_pct_before"]
    for module in ("toolz/dicttoolz.py", "toolz/itertoolz.py"):
        before, after = summary["before"][module], summary["after"][module]
        assert after["lines"] >= before["lines"]

    # The kept tests come back from the log and pass beside the remaining suite.
    listed = aqe(aqe_env, "testgen", "kept", "--json")
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == sum(kept.values())
    out = workdir / "generated"
    wrote = aqe(aqe_env, "testgen", "write", "--out", str(out))
    assert wrote.returncode == 0, wrote.stderr
    assert len(list(out.glob("test_*.py"))) == sum(kept.values())
    env = {k: v for k, v in os.environ.items() if not k.startswith("AQE_")}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    suite = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "toolz/tests",
            "generated",
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert suite.returncode == 0, suite.stdout[-3000:]
