"""The flaky workflow: isolate → rerun in orders → bisect → verify → act, as a pure machine.

An instance investigates one test (``params["test"]``, a pytest node id relative to the
project's root, or ``params["test_id"]``, aqe's test identity). Every rerun is a
``pytest`` task that a runner agent runs in a fresh sandbox of ``params["source"]``;
each gets its own seed in ``AQE_RERUN_SEED`` (derived from the instance and the step, so
a replay asks for the same seeds and a failing seed can be rerun by hand). The phases,
each derived from the instance's events alone:

1. **isolate**: rerun the test alone until the sequential rule
   (:mod:`aqe.workflows._verdict`) says it passes, fails, or does both (then it is
   **flaky** and the investigation stops);
2. **orders**: run it after the tests that ran before it in the suite's own order (the
   ``order`` parameter, or one run of the whole suite, ``suite-1``), then, if it still
   passes, after ``shuffles`` seeded shuffles of the suite;
3. **bisect**: a test that passes alone and fails after a prefix is a victim, one that
   fails alone and passes after it is brittle; the prefix is bisected
   (:mod:`aqe.workflows._polluters`) down to the polluter or the state-setter;
4. **verify**: the culprit and the test, ``verify_runs`` times: all must fail (victim) or
   all pass (brittle), else the test is called flaky;
5. **act**: a ``verdict`` decision with the evidence (failure rate and Wilson interval,
   failing seeds, the failing order, the polluter, reruns spent); a flaky or
   order-dependent test gets a ``quarantine`` decision, then is rerun alone every
   ``watch_every_s`` until ``clean_passes`` clean passes in a row earn an ``unquarantine``
   decision (after ``watch_rounds`` rounds it stays quarantined and the instance ends).

A test that fails alone and in its order is **broken** (not quarantined: it is a real
failure); one that never fails is **fixed** (no failure reproduced; unquarantined if
``params["quarantined"]`` says it was). Quarantine decisions become
``TestCaseQuarantined`` / ``TestCaseUnquarantined`` events through
:func:`aqe.workflows._flaky_trigger.quarantine_event`.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from typing import Literal

import msgspec

from aqe.events import (
    TaskOutcome,
    WorkflowDecided,
    WorkflowFinished,
    WorkflowStarted,
    WorkflowStatus,
    WorkflowStepFinished,
    WorkflowStepScheduled,
    WorkflowTimerFired,
)
from aqe.ingest.identity import split_pytest_nodeid, test_identity
from aqe.runners.tasks import runner_payload
from aqe.sandbox import Limits, SandboxSpec
from aqe.workflows._polluters import (
    Bisection,
    ODKind,
    next_probe,
    observe,
    start_bisection,
)
from aqe.workflows._verdict import SequentialRule, Tally
from aqe.workflows.engine import Command, Decide, Fact, Finish, RunTask, SetTimer

__all__ = [
    "FLAKY",
    "SEED_ENV",
    "FlakyParams",
    "FlakyState",
    "FlakyWorkflow",
    "Verdict",
    "pytest_payload",
    "rerun_seed",
    "shuffled_order",
]

FLAKY = "flaky"
"""The workflow's name (``aqe workflow start flaky ...``)."""
SEED_ENV = "AQE_RERUN_SEED"
"""The environment variable that carries each rerun's seed into the sandbox."""

Verdict = Literal["flaky", "order-dependent", "broken", "fixed", "undecided"]

PayloadBuilder = Callable[["FlakyParams", tuple[str, ...], int], str]
"""Builds a pytest task's payload: (params, node ids in run order, seed) -> JSON."""


class FlakyParams(msgspec.Struct, frozen=True, kw_only=True):
    """An instance's parameters (``WorkflowStarted.params``, all strings there)."""

    test: str = ""
    """The pytest node id, relative to ``workdir``; found from ``test_id`` when empty."""
    test_id: str = ""
    source: str = "."
    commit: str = ""
    workdir: str = "."
    python: str = "python"
    backend: str = "process"
    order: tuple[str, ...] | None = None
    """The suite's node ids in their original order; one suite run finds it when None."""
    quarantined: bool = False
    p_min: float = 0.25
    beta: float = 0.05
    max_runs: int = 40
    parallel: int = 1
    """Reruns of one phase in flight at once (more: sooner answers, some reruns wasted)."""
    shuffles: int = 3
    verify_runs: int = 2
    clean_passes: int = 5
    watch_every_s: float = 3600.0
    watch_rounds: int = 24
    wall_s: float = 300.0

    @classmethod
    def parse(cls, raw: dict[str, str]) -> FlakyParams:
        """Params from ``WorkflowStarted.params`` (unknown keys ignored).

        Raises:
            ValueError: a value of the wrong type, or neither ``test`` nor ``test_id``.
        """
        fields = {f for f in cls.__struct_fields__}
        data: dict[str, object] = {}
        for key, value in raw.items():
            if key not in fields:
                continue
            data[key] = json.loads(value) if key == "order" else value
        params = msgspec.convert(data, cls, strict=False)
        if not (params.test or params.test_id):
            raise ValueError("the flaky workflow needs a test (node id) or a test_id")
        return params

    @property
    def rule(self) -> SequentialRule:
        """The sequential rule these params ask for."""
        return SequentialRule(p_min=self.p_min, beta=self.beta, max_runs=self.max_runs)


