"""The testgen workflow's pure fold and decisions: gaps, fan-out, report, decision, finish."""

from __future__ import annotations

import msgspec

from aqe.events import TaskOutcome, WorkflowStarted, WorkflowStepFinished, WorkflowTimerFired
from aqe.testgen.measure import FileSets
from aqe.testgen.task import StepSummary, TestgenTask, gaps_from_files, module_of
from aqe.workflows.engine import Decide, Fact, Finish, RunTask, SetTimer, step_task_id
from aqe.workflows.testgen import TestgenState, TestgenWorkflow

WF = TestgenWorkflow()
BASE = {"source": "/src/p", "package": "pkg", "tests": "tests", "generators": "ghostwriter"}


def start(**params: str) -> TestgenState:
    return WF.initial(
        WorkflowStarted(instance_id="w1", workflow="testgen", params={**BASE, **params})
    )


def finish(state: TestgenState, step: str, summary: StepSummary | None, error: str = "") -> None:
    outcome = TaskOutcome(
        exit_code=0 if summary else None,
        stdout_tail=msgspec.json.encode(summary).decode() if summary else "",
        error=error,
    )
    event = WorkflowStepFinished(
        instance_id="w1",
        step=step,
        task_id=step_task_id("w1", step),
        status="completed" if summary else "failed",
        outcome=outcome,
    )
    WF.apply(state, Fact(event=event, seq=1, recorded_at_ns=0))


def tasks(commands: list) -> dict[str, TestgenTask]:  # type: ignore[type-arg]
    return {
        c.step: msgspec.json.decode(c.payload, type=TestgenTask)
        for c in commands
        if isinstance(c, RunTask)
    }


def test_without_targets_it_asks_for_gaps_first_then_fans_out() -> None:
    state = start(gaps="2")
    first = list(WF.decide(state, 0))
    assert isinstance(first[0], SetTimer)
    assert list(tasks(first)) == ["gaps"]
    assert tasks(first)["gaps"].gaps == 2
    finish(state, "gaps", StepSummary(targets=("pkg.a", "pkg.b"), gaps_from="baseline"))
    planned = tasks(list(WF.decide(state, 0)))
    assert sorted(planned) == ["generate-pkg.a", "generate-pkg.b"]
    job = planned["generate-pkg.a"].job
    assert job.targets == ("pkg.a",)
    assert job.batch_id == step_task_id("w1", "generate-pkg.a")
    assert job.instance_id == "w1"
    assert job.tests == ("tests",)


def test_every_step_summary_goes_into_the_decision_and_result() -> None:
    state = start(targets="pkg.a,pkg.b", report_dir="/out")
    assert sorted(tasks(list(WF.decide(state, 0)))) == ["generate-pkg.a", "generate-pkg.b"]
    finish(
        state,
        "generate-pkg.a",
        StepSummary(
            batch_id="b1",
            line_before=10,
            line_after=50,
            branch_before=0,
            branch_after=25,
            generated=4,
            kept=2,
        ),
    )
    assert not any(isinstance(c, Finish) for c in WF.decide(state, 0))
    finish(state, "generate-pkg.b", StepSummary(batch_id="b2", generated=3, kept=0))
    waiting = list(WF.decide(state, 0))
    assert "report" in tasks(waiting)
    assert not any(isinstance(c, Finish) for c in waiting)
    finish(state, "report", StepSummary(files=("/out/a.md", "/out/a.html")))
    done = list(WF.decide(state, 0))
    decided = next(c for c in done if isinstance(c, Decide))
    assert decided.decision == "2 of 7 generated tests kept"
    assert decided.data["pkg.a"].startswith("lines 10.0% -> 50.0%, branches 0.0% -> 25.0%, 2/4")
    end = next(c for c in done if isinstance(c, Finish))
    assert end.status == "succeeded"
    assert end.result["kept"] == "2"
    assert end.result["report"] == "/out/a.md, /out/a.html"


def test_a_failed_step_fails_the_instance_with_its_reason() -> None:
    state = start(targets="pkg.a")
    finish(state, "generate-pkg.a", None, error="ConfigError: pynguin is not installed")
    end = next(c for c in WF.decide(state, 0) if isinstance(c, Finish))
    assert end.status == "failed"
    assert "pynguin is not installed" in end.reasons[0]


def test_bad_parameters_and_give_up() -> None:
    assert next(iter(WF.decide(start(runs="x"), 0))) == Finish(
        status="failed", reasons=("bad parameter: invalid literal for int() with base 10: 'x'",)
    )
    missing = WF.initial(WorkflowStarted(instance_id="w", workflow="testgen", params={}))
    assert isinstance(next(iter(WF.decide(missing, 0))), Finish)
    bad_gen = list(WF.decide(start(generators="evosuite"), 0))
    assert isinstance(bad_gen[0], Finish)
    assert "choose from ghostwriter, pynguin" in bad_gen[0].reasons[0]
    state = start(targets="pkg.a")
    fired = WorkflowTimerFired(instance_id="w1", timer="give-up", due_ns=1)
    WF.apply(state, Fact(event=fired, seq=2, recorded_at_ns=0))
    assert [c.status for c in WF.decide(state, 0) if isinstance(c, Finish)] == ["gave-up"]


def test_gaps_from_a_measurement_rank_by_missing_lines_and_branches() -> None:
    files = {
        "pkg/__init__.py": FileSets(statements=frozenset({1, 2}), lines=frozenset()),
        "pkg/a.py": FileSets(statements=frozenset({1, 2, 3}), lines=frozenset({1})),
        "pkg/b.py": FileSets(
            statements=frozenset({1, 2, 3}),
            lines=frozenset({1, 2, 3}),
            arcs=frozenset({(1, 2), (1, 3), (2, 3)}),
        ),
        "pkg/full.py": FileSets(statements=frozenset({1}), lines=frozenset({1})),
    }
    assert gaps_from_files(files, limit=5) == ["pkg.b", "pkg.a"]
    assert gaps_from_files(files, limit=1) == ["pkg.b"]
    assert module_of("pkg/sub/__init__.py") == "pkg.sub"
