"""The ``rerun`` workflow: run one pytest node id N times in fresh sandboxes, record outcomes.

The smallest workflow that uses every part of the engine, and the one its tests run
end to end. Parameters (strings, as ``aqe workflow start rerun --param k=v`` gives them):

* ``test``: the pytest node id (required);
* ``source``: the project folder or git URL (required); ``commit``, ``backend``;
* ``times``: how many runs [3]; ``python``: the interpreter [``python``];
* ``retry_after_s``: a run no runner could finish (parked) is tried again once, after
  this long [5]; ``give_up_after_s``: the instance gives up after this long [3600].

It schedules every run at once (the runners share them out), sets its give-up timer,
and when every run has an outcome records the decision ``outcomes`` (how many passed,
with each run's outcome as data) and finishes ``succeeded``; a run that failed to run
at all (its task failed without a test outcome) makes it finish ``failed``.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from aqe.events import WorkflowStarted, WorkflowStepFinished, WorkflowTimerFired
from aqe.runners.tasks import runner_payload
from aqe.sandbox import SandboxSpec
from aqe.workflows.engine import Command, Decide, Fact, Finish, RunTask, SetTimer

__all__ = ["RerunState", "RerunWorkflow"]

_NS = 1_000_000_000


class RerunState(msgspec.Struct, kw_only=True):
    """What the rerun workflow knows: its parameters and each run's outcome."""

    test: str
    times: int
    payload: str
    retry_after_s: float
    give_up_after_s: float
    outcomes: dict[str, str] = msgspec.field(default_factory=dict)
    """Run (``run-3``) -> the test's outcome, or ``parked`` / ``no-result``."""
    parked: dict[str, str] = msgspec.field(default_factory=dict)
    retried: dict[str, str] = msgspec.field(default_factory=dict)
    """Run -> the step that retries it."""
    fired: tuple[str, ...] = ()
    error: str = ""


def _run_names(times: int) -> list[str]:
    return [f"run-{i}" for i in range(1, times + 1)]


class RerunWorkflow:
    """Rerun one test N times (see the module docstring)."""

    name = "rerun"

    def initial(self, started: WorkflowStarted) -> RerunState:
        """Read the parameters; a bad one makes the instance fail with the reason."""
        params = started.params
        error = ""
        try:
            times = int(params.get("times", "3"))
            retry = float(params.get("retry_after_s", "5"))
            give_up = float(params.get("give_up_after_s", "3600"))
        except ValueError as exc:
            times, retry, give_up, error = 0, 0.0, 0.0, f"bad parameter: {exc}"
        test = params.get("test", "")
        if not error and (not test or not params.get("source") or times < 1):
            error = "needs test=<node id>, source=<path or git URL> and times >= 1"
        payload = ""
        if not error:
            spec = SandboxSpec(
                source=params["source"],
                commit=params.get("commit"),
                backend=params.get("backend", "process"),
            )
            argv = (
                params.get("python", "python"),
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "--junitxml=aqe-rerun.xml",
                test,
            )
            payload = runner_payload(spec, argv)
        return RerunState(
            test=test,
            times=times,
            payload=payload,
            retry_after_s=retry,
            give_up_after_s=give_up,
            error=error,
        )

    def apply(self, state: RerunState, fact: Fact) -> RerunState:
        """Fold a step's end or a timer."""
        event = fact.event
        if isinstance(event, WorkflowStepFinished):
            run = event.step.removesuffix("-retry")
            if event.status == "parked":
                state.parked[event.step] = event.reason
                if event.step != run:  # the retry was parked too
                    state.outcomes[run] = "parked"
                return state
            outcome = event.outcome
            found = outcome.outcomes.get(state.test) if outcome is not None else None
            if found is None and outcome is not None and len(outcome.outcomes) == 1:
                found = next(iter(outcome.outcomes.values()))  # a node id written differently
            state.outcomes[run] = found or "no-result"
        elif isinstance(event, WorkflowTimerFired):
            state.fired = (*state.fired, event.timer)
        return state

    def decide(self, state: RerunState, now_ns: int) -> Sequence[Command]:
        """All runs at once, a give-up timer, retries of parked runs, then the outcomes."""
        if state.error:
            return [Finish(status="failed", reasons=(state.error,))]
        if "give-up" in state.fired and len(state.outcomes) < state.times:
            return [
                Finish(
                    status="gave-up",
                    reasons=(f"{len(state.outcomes)} of {state.times} runs had an outcome",),
                    result=dict(state.outcomes),
                )
            ]
        commands: list[Command] = [
            SetTimer(
                timer="give-up",
                due_ns=now_ns + int(state.give_up_after_s * _NS),
                reason=f"give up after {state.give_up_after_s:g} s",
            )
        ]
        commands += [
            RunTask(
                step=run, kind="pytest", payload=state.payload, reasons=(f"rerun {state.test}",)
            )
            for run in _run_names(state.times)
        ]
        for step, reason in state.parked.items():
            if step.endswith("-retry"):
                continue
            timer = f"retry-{step}"
            commands.append(
                SetTimer(
                    timer=timer,
                    due_ns=now_ns + int(state.retry_after_s * _NS),
                    reason=f"{step} was parked ({reason}); try once more",
                )
            )
            if timer in state.fired:
                commands.append(
                    RunTask(
                        step=f"{step}-retry",
                        kind="pytest",
                        payload=state.payload,
                        reasons=(f"{step} was parked",),
                    )
                )
        if len(state.outcomes) == state.times:
            runs = _run_names(state.times)
            passed = sum(1 for r in runs if state.outcomes[r] == "passed")
            data = {r: state.outcomes[r] for r in runs}
            commands.append(
                Decide(
                    key="outcomes",
                    decision=f"{passed}/{state.times} passed",
                    reasons=(f"{state.test} ran {state.times} times",),
                    data=data,
                )
            )
            unrun = [r for r in runs if state.outcomes[r] in ("no-result", "parked")]
            commands.append(
                Finish(
                    status="failed" if unrun else "succeeded",
                    reasons=(f"runs without a test outcome: {', '.join(unrun)}",) if unrun else (),
                    result={**data, "passed": str(passed), "runs": str(state.times)},
                )
            )
        return commands
