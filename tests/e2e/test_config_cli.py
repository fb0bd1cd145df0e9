"""Configuration found from the project (issue 11 item 7), through the real command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.nats


def _aqe(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aqe.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def project(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A project with [tool.aqe] and no AQE_* variables: aqe runs its embedded server."""
    root = tmp_path / "proj"
    (root / "tests" / "unit").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "p"\n\n[tool.aqe]\nreplicas = 1\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("AQE_")}
    yield root, env
    _aqe(root, env, "server", "stop")


def test_a_subdirectory_uses_the_projects_data_dir_and_server(
    project: tuple[Path, dict[str, str]],
) -> None:
    root, env = project
    sub = root / "tests" / "unit"
    shown = _aqe(sub, env, "config", "--json")
    assert shown.returncode == 0, shown.stderr
    config: dict[str, Any] = json.loads(shown.stdout)
    assert config["root"] == str(root)
    assert config["settings"]["data_dir"] == {"value": str(root / ".aqe"), "from": "default"}
    assert config["settings"]["replicas"]["from"] == f"{root / 'pyproject.toml'} [tool.aqe]"

    data = json.dumps({"agent_id": "a1", "role": "runner"})
    published = _aqe(sub, env, "publish", "agents.agent.registered.v1", "--data", data, "--json")
    assert published.returncode == 0, published.stderr
    assert not (sub / ".aqe").exists()
    from_sub = json.loads(_aqe(sub, env, "server", "status", "--json").stdout)
    from_root = json.loads(_aqe(root, env, "server", "status", "--json").stdout)
    assert from_sub["running"]
    assert from_sub["pid"] == from_root["pid"]
    got = _aqe(root, env, "events", "get", "1", "--stream", "AQE_AGENTS", "--json")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["event"]["agent_id"] == "a1"


def test_environment_and_option_override_the_file(project: tuple[Path, dict[str, str]]) -> None:
    root, env = project
    elsewhere = root.parent / "elsewhere"
    shown = _aqe(root, {**env, "AQE_REPLICAS": "3"}, "--data-dir", str(elsewhere), "config")
    assert shown.returncode == 0, shown.stderr
    rows = {line.split("\t")[0]: line.split("\t")[1:] for line in shown.stdout.splitlines()}
    assert rows["data_dir"] == [str(elsewhere), "option --data-dir"]
    assert rows["replicas"] == ["3", "env AQE_REPLICAS"]
