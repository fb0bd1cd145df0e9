"""The ``testgen`` workflow: coverage gaps → generate tests → measure the gain → report.

Every step is a runner task of the ``testgen`` capability (:mod:`aqe.testgen.task`),
so generation fans out over however many runners pull that queue. Parameters
(strings, as ``aqe workflow start testgen --param k=v`` gives them):

* ``source`` (a project folder) and ``package`` (what coverage measures) are required;
* ``targets``: modules, comma-separated; without it a ``gaps`` step picks the ``gaps``
  [3] least-covered modules (from the coverage projection when the log has coverage of
  the package, else from a baseline measurement of the suite);
* ``tests`` (pytest paths of the existing suite, comma-separated), ``omit`` (coverage
  glob), ``generators`` [ghostwriter], ``seed`` [0], ``budget_s`` [30],
  ``max_candidates`` [10], ``runs`` [3] (the keep rule's N), ``backend`` [auto],
  ``parallel`` [2];
* ``report_dir``: where a final ``report`` step writes ``testgen-<instance>.md`` and
  ``.html`` (no report step without it; ``aqe testgen report --instance`` renders it
  from the log at any time);
* ``give_up_after_s`` [7200].

One ``generate-<module>`` step per target runs one batch (baseline, generation with
every generator, the keep rule, coverage after) whose events carry the instance id.
When every step has ended the workflow records the decision ``coverage`` (per module,
line and branch coverage before → after, generated and kept) and finishes: ``failed``
when a step failed, else ``succeeded``.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from aqe.events import WorkflowStarted, WorkflowStepFinished, WorkflowTimerFired
from aqe.testgen.generators import generator_names
from aqe.testgen.pipeline import GenerationJob
from aqe.testgen.task import TESTGEN, StepSummary, TestgenTask
from aqe.workflows.engine import Command, Decide, Fact, Finish, RunTask, SetTimer, step_task_id

__all__ = ["TestgenState", "TestgenWorkflow"]

_NS = 1_000_000_000
_GEN = "generate-"


class TestgenState(msgspec.Struct, kw_only=True):
    """What the workflow knows: its job template, the targets and each step's summary."""

    __test__ = False

    instance_id: str
    job: GenerationJob | None = None
    gaps: int = 3
    report_dir: str = ""
    give_up_after_s: float = 7200.0
    targets: tuple[str, ...] | None = None
    """None until known (given, or the gaps step answered)."""
    gaps_from: str = "given"
    summaries: dict[str, StepSummary] = msgspec.field(default_factory=dict)
    """Step -> its summary."""
    failed: dict[str, str] = msgspec.field(default_factory=dict)
    """Step -> why it failed."""
    fired: tuple[str, ...] = ()
    error: str = ""


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v.strip() for v in raw.split(",") if v.strip()))


def _job(instance_id: str, params: dict[str, str]) -> GenerationJob:
    targets = _csv(params.get("targets", ""))
    return GenerationJob(
        source=params["source"],
        package=params["package"],
        targets=targets or ("(gaps)",),
        generators=generator_names(params.get("generators", "ghostwriter")),
        tests=_csv(params.get("tests", "")),
        omit=params.get("omit", ""),
        seed=int(params.get("seed", "0")),
        budget_s=float(params.get("budget_s", "30")),
        max_candidates=int(params.get("max_candidates", "10")),
        runs=int(params.get("runs", "3")),
        backend=params.get("backend", "auto"),
        parallel=int(params.get("parallel", "2")),
        instance_id=instance_id,
    )


