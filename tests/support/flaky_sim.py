"""An in-memory driver for the flaky workflow, and a model of the sample project.

Pure: no broker, no sandbox. It plays the engine's part (schedule each new step once,
record each decision once, fire each timer at once) and answers each rerun with a
behaviour function, so unit tests and the fixed-N comparison can run thousands of
investigations. The real driver, runners and sandboxes are tested in
tests/integration/test_flaky_workflow.py.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

import msgspec

from aqe.events import (
    Event,
    TaskOutcome,
    WorkflowDecided,
    WorkflowFinished,
    WorkflowStarted,
    WorkflowStepFinished,
    WorkflowStepScheduled,
    WorkflowTimerFired,
)
from aqe.workflows.engine import Decide, Fact, Finish, RunTask, SetTimer
from aqe.workflows.flaky import FlakyParams, FlakyState, FlakyWorkflow

Behaviour = Callable[[tuple[str, ...], int], dict[str, str] | None]
"""(node ids in run order, seed) -> outcome per node id, or None for a lost run."""


def sim_payload(params: FlakyParams, tests: tuple[str, ...], seed: int) -> str:
    """A payload the simulation can read back: the tests and the seed."""
    return json.dumps({"tests": list(tests), "seed": seed})


class SimResult(msgspec.Struct, kw_only=True):
    state: FlakyState
    decisions: dict[str, WorkflowDecided]
    facts: list[Fact]
    finished: WorkflowFinished | None


def simulate(
    params: dict[str, str],
    behaviour: Behaviour,
    *,
    instance_id: str = "sim-1",
    max_steps: int = 2_000,
    on_decision: Callable[[WorkflowDecided], None] | None = None,
) -> SimResult:
    """Run one instance to its end (or until nothing more happens)."""
    wf = FlakyWorkflow(sim_payload)
    started = WorkflowStarted(instance_id=instance_id, workflow="flaky", params=params)
    facts: list[Fact] = []
    state = wf.initial(started)
    scheduled: dict[str, RunTask] = {}
    pending: list[str] = []
    decisions: dict[str, WorkflowDecided] = {}
    timers: set[str] = set()
    finished: WorkflowFinished | None = None
    now = 1_000_000_000

    def fold(event: Event) -> None:
        nonlocal state
        fact = Fact(event=event, seq=len(facts) + 1, recorded_at_ns=now)
        facts.append(fact)
        state = wf.apply(state, fact)

    fold(started)
    for _ in range(max_steps):
        new = False
        for command in wf.decide(state, now):
            if isinstance(command, RunTask) and command.step not in scheduled:
                scheduled[command.step] = command
                pending.append(command.step)
                fold(
                    WorkflowStepScheduled(
                        instance_id=instance_id,
                        step=command.step,
                        task_id=command.step,
                        kind="pytest",
                    )
                )
                new = True
            elif isinstance(command, Decide) and command.key not in decisions:
                decided = WorkflowDecided(
                    instance_id=instance_id,
                    key=command.key,
                    decision=command.decision,
                    reasons=command.reasons,
                    data=dict(command.data),
                )
                decisions[command.key] = decided
                fold(decided)
                if on_decision is not None:
                    on_decision(decided)
                new = True
            elif isinstance(command, SetTimer) and command.timer not in timers:
                timers.add(command.timer)
                now = max(now, command.due_ns)
                fold(WorkflowTimerFired(instance_id=instance_id, timer=command.timer, due_ns=now))
                new = True
            elif isinstance(command, Finish):
                finished = WorkflowFinished(
                    instance_id=instance_id,
                    status=command.status,
                    reasons=command.reasons,
                    result=dict(command.result),
                )
                fold(finished)
                return SimResult(state=state, decisions=decisions, facts=facts, finished=finished)
        if new:
            continue
        if not pending:
            break
        step = pending.pop(0)
        body = json.loads(scheduled[step].payload)
        outcomes = behaviour(tuple(body["tests"]), body["seed"])
        ended = WorkflowStepFinished(
            instance_id=instance_id,
            step=step,
            task_id=step,
            status="completed" if outcomes is not None else "parked",
            outcome=None
            if outcomes is None
            else TaskOutcome(outcomes=outcomes, order=tuple(outcomes)),
        )
        # As stored: through the event codec (which sorts a dict's keys).
        fold(msgspec.json.decode(ended.to_json(), type=WorkflowStepFinished))
    return SimResult(state=state, decisions=decisions, facts=facts, finished=finished)


# -- a model of tests/sample_project (labels.toml) --------------------------------------------

SUITE: tuple[str, ...] = (
    "check_plain.py::test_rounding_is_banker",
    "check_plain.py::test_reverse_words",
    "check_plain.py::test_dict_merge",
    "check_random.py::test_fails_a_quarter_of_runs",
    "check_random.py::test_fails_half_of_runs",
    "check_random.py::test_fails_most_runs",
    "check_resources.py::test_open_scratch_files",
    "check_resources.py::test_sum_of_squares",
    "check_resources.py::test_handle_budget",
    "check_resources.py::test_next_business_day",
    "check_resources.py::test_counter_race",
    "check_state.py::test_parse_numbers",
    "check_state.py::test_load_settings",
    "check_state.py::test_format_name",
    "check_state.py::test_register_user",
    "check_state.py::test_join_paths",
    "check_state.py::test_price_in_currency",
    "check_state.py::test_slugify",
    "check_state.py::test_registry_starts_empty",
)
RATES = {
    "check_random.py::test_fails_a_quarter_of_runs": 0.25,
    "check_random.py::test_fails_half_of_runs": 0.5,
    "check_random.py::test_fails_most_runs": 0.7,
    "check_resources.py::test_next_business_day": 2 / 7,
    "check_resources.py::test_counter_race": 1 / 3,
}
VICTIMS = {
    "check_resources.py::test_handle_budget": "check_resources.py::test_open_scratch_files",
    "check_state.py::test_registry_starts_empty": "check_state.py::test_register_user",
}
BRITTLES = {"check_state.py::test_price_in_currency": "check_state.py::test_load_settings"}
BROKEN = {"check_plain.py::test_rounding_is_banker"}


def model_passes(test: str, before: tuple[str, ...], seed: int) -> bool:
    """Whether ``test`` passes after ``before`` under ``seed``, per labels.toml."""
    if test in BROKEN:
        return False
    if test in RATES:
        draw = random.Random(f"{seed}:{test}").random()
        return draw >= RATES[test]
    if test in VICTIMS:
        return VICTIMS[test] not in before
    if test in BRITTLES:
        return BRITTLES[test] in before
    return True


def sample_behaviour(tests: tuple[str, ...], seed: int) -> dict[str, str]:
    """The model's outcomes for one run (no tests given: the whole suite in its order)."""
    order = tests or SUITE
    return {
        t: "passed" if model_passes(t, tuple(order[:i]), seed) else "failed"
        for i, t in enumerate(order)
    }
