"""The ``perf-confirm`` workflow: re-run a benchmark at the commits around a suspected change.

A change point is a suspicion; this workflow is the check. Runners (capability
``bench``) measure the benchmark's command at the commit before the change (A) and the
commit after it (B), one step at a time in the order A B A B ..., so slow drift of the
machine (thermal, neighbours, caches) falls on both sides alike. When every round is
in, :func:`aqe.perf.detect.verify_samples` decides: ``confirmed`` (the re-runs differ
significantly, by at least the minimum effect, the suspected way) or ``dismissed``.

Parameters (strings):

* ``change_id`` (required), ``repo`` (a git URL, ``file://`` for a local repository),
  ``before`` and ``after`` (commits), ``command`` (the argv as a JSON list), ``expected``
  (the suspected after / before ratio);
* ``rounds`` [5] (A B pairs), ``repeat`` [3] (timed runs per step), ``warmup`` [1];
* ``min_effect`` [0.05], ``alpha`` [0.01], ``python`` [``python3``], ``backend``
  [``process``], ``give_up_after_s`` [3600], ``clock`` [``wall``] (``cpu`` for a
  series of CPU times, :mod:`aqe.perf.harness`).

It records the decision ``verdict`` (with the ratio, p-value and sample counts as data)
and finishes ``succeeded``; a step that could not measure (a failed command, a parked
task) makes it finish ``failed`` with the reason, and no verdict.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import msgspec

from aqe.errors import ConfigError
from aqe.events import WorkflowStarted, WorkflowStepFinished, WorkflowTimerFired
from aqe.perf.detect import verify_samples
from aqe.perf.harness import harness_argv, parse_samples
from aqe.runners.tasks import runner_payload
from aqe.sandbox import SandboxSpec
from aqe.workflows.engine import Command, Decide, Fact, Finish, RunTask, SetTimer

__all__ = ["BENCH_CAPABILITY", "PERF_CONFIRM", "PerfConfirmState", "PerfConfirmWorkflow"]

PERF_CONFIRM = "perf-confirm"
BENCH_CAPABILITY = "bench"
_NS = 1_000_000_000


class PerfConfirmState(msgspec.Struct, kw_only=True):
    """The parameters, the steps in order, and the samples each side has."""

    change_id: str
    order: list[str]
    payloads: dict[str, str]
    expected: float
    min_effect: float
    alpha: float
    give_up_after_s: float
    done: list[str] = msgspec.field(default_factory=list)
    before: list[float] = msgspec.field(default_factory=list)
    after: list[float] = msgspec.field(default_factory=list)
    fired: list[str] = msgspec.field(default_factory=list)
    error: str = ""


def _steps(rounds: int) -> list[str]:
    out: list[str] = []
    for i in range(1, rounds + 1):
        out += [f"a-{i}", f"b-{i}"]
    return out


class PerfConfirmWorkflow:
    """Confirm or dismiss a suspected change (see the module docstring)."""

    name = PERF_CONFIRM

    def initial(self, started: WorkflowStarted) -> PerfConfirmState:
        """Read the parameters; a bad one makes the instance fail with the reason."""
        p = started.params
        error = ""
        payloads: dict[str, str] = {}
        order: list[str] = []
        expected = min_effect = alpha = give_up = 0.0
        try:
            rounds = int(p.get("rounds", "5"))
            repeat = int(p.get("repeat", "3"))
            warmup = int(p.get("warmup", "1"))
            expected = float(p.get("expected", "1.0"))
            min_effect = float(p.get("min_effect", "0.05"))
            alpha = float(p.get("alpha", "0.01"))
            give_up = float(p.get("give_up_after_s", "3600"))
            command = json.loads(p.get("command", "[]"))
            if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
                raise ValueError("command: expected a JSON list of strings")
            missing = [k for k in ("change_id", "repo", "before", "after") if not p.get(k)]
            if missing or not command or rounds < 1:
                raise ValueError(
                    "needs change_id, repo, before, after, command (JSON list) and rounds >= 1"
                    + (f"; missing {', '.join(missing)}" if missing else "")
                )
            argv = harness_argv(
                command,
                warmup=warmup,
                repeat=repeat,
                python=p.get("python", "python3"),
                clock=p.get("clock", "wall"),
            )
            backend = p.get("backend", "process")
            for side, commit in (("a", p["before"]), ("b", p["after"])):
                spec = SandboxSpec(source=p["repo"], commit=commit, backend=backend, artefacts=())
                payloads[side] = runner_payload(spec, argv, ingest=False)
            order = _steps(rounds)
        except (ValueError, ConfigError) as exc:
            error = f"bad parameter: {exc}"
        return PerfConfirmState(
            change_id=p.get("change_id", ""),
            order=order,
            payloads=payloads,
            expected=expected,
            min_effect=min_effect,
            alpha=alpha,
            give_up_after_s=give_up,
            error=error,
        )

    def apply(self, state: PerfConfirmState, fact: Fact) -> PerfConfirmState:
        """Fold a step's samples, or a timer."""
        event = fact.event
        if isinstance(event, WorkflowTimerFired):
            state.fired.append(event.timer)
        elif isinstance(event, WorkflowStepFinished) and event.step not in state.done:
            state.done.append(event.step)
            outcome = event.outcome
            if event.status == "parked" or outcome is None:
                state.error = state.error or f"{event.step}: no runner measured it ({event.reason})"
                return state
            try:
                samples, code = parse_samples(outcome.stdout_tail)
            except ConfigError as exc:
                state.error = state.error or f"{event.step}: {exc} {outcome.error}".strip()
                return state
            if code != 0:
                state.error = state.error or f"{event.step}: the command exited {code}"
            (state.before if event.step.startswith("a-") else state.after).extend(samples)
        return state

    def decide(self, state: PerfConfirmState, now_ns: int) -> Sequence[Command]:
        """The next step of A B A B ..., then the verdict."""
        if state.error:
            return [Finish(status="failed", reasons=(state.error,))]
        if "give-up" in state.fired:
            return [
                Finish(
                    status="gave-up", reasons=(f"{len(state.done)} of {len(state.order)} steps",)
                )
            ]
        commands: list[Command] = [
            SetTimer(
                timer="give-up",
                due_ns=now_ns + int(state.give_up_after_s * _NS),
                reason=f"give up after {state.give_up_after_s:g} s",
            )
        ]
        # One step at a time, in order: the interleaving is in time, not only in name.
        for step in state.order:
            commands.append(
                RunTask(
                    step=step,
                    kind=BENCH_CAPABILITY,
                    payload=state.payloads[step[0]],
                    reasons=(
                        f"{'before' if step[0] == 'a' else 'after'} change {state.change_id}",
                    ),
                )
            )
            if step not in state.done:
                return commands
        v = verify_samples(
            state.before,
            state.after,
            expected=state.expected,
            min_effect=state.min_effect,
            alpha=state.alpha,
        )
        data = {
            "magnitude": f"{v.magnitude:.6g}",
            "p_value": f"{v.p_value:.6g}",
            "samples_before": str(len(state.before)),
            "samples_after": str(len(state.after)),
            "change_id": state.change_id,
        }
        verdict = "confirmed" if v.confirmed else "dismissed"
        commands.append(Decide(key="verdict", decision=verdict, reasons=(v.reason,), data=data))
        commands.append(
            Finish(status="succeeded", reasons=(v.reason,), result={"verdict": verdict, **data})
        )
        return commands
