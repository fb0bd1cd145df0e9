"""Readable output and CLI polish (issue 11 items 6 and 9), through the real command.

stdout is a pipe here, as in CI: tables come out as tab-separated rows unless
``--format table`` asks for the rich table.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Runner = Callable[..., Any]  # the `aqe` fixture in conftest.py

pytestmark = pytest.mark.nats

LONG = "test_a_parametrised_case_with_a_rather_long_name[postgres-14-with-ssl-and-a-pool]"
CLASS = "toolz.tests.integration.test_itertoolz_and_functoolz_behave_together"
TEST_ID = f"{CLASS}.{LONG}"


def junit(path: Path, outcome: str, *, when: str, host: str = "ci-1") -> Path:
    body = '<failure message="boom">trace</failure>' if outcome == "failed" else ""
    path.write_text(
        f'<testsuite name="toolz" tests="1" timestamp="{when}" hostname="{host}">'
        f'<testcase classname="{CLASS}" name="{LONG}" time="0.25">{body}</testcase>'
        "</testsuite>"
    )
    return path


@pytest.fixture
def one_run(aqe: Runner, tmp_path: Path) -> None:
    report = junit(tmp_path / "report.xml", "failed", when="2026-11-01T09:00:00")
    done = aqe("ingest", str(report), "-q")
    assert done.code == 0, done.err


@pytest.mark.usefixtures("one_run")
def test_a_pipe_gets_tab_separated_rows_with_full_ids(aqe: Runner) -> None:
    piped = aqe("history")
    assert piped.code == 0, piped.err
    lines = piped.out.splitlines()
    header = lines[0].split("\t")
    assert header[:3] == ["test", "status", "runs"]
    assert [line.split("\t")[0] for line in lines[1:]] == [TEST_ID]
    assert all(len(line.split("\t")) == len(header) for line in lines)
    assert not set("│┃━…") & set(piped.out)
    assert aqe("history", "--format", "tsv").out == piped.out
    runs = aqe("runs").out.splitlines()
    assert runs[0].startswith("run\tstarted\t")
    assert len(runs) == 2


@pytest.mark.usefixtures("one_run")
def test_format_json_is_json(aqe: Runner) -> None:
    as_format = aqe("flaky", "--format", "json")
    assert as_format.code == 0, as_format.err
    assert as_format.json() == aqe("flaky", "--json").json()
    assert aqe("history", "--format", "json").json()[0]["test_id"] == TEST_ID


@pytest.mark.usefixtures("one_run")
def test_a_narrow_table_folds_ids_instead_of_cutting_them(
    aqe: Runner, aqe_env: dict[str, str]
) -> None:
    narrow = aqe("history", "--format", "table", env={**aqe_env, "COLUMNS": "70"})
    assert narrow.code == 0, narrow.err
    assert "…" not in narrow.out
    body = [line for line in narrow.out.splitlines() if line.startswith("│")]
    first_cells = "".join(line.split("│")[1].strip() for line in body)
    assert first_cells == TEST_ID
    assert max(len(line) for line in narrow.out.splitlines()) <= 70


def test_ingest_summary_is_one_line_and_files_of_two_runs_can_stay_two(
    aqe: Runner, aqe_env: dict[str, str], tmp_path: Path
) -> None:
    first = junit(tmp_path / "tz-1.xml", "failed", when="2026-11-01T09:00:00", host="ci-1")
    second = junit(tmp_path / "tz-2.xml", "passed", when="2026-11-01T10:00:00", host="ci-2")
    narrow = {**aqe_env, "COLUMNS": "60"}
    split = aqe("ingest", str(first), str(second), "--run-per-file", "-q", env=narrow)
    assert split.code == 0, split.err
    summary = [line for line in split.out.splitlines() if line.startswith("ingested")]
    assert len(summary) == 1
    assert summary[0].endswith("(2 attempts)")
    assert "as runs " in summary[0]
    runs = aqe("runs", "--json").json()
    assert len(runs) == 2
    assert aqe("history", TEST_ID, "--json").json()["recent"] == "pf"  # newest first


def test_files_given_together_are_one_run_with_attempts_in_time_order(
    aqe: Runner, tmp_path: Path
) -> None:
    # Named newest first: attempts still follow the files' own timestamps.
    later = junit(tmp_path / "tz-2.xml", "passed", when="2026-11-01T10:00:00")
    earlier = junit(tmp_path / "tz-1.xml", "failed", when="2026-11-01T09:00:00")
    together = aqe("ingest", str(later), str(earlier), "-q", "--json")
    assert together.code == 0, together.err
    assert len(together.json()["run_ids"]) == 1
    row = aqe("history", TEST_ID, "--json").json()
    assert row["recent"] == "r"  # failed, then passed on retry
    assert row["retried_passes"] == 1


def test_every_command_has_a_description_in_help(aqe: Runner) -> None:
    listing = aqe("--help").out.split("Commands:")[1]
    described = {}
    for line in listing.splitlines():
        name, _, text = line.strip().partition(" ")
        if name:
            described[name] = text.strip()
    for command in ("flaky", "broken", "quarantine", "unquarantine", "config", "runs"):
        assert described.get(command), (command, listing)


def test_a_missing_file_is_one_line(aqe: Runner, tmp_path: Path) -> None:
    for args in (("ingest", "report.xml"), ("patterns", "import", "nothing.toml")):
        missing = aqe(*args)
        assert missing.code == 2
        lines = [line for line in missing.err.splitlines() if line.strip()]
        assert lines == [f"aqe: error: {args[-1]}: no such file or directory"], missing.err
        assert "Usage:" not in missing.err


def test_patterns_add_answers_json(aqe: Runner) -> None:
    args = ("patterns", "add", "--id", "retry-once", "--name", "Retry", "--code", "pass")
    added = aqe(*args, "--json")
    assert added.code == 0, added.err
    assert added.json() == {"pattern_id": "retry-once", "added": True}
    assert aqe(*args, "--json").json() == {"pattern_id": "retry-once", "added": False}


def test_completion_script_is_generated(aqe: Runner, aqe_env: dict[str, str]) -> None:
    script = aqe(env={**aqe_env, "_AQE_COMPLETE": "bash_source"})
    assert script.code == 0, script.err
    assert "complete -o nosort -F _aqe_completion aqe" in script.out
