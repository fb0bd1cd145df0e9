"""Run the real ``aqe`` command against a real nats-server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

AQE = [sys.executable, "-m", "aqe.cli"]


class Result:
    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.code = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def json(self) -> Any:
        return json.loads(self.out)

    def json_lines(self) -> list[Any]:
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]


Runner = Callable[..., Result]


@pytest.fixture
def aqe_env(tmp_path: Path, nats_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AQE_")}
    env.update(AQE_NATS_URL=nats_url, AQE_DATA_DIR=str(tmp_path / "data"), COLUMNS="200")
    return env


@pytest.fixture
def aqe(aqe_env: dict[str, str]) -> Runner:
    def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        proc = subprocess.run(
            [*AQE, *args],
            env=env or aqe_env,
            capture_output=True,
            text=True,
            timeout=120,
            input=input,
            check=False,
        )
        return Result(proc)

    return run