class TestgenWorkflow:
    """gap → generate → measure → report (see the module docstring)."""

    __test__ = False
    name = "testgen"

    def initial(self, started: WorkflowStarted) -> TestgenState:
        """Read the parameters; a bad one makes the instance fail with the reason."""
        params = dict(started.params)
        state = TestgenState(instance_id=started.instance_id)
        if not params.get("source") or not params.get("package"):
            state.error = "needs source=<project folder> and package=<what coverage measures>"
            return state
        try:
            state.job = _job(started.instance_id, params)
            state.gaps = int(params.get("gaps", "3"))
            state.give_up_after_s = float(params.get("give_up_after_s", "7200"))
        except ValueError as exc:
            state.error = f"bad parameter: {exc}"
            return state
        state.report_dir = params.get("report_dir", "")
        given = _csv(params.get("targets", ""))
        state.targets = given or None
        return state

    def apply(self, state: TestgenState, fact: Fact) -> TestgenState:
        """Fold a step's end (its summary, or why it failed) or a timer."""
        event = fact.event
        if isinstance(event, WorkflowTimerFired):
            state.fired = (*state.fired, event.timer)
        elif isinstance(event, WorkflowStepFinished):
            outcome = event.outcome
            if event.status != "completed" or outcome is None or outcome.error:
                why = (outcome.error if outcome is not None else "") or event.reason or event.status
                state.failed[event.step] = why
                return state
            try:
                summary = msgspec.json.decode(outcome.stdout_tail, type=StepSummary)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                state.failed[event.step] = f"unreadable step summary: {exc}"
                return state
            state.summaries[event.step] = summary
            if event.step == "gaps":
                state.targets = summary.targets
                state.gaps_from = summary.gaps_from
        return state

    def _task(self, state: TestgenState, step: str, task: TestgenTask, why: str) -> RunTask:
        payload = msgspec.json.encode(task).decode()
        return RunTask(step=step, kind=TESTGEN, payload=payload, reasons=(why,))

    def decide(self, state: TestgenState, now_ns: int) -> Sequence[Command]:
        """Gaps (if needed), one generation step per target, the report, the decision."""
        if state.error or state.job is None:
            return [Finish(status="failed", reasons=(state.error or "no job",))]
        job = state.job
        if "give-up" in state.fired:
            return [Finish(status="gave-up", reasons=("steps still running at give-up time",))]
        commands: list[Command] = [
            SetTimer(
                timer="give-up",
                due_ns=now_ns + int(state.give_up_after_s * _NS),
                reason=f"give up after {state.give_up_after_s:g} s",
            )
        ]
        if state.targets is None:
            if "gaps" in state.failed:
                return [Finish(status="failed", reasons=(f"gaps: {state.failed['gaps']}",))]
            task = TestgenTask(mode="gaps", job=job, gaps=state.gaps)
            return [*commands, self._task(state, "gaps", task, "find the least-covered modules")]
        steps = []
        for target in state.targets:
            step = f"{_GEN}{target}"
            steps.append(step)
            batch = step_task_id(state.instance_id, step)
            one = msgspec.structs.replace(job, targets=(target,), batch_id=batch)
            task = TestgenTask(mode="generate", job=one)
            why = f"generate tests for {target} ({state.gaps_from})"
            commands.append(self._task(state, step, task, why))
        pending = [s for s in steps if s not in state.summaries and s not in state.failed]
        if pending:
            return commands
        if state.report_dir:
            task = TestgenTask(mode="report", job=job, report_dir=state.report_dir)
            commands.append(self._task(state, "report", task, "write the report"))
            if "report" not in state.summaries and "report" not in state.failed:
                return commands
        data: dict[str, str] = {}
        generated = kept = 0
        for step in steps:
            target = step.removeprefix(_GEN)
            s = state.summaries.get(step)
            if s is None:
                data[target] = f"failed: {state.failed.get(step, '')[:300]}"
                continue
            generated += s.generated
            kept += s.kept
            data[target] = (
                f"lines {s.line_before:.1f}% -> {s.line_after:.1f}%, branches "
                f"{s.branch_before:.1f}% -> {s.branch_after:.1f}%, "
                f"{s.kept}/{s.generated} kept (batch {s.batch_id})"
            )
        report = state.summaries.get("report")
        if report is not None:
            data["report"] = ", ".join(report.files)
        reasons = [f"targets from {state.gaps_from}: {', '.join(state.targets) or '(none)'}"]
        commands.append(
            Decide(
                key="coverage",
                decision=f"{kept} of {generated} generated tests kept",
                reasons=tuple(reasons),
                data=data,
            )
        )
        failed = sorted(state.failed)
        commands.append(
            Finish(
                status="failed" if failed else "succeeded",
                reasons=tuple(f"{s}: {state.failed[s][:300]}" for s in failed),
                result={**data, "generated": str(generated), "kept": str(kept)},
            )
        )
        return commands
