"""A wheel (non-editable install) carries the skill library and finds it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_wheel_ships_the_skills_and_finds_them(tmp_path: Path) -> None:
    pip = [sys.executable, "-m", "pip"]
    dist = tmp_path / "dist"
    build = [*pip, "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-w", str(dist), "-q"]
    subprocess.run(build, check=True, timeout=500, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("aqe-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {
        n.split("/")[2] for n in names if n.startswith("aqe/_skills/") and n.endswith("/SKILL.md")
    }
    assert shipped == {p.name for p in (ROOT / "skills").iterdir() if (p / "SKILL.md").is_file()}
    assert "aqe/skills/skill.schema.json" in names
    target = tmp_path / "site"
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(target), str(wheel), "-q"],
        check=True,
        timeout=300,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AQE_")}
    env["PYTHONPATH"] = str(target)
    proc = subprocess.run(
        [sys.executable, "-m", "aqe.cli", "skills", "check", "--json"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert json.loads(proc.stdout)["problems"] == []
    where = subprocess.run(
        [sys.executable, "-m", "aqe.cli", "skills", "path"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert Path(where.stdout.strip()) == target / "aqe" / "_skills"