class FlakyState(msgspec.Struct, kw_only=True):
    """An instance's state: a fold of its own events (see :class:`FlakyWorkflow`)."""

    instance_id: str
    params: FlakyParams
    error: str = ""
    target: str = ""
    order: tuple[str, ...] | None = None
    scheduled: dict[str, int] = msgspec.field(default_factory=dict)
    """Per context (``alone``, ``suite``, ``original``, ``shuffle``, ...), steps scheduled."""
    finished: dict[str, int] = msgspec.field(default_factory=dict)
    """Per context, steps whose result came back (with or without an observation)."""
    done_steps: list[str] = msgspec.field(default_factory=list)
    alone: Tally = Tally()
    original: Tally = Tally()
    shuffles: dict[str, bool] = msgspec.field(default_factory=dict)
    """Shuffle step -> whether the test passed in that order."""
    failing_order: tuple[str, ...] = ()
    bisection: Bisection | None = None
    verify: Tally = Tally()
    decided: dict[str, str] = msgspec.field(default_factory=dict)
    evidence: dict[str, str] = msgspec.field(default_factory=dict)
    watch_round: int = 0
    watch: Tally = Tally()
    ended: bool = False

    @property
    def reruns(self) -> int:
        """Sandbox runs asked for so far (the cost of the investigation)."""
        return sum(self.scheduled.values())


REPORT = "aqe-rerun.xml"
"""The JUnit XML report each rerun writes (the runner ingests it, so history sees it)."""


def pytest_payload(params: FlakyParams, tests: tuple[str, ...], seed: int) -> str:
    """The runner task of one rerun: pytest on ``tests`` (in that order; none: the suite).

    pytest-randomly is turned off so the order given is the order run; the seed goes to
    the sandbox as :data:`SEED_ENV`.
    """
    spec = SandboxSpec(
        source=params.source,
        commit=params.commit or None,
        backend=params.backend,
        limits=Limits(wall_s=params.wall_s),
        env={SEED_ENV: str(seed)},
        artefacts=(REPORT,),
    )
    argv = (
        params.python,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:randomly",
        "-p",
        "no:cacheprovider",
        f"--junitxml={REPORT}",
        *tests,
    )
    return runner_payload(spec, argv, workdir=params.workdir)


