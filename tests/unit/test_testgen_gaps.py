"""Where the testgen workflow's targets come from: the coverage projection in the log.

The handler's ``gaps`` mode folds the coverage projection (issue 13's coverage events)
and takes its least-covered files of the package; here the log is in memory, so no
sandbox runs. Also: the ghostwriter backend's repair of unannotated output (pure).
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from aqe.coordination.tasks import TaskEntry
from aqe.coverage.measured import MeasuredFile, coverage_events
from aqe.errors import ConfigError
from aqe.log.memory import InMemoryEventLog
from aqe.log.port import NewEvent
from aqe.sandbox import Sandbox
from aqe.testgen._ghostwrite import GENERIC, harden
from aqe.testgen.evaluate import prepare_package
from aqe.testgen.pipeline import GenerationJob
from aqe.testgen.task import StepSummary, TestgenHandler, TestgenTask


def no_sandbox(backend: str) -> Sandbox:
    raise AssertionError(f"the projection had the gaps; no {backend} sandbox should open")


def entry(task: TestgenTask) -> TaskEntry:
    return TaskEntry(task_id="t1", kind="testgen", payload=msgspec.json.encode(task).decode())


async def test_gaps_come_from_the_coverage_projection(tmp_path: Path) -> None:
    log = InMemoryEventLog()
    files = [
        MeasuredFile(path="pkg/full.py", statements={1, 2}, executed={1, 2}),
        MeasuredFile(path="pkg/half.py", statements={1, 2, 3, 4}, executed={1, 2}),
        MeasuredFile(
            path="pkg/worst.py",
            statements=set(range(1, 11)),
            executed={1},
            branches={1: (2, 0)},
        ),
        MeasuredFile(path="pkg/tests/test_x.py", statements={1, 2, 3}, executed=set()),
        MeasuredFile(path="other/far.py", statements=set(range(1, 50)), executed=set()),
    ]
    events = coverage_events(files, run_id="r1", awaits_run=False)
    await log.append_batch([NewEvent(event=e) for e in events])
    job = GenerationJob(source=str(tmp_path), package="pkg", targets=("(gaps)",), backend="process")
    handler = TestgenHandler(log, tmp_path / "data")
    outcome = await handler(entry(TestgenTask(mode="gaps", job=job, gaps=2)), no_sandbox)
    assert outcome.error == ""
    summary = msgspec.json.decode(outcome.stdout_tail, type=StepSummary)
    assert summary.gaps_from == "coverage-projection"
    assert summary.targets == ("pkg.worst", "pkg.half")


async def test_a_bad_payload_is_a_failed_outcome(tmp_path: Path) -> None:
    handler = TestgenHandler(InMemoryEventLog(), tmp_path)
    bad = TaskEntry(task_id="t1", kind="testgen", payload='{"mode": "dance"}')
    outcome = await handler(bad, no_sandbox)
    assert outcome.error.startswith("ConfigError: testgen task payload:")


def test_harden_fills_holes_and_settles_settings() -> None:
    raw = (
        "import m\n"
        "from hypothesis import given, strategies as st\n\n"
        "# TODO: replace st.nothing() with appropriate strategies\n\n\n"
        "@given(x=st.nothing(), y=st.integers())\n"
        "def test_fuzz_f(x, y):\n    m.f(x=x, y=y)\n"
    )
    code = harden(raw)
    assert "st.nothing()" not in code
    assert "TODO" not in code
    assert f"_any_value = {GENERIC}\n" in code
    assert (
        "@settings(deadline=None, max_examples=50)\n@given(x=_any_value, y=st.integers())" in code
    )
    assert "from hypothesis import given, settings, strategies as st" in code
    compile(code, "<generated>", "exec")


def test_prepare_package_copies_toolz_without_the_removed_tests(tmp_path: Path) -> None:
    pytest.importorskip("toolz")
    project = prepare_package("toolz", tmp_path, remove=["test_dicttoolz.py"])
    assert project.tests == ("toolz/tests",)
    assert project.omit == "toolz/tests/*"
    assert (tmp_path / "toolz" / "dicttoolz.py").is_file()
    assert (tmp_path / "toolz" / "tests" / "test_itertoolz.py").is_file()
    assert not (tmp_path / "toolz" / "tests" / "test_dicttoolz.py").exists()
    with pytest.raises(ConfigError, match=r"no test_nope\.py in"):
        prepare_package("toolz", tmp_path, remove=["test_nope.py"])
    with pytest.raises(ConfigError, match="is not an installed package"):
        prepare_package("no_such_package_here", tmp_path, remove=[])
