"""The escape audit on a real package's suite (toolz): ``aqe coverage audit``.

Slow (one full suite run per mutant): off the default suite, run by ``just test-slow``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_audit_table_on_toolz() -> None:
    pytest.importorskip("toolz")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "aqe.cli",
            "coverage",
            "audit",
            "--package",
            "toolz",
            "--mutants",
            "16",
            "--seed",
            "1",
            "--budgets",
            "10,50",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=570,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["tests"] > 150
    assert report["mutants_run"] == 16
    rows = {r["strategy"]: r for r in report["rows"]}
    assert list(rows) == [
        "full suite",
        "coverage",
        "history@10%",
        "combined@10%",
        "history@50%",
        "combined@50%",
    ]
    full, cov = rows["full suite"], rows["coverage"]
    assert full["recall"] == 1.0
    assert full["fraction"] == 1.0
    assert full["killed"] >= 8  # most mutants of toolz are caught by its suite
    # Coverage-based selection runs a small share of the suite and misses little.
    assert cov["fraction"] < 0.2
    assert cov["recall"] >= 0.85
    # The combined strategy starts with the coverage selection, so within a budget
    # that holds it, it catches at least what coverage does.
    assert rows["combined@50%"]["caught"] >= cov["caught"]
    for mutant in report["mutants"]:
        caught = mutant["caught"]
        assert caught["full suite"] == bool(mutant["killers"])
        # A strategy can only catch what the full suite kills.
        assert all(not hit or mutant["killers"] for hit in caught.values())