def rerun_seed(instance_id: str, step: str) -> int:
    """The seed of one rerun: the same instance and step always give the same seed."""
    digest = hashlib.sha256(f"rerun|{instance_id}|{step}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def shuffled_order(order: Sequence[str], seed: int) -> list[str]:
    """``order`` shuffled by ``seed`` (the same seed, the same order)."""
    shuffled = list(order)
    random.Random(seed).shuffle(shuffled)  # noqa: S311 - a reproducible order, not a secret
    return shuffled


def _identity(nodeid: str) -> str:
    return test_identity(*split_pytest_nodeid(nodeid))


def _context(step: str) -> str:
    return step.rsplit("-", 1)[0]


def _passed(outcome: TaskOutcome | None, target: str) -> bool | None:
    """Whether ``target`` passed in a task's outcome; None when the run says nothing of it."""
    if outcome is None or outcome.error:
        return None
    verdict = outcome.outcomes.get(target)
    if verdict is None:
        wanted = _identity(target)
        verdict = next((v for k, v in outcome.outcomes.items() if _safe_id(k) == wanted), None)
    if verdict is None:
        # Stopped by the sandbox (a hang, a runaway) before any report: a failure.
        return False if outcome.stopped else None
    if verdict == "passed":
        return True
    if verdict in ("failed", "error"):
        return False
    return None


def _safe_id(key: str) -> str:
    try:
        return _identity(key) if "::" in key else key
    except ValueError:
        return key


class FlakyWorkflow:
    """The flaky workflow for the engine (:class:`aqe.workflows.engine.Workflow`)."""

    name: str = FLAKY

    def __init__(self, payload: PayloadBuilder = pytest_payload) -> None:
        """``payload`` builds a pytest task's input (pure; see :data:`PayloadBuilder`)."""
        self._payload = payload

    def initial(self, started: WorkflowStarted) -> FlakyState:
        """A new investigation of the test the params name."""
        try:
            params = FlakyParams.parse(dict(started.params))
        except (ValueError, msgspec.ValidationError) as exc:
            return FlakyState(instance_id=started.instance_id, params=FlakyParams(), error=str(exc))
        return FlakyState(
            instance_id=started.instance_id,
            params=params,
            target=params.test,
            order=params.order,
        )

    # -- fold -------------------------------------------------------------------------------

    def apply(self, state: FlakyState, fact: Fact) -> FlakyState:
        """Count scheduled steps, fold each step's observation, record decisions."""
        event = fact.event
        if isinstance(event, WorkflowStepScheduled):
            ctx = _context(event.step)
            state.scheduled[ctx] = state.scheduled.get(ctx, 0) + 1
        elif isinstance(event, WorkflowStepFinished):
            if event.step in state.done_steps:
                return state
            state.done_steps.append(event.step)
            ctx = _context(event.step)
            state.finished[ctx] = state.finished.get(ctx, 0) + 1
            self._observe(state, event.step, ctx, event.outcome)
        elif isinstance(event, WorkflowDecided):
            state.decided.setdefault(event.key, event.decision)
            if event.key == "verdict" and not state.evidence:
                state.evidence = dict(event.data)
        elif isinstance(event, WorkflowTimerFired) and event.timer.startswith("watch-"):
            state.watch_round = max(state.watch_round, int(event.timer.split("-")[1]))
            state.watch = Tally()
        elif isinstance(event, WorkflowFinished):
            state.ended = True
        return state

    def _observe(self, state: FlakyState, step: str, ctx: str, outcome: TaskOutcome | None) -> None:
        if ctx == "suite":
            if outcome is not None and not state.target:
                wanted = state.params.test_id
                state.target = next(
                    (k for k in outcome.outcomes if "::" in k and _safe_id(k) == wanted), ""
                )
            # ``order``, not the keys of ``outcomes``: a stored event's dict keys are sorted.
            if outcome is not None and state.order is None and outcome.order:
                state.order = tuple(k for k in outcome.order if "::" in k)
        if not state.target or ("verdict" in state.decided and not ctx.startswith("watch")):
            return
        passed = _passed(outcome, state.target)
        if passed is None:
            return
        seed = rerun_seed(state.instance_id, step)
        if ctx == "alone":
            state.alone = state.alone.add(passed, seed)
        elif ctx in ("suite", "original"):
            state.original = state.original.add(passed, seed)
            if not passed and not state.failing_order:
                state.failing_order = tuple(self._prefix(state, None))
        elif ctx == "shuffle":
            state.shuffles[step] = passed
            if not passed and not state.failing_order:
                state.failing_order = tuple(self._prefix(state, seed))
        elif ctx == "bisect":
            b = state.bisection or start_bisection(*self._bisect_plan(state))
            state.bisection = b if b.done else observe(b, passed)
        elif ctx == "verify":
            state.verify = state.verify.add(passed, seed)
        elif ctx.startswith("watch") and ctx == f"watch{state.watch_round}":
            state.watch = state.watch.add(passed, seed)

    @staticmethod
    def _prefix(state: FlakyState, seed: int | None) -> list[str]:
        """The tests before the target in the original order, or in the shuffle of ``seed``."""
        order = list(state.order or ())
        if seed is not None:
            order = shuffled_order(order, seed)
        if state.target not in order:
            return []
        return order[: order.index(state.target)]

    # -- decision ---------------------------------------------------------------------------

    def decide(self, state: FlakyState, now_ns: int) -> Sequence[Command]:
        """The steps, decisions and timers that follow from the state (see the module doc)."""
        if state.ended:
            return []
        if state.error:
            return [Finish(status="failed", reasons=(state.error,))]
        if "verdict" not in state.decided:
            plan = self._investigate(state)
            if isinstance(plan, list):
                return plan
            verdict, reasons, data = plan
            return [Decide(key="verdict", decision=verdict, reasons=reasons, data=data)]
        return self._act(state, now_ns)

    def _step(self, state: FlakyState, ctx: str, index: int, tests: tuple[str, ...]) -> RunTask:
        step = f"{ctx}-{index}"
        seed = rerun_seed(state.instance_id, step)
        return RunTask(
            step=step,
            kind="pytest",
            payload=self._payload(state.params, tests, seed),
            params={"seed": str(seed), "context": ctx},
            reasons=(f"{ctx} rerun {index} of {state.target or state.params.test_id}",),
        )

    def _batch(
        self,
        state: FlakyState,
        ctx: str,
        tests: Callable[[int], tuple[str, ...]],
        *,
        limit: int,
        parallel: int | None = None,
    ) -> list[Command]:
        """Steps ``ctx-1..`` up to ``parallel`` beyond those finished, at most ``limit``."""
        done = state.finished.get(ctx, 0)
        width = state.params.parallel if parallel is None else parallel
        upto = min(limit, done + max(1, width))
        return [self._step(state, ctx, i, tests(i)) for i in range(1, upto + 1)]

    def _investigate(
        self, state: FlakyState
    ) -> list[Command] | tuple[Verdict, tuple[str, ...], dict[str, str]]:
        p = state.params
        rule = p.rule
        if not state.target:
            if state.finished.get("suite", 0) >= 2:
                return self._verdict(state, "undecided", f"{p.test_id} is not in the suite")
            return self._batch(state, "suite", lambda _: (), limit=2, parallel=1)
        target = state.target
        alone = rule.judge(state.alone)
        if alone == "running":
            # No more in flight than the rule still needs if every outcome agrees.
            needed = max(1, rule.stable_runs() - state.alone.runs)
            return self._batch(
                state,
                "alone",
                lambda _: (target,),
                limit=2 * p.max_runs,
                parallel=min(p.parallel, needed),
            )
        if alone == "mixed":
            return self._verdict(state, "flaky", "it both passed and failed alone")
        if alone == "undecided":
            return self._verdict(state, "undecided", "no answer alone within max_runs")
        if state.order is None:
            if state.finished.get("suite", 0) >= 2:
                return self._verdict(state, "undecided", "the suite's order could not be found")
            return self._batch(state, "suite", lambda _: (), limit=2, parallel=1)
        prefix = tuple(self._prefix(state, None))
        if prefix and state.original.runs == 0:
            if state.finished.get("original", 0) >= 3:
                return self._verdict(state, "undecided", "no result in the original order")
            return self._batch(state, "original", lambda _: (*prefix, target), limit=3, parallel=1)
        in_order_fails = state.original.failures > 0
        if alone == "fails":
            if prefix and not in_order_fails:
                return self._bisect(state)
            return self._verdict(state, "broken", "it failed alone and in its order")
        if in_order_fails or not all(state.shuffles.values()):
            return self._bisect(state)
        if len(state.shuffles) < p.shuffles and state.finished.get("shuffle", 0) < 2 * p.shuffles:

            def shuffled(i: int) -> tuple[str, ...]:
                order = shuffled_order(
                    state.order or (), rerun_seed(state.instance_id, f"shuffle-{i}")
                )
                return tuple(order[: order.index(target) + 1]) if target in order else (target,)

            return self._batch(
                state,
                "shuffle",
                shuffled,
                limit=2 * p.shuffles,
                parallel=min(p.parallel, p.shuffles - len(state.shuffles)),
            )
        return self._verdict(state, "fixed", "it passed alone, in its order and shuffled")

    def _bisect_plan(self, state: FlakyState) -> tuple[ODKind, tuple[str, ...]]:
        """Victim or brittle, and the prefix to bisect (the same answer in fold and decide)."""
        if state.params.rule.judge(state.alone) == "fails":
            return "brittle", tuple(self._prefix(state, None))
        if state.original.failures > 0:
            return "victim", tuple(self._prefix(state, None))
        return "victim", state.failing_order

    def _bisect(
        self, state: FlakyState
    ) -> list[Command] | tuple[Verdict, tuple[str, ...], dict[str, str]]:
        kind, prefix = self._bisect_plan(state)
        if not prefix:
            return self._verdict(state, "flaky", "it failed in an order with nothing before it")
        b = state.bisection or start_bisection(kind, prefix)
        if not b.done:
            probe = next_probe(b)
            index = state.finished.get("bisect", 0) + 1
            return [self._step(state, "bisect", index, (*probe, state.target))]
        culprits = b.culprits or ()
        p = state.params
        if (
            state.verify.runs < p.verify_runs
            and state.finished.get("verify", 0) < 2 * p.verify_runs
        ):
            return self._batch(
                state,
                "verify",
                lambda _: (*culprits, state.target),
                limit=2 * p.verify_runs,
                parallel=p.verify_runs,
            )
        reproduced = state.verify.failures if kind == "victim" else state.verify.passes
        if reproduced < p.verify_runs:
            return self._verdict(
                state, "flaky", f"its {kind} order did not reproduce in verification"
            )
        who = "polluter" if kind == "victim" else "state-setter"
        return self._verdict(
            state,
            "order-dependent",
            f"{kind}: it {'fails' if kind == 'victim' else 'passes'} after its {who} "
            f"{', '.join(culprits)} every time",
            kind=kind,
            culprits=culprits,
        )

    def _verdict(
        self,
        state: FlakyState,
        verdict: Verdict,
        why: str,
        *,
        kind: str = "",
        culprits: tuple[str, ...] = (),
    ) -> tuple[Verdict, tuple[str, ...], dict[str, str]]:
        rule = state.params.rule
        alone = state.alone.interval(rule.z)
        judged = rule.judge(state.alone)
        data = {
            "verdict": verdict,
            "test": state.target,
            "test_id": state.params.test_id or (_identity(state.target) if state.target else ""),
            "failure_rate": f"{alone.rate:.3f}",
            "interval": f"[{alone.low:.3f}, {alone.high:.3f}]",
            "runs_alone": str(alone.runs),
            "failures_alone": str(alone.failures),
            "failing_seeds": ",".join(str(s) for s in state.alone.failing_seeds),
            "confidence": f"{rule.confidence(judged):.3f}",
            "reruns": str(state.reruns),
            "shuffles_failed": str(sum(not ok for ok in state.shuffles.values())),
        }
        if state.failing_order and verdict == "order-dependent":
            data["failing_order"] = json.dumps([*state.failing_order, state.target])
        if kind:
            data["kind"] = kind
            data["polluter" if kind == "victim" else "state_setter"] = ",".join(culprits)
        reasons = (
            why,
            f"failure rate alone {alone.rate:.2f} (95% Wilson [{alone.low:.2f}, {alone.high:.2f}])"
            f" over {alone.runs} reruns",
        )
        return verdict, reasons, data

    # -- acting on the verdict ----------------------------------------------------------------

    def _act(self, state: FlakyState, now_ns: int) -> list[Command]:
        p = state.params
        verdict = state.decided["verdict"]
        data = state.evidence
        result: dict[str, str] = {k: data[k] for k in ("verdict", "test", "reruns") if k in data}
        if verdict in ("flaky", "order-dependent"):
            if "quarantine" not in state.decided:
                return [
                    Decide(
                        key="quarantine",
                        decision="quarantine",
                        reasons=(f"{verdict}: quarantined until {p.clean_passes} clean passes",),
                        data=data,
                    )
                ]
            return self._watch(state, now_ns, result)
        if verdict == "fixed" and p.quarantined and "unquarantine" not in state.decided:
            return [
                Decide(
                    key="unquarantine",
                    decision="unquarantine",
                    reasons=("no failure reproduced",),
                    data=data,
                )
            ]
        status: WorkflowStatus = "gave-up" if verdict == "undecided" else "succeeded"
        return [Finish(status=status, reasons=(f"verdict: {verdict}",), result=result)]

    def _watch(self, state: FlakyState, now_ns: int, result: dict[str, str]) -> list[Command]:
        p = state.params
        if "unquarantine" in state.decided:
            return [Finish(status="succeeded", reasons=("unquarantined",), result=result)]
        r = state.watch_round
        if r == 0 or state.watch.failures > 0:
            if r >= p.watch_rounds:
                return [
                    Finish(
                        status="succeeded",
                        reasons=(f"still failing after {r} watch rounds; stays quarantined",),
                        result=result,
                    )
                ]
            due = now_ns + int(p.watch_every_s * 1e9)
            return [
                SetTimer(timer=f"watch-{r + 1}", due_ns=due, reason="rerun the quarantined test")
            ]
        if state.watch.passes >= p.clean_passes:
            return [
                Decide(
                    key="unquarantine",
                    decision="unquarantine",
                    reasons=(f"{p.clean_passes} clean passes in a row",),
                    data={**state.evidence, "clean_passes": str(state.watch.passes)},
                )
            ]
        return self._batch(state, f"watch{r}", lambda _: (state.target,), limit=2 * p.clean_passes)
