"""Batch events, their fold from the log, the report (Markdown, HTML), files and patches."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from aqe.errors import ConfigError
from aqe.events.testgen import GeneratedTestKept, GenerationMeasured
from aqe.log.memory import InMemoryEventLog
from aqe.testgen.generators import Candidate, PynguinGenerator
from aqe.testgen.keep import Evaluated, judge
from aqe.testgen.measure import FileSets, Measurement, totals_of
from aqe.testgen.pipeline import BatchResult, GenerationJob, batch_events
from aqe.testgen.report import module_rows, render_html, render_markdown, target_files
from aqe.testgen.store import as_patch, read_generation, record_batch, write_tests

MOD = "pkg/mod.py"
OTHER = "pkg/other.py"


def fs(lines: set[int], taken: set[tuple[int, int]] | None = None) -> FileSets:
    return FileSets(
        statements=frozenset(range(1, 11)),
        lines=frozenset(lines),
        arcs=frozenset({(2, 3), (2, 5)}),
        taken=frozenset(taken or set()),
    )


def result(instance_id: str = "", batch_id: str = "tg-1") -> BatchResult:
    job = GenerationJob(
        source="/src/p",
        package="pkg",
        targets=("pkg.mod",),
        generators=("ghostwriter", "pynguin"),
        seed=5,
        instance_id=instance_id,
        batch_id=batch_id,
    )
    base = {MOD: fs({1, 2, 3}, {(2, 3)}), OTHER: fs({1})}
    code = "import pkg.mod\n\n\ndef test_x():\n    assert pkg.mod.f() < 2  # <b>&\n"
    evaluated = [
        Evaluated(
            candidate=Candidate(
                name="test_pn_pkg_mod_x.py",
                target="pkg.mod",
                generator="pynguin",
                seed=5,
                code=code,
            ),
            measurement=Measurement(exit_codes=(0, 0, 0), files={MOD: fs({5}, {(2, 5)})}),
        ),
        Evaluated(
            candidate=Candidate(
                name="test_gw_pkg_mod_f.py",
                target="pkg.mod",
                generator="ghostwriter",
                seed=5,
                code="def test_f(): assert False\n",
            ),
            measurement=Measurement(exit_codes=(1, 1, 1), tail="AssertionError"),
        ),
    ]
    verdicts, after = judge(evaluated, base, runs=3)
    return BatchResult(
        batch_id=job.batch_id,
        job=job,
        before=totals_of(base),
        after=totals_of(after),
        verdicts=verdicts,
        generated={"ghostwriter": 1, "pynguin": 1},
        kept={"ghostwriter": 0, "pynguin": 1},
        wall_s=3.5,
    )


def test_batch_events_put_the_measurement_last() -> None:
    events = batch_events(result())
    assert [type(e).__name__ for e in events] == [
        "GeneratedTestRejected",
        "GeneratedTestKept",
        "GenerationMeasured",
    ]
    kept = events[1]
    assert isinstance(kept, GeneratedTestKept)
    assert (kept.lines_gained, kept.branches_gained) == (1, 1)
    assert kept.gained_lines == {MOD: (5,)}
    measured = events[-1]
    assert isinstance(measured, GenerationMeasured)
    assert measured.before[MOD].lines == 3
    assert measured.after[MOD].lines == 4


async def test_the_log_gives_back_kept_tests_by_instance_and_batch() -> None:
    log = InMemoryEventLog()
    assert await record_batch(log, batch_events(result("w1", "tg-1"))) == 3
    await record_batch(log, batch_events(result("w2", "tg-2")))
    # Recording a batch again stores nothing new.
    await record_batch(log, batch_events(result("w1", "tg-1")))
    everything = await read_generation(log)
    assert sorted(everything.batches) == ["tg-1", "tg-2"]
    assert len(everything.finished_kept()) == 2
    one = await read_generation(log, instance_id="w1")
    assert list(one.batches) == ["tg-1"]
    assert [k.name for k in one.finished_kept()] == ["test_pn_pkg_mod_x.py"]
    assert [r.reason for r in one.rejected.values()] == ["failed"]
    assert list((await read_generation(log, batch_ids=["tg-2"])).batches) == ["tg-2"]


async def test_report_shows_before_after_counts_and_kept_code() -> None:
    log = InMemoryEventLog()
    await record_batch(log, batch_events(result()))
    state = await read_generation(log)
    md = render_markdown(state)
    assert "| pkg.mod | 10 | 30.0% | 40.0% | 2 | 50.0% | 100.0% |" in md
    assert "| (all measured files) | 20 | 20.0% | 25.0% | 4 | 25.0% | 50.0% |" in md
    assert "| pynguin | 1 | 1 |" in md
    assert "| ghostwriter | 1 | 0 |" in md
    assert "Not kept: 1 failed." in md
    assert "def test_x():" in md
    page = render_html(state, title="T <1>")
    assert "<title>T &lt;1&gt;</title>" in page
    assert "# &lt;b&gt;&amp;" in page  # code is escaped
    assert "<b>&" not in page
    assert render_markdown(type(state)()).endswith("No finished generation batch in the log.\n")


def test_module_rows_and_target_files() -> None:
    assert target_files("pkg.mod", [MOD, OTHER, "pkg/mod/sub.py"]) == [MOD, "pkg/mod/sub.py"]
    measured = batch_events(result())[-1]
    assert isinstance(measured, GenerationMeasured)
    rows = module_rows(measured)
    assert [r.module for r in rows] == ["pkg.mod", "(all measured files)"]


def test_write_and_patch_round_trip(tmp_path: Path) -> None:
    kept = [e for e in batch_events(result()) if isinstance(e, GeneratedTestKept)]
    paths = write_tests(kept, tmp_path / "out")
    assert [p.name for p in paths] == ["test_pn_pkg_mod_x.py"]
    assert paths[0].read_text() == kept[0].code
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    patch = tmp_path / "p.diff"
    patch.write_text(as_patch(kept, "tests/gen"))
    subprocess.run(["git", "apply", str(patch)], cwd=repo, check=True)
    assert (repo / "tests/gen/test_pn_pkg_mod_x.py").read_text() == kept[0].code


def test_a_name_with_a_path_is_refused(tmp_path: Path) -> None:
    bad = batch_events(result())[1]
    assert isinstance(bad, GeneratedTestKept)
    import msgspec

    evil = msgspec.structs.replace(bad, name="../../etc/x.py")
    with pytest.raises(ConfigError, match=r"not a plain \.py file name"):
        write_tests([evil], tmp_path)


def test_missing_pynguin_venv_says_how_to_create_it(tmp_path: Path) -> None:
    gen = PynguinGenerator(tmp_path / "nope")
    with pytest.raises(ConfigError, match="run `aqe testgen setup`"):
        gen.command("pkg.mod", seed=1, budget_s=5, max_candidates=3)
