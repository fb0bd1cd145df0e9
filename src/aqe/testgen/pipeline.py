"""One batch of test generation: baseline → generate → run each candidate N times → keep.

Everything that runs project or generated code runs in a sandbox made from the job's
source (:mod:`aqe.sandbox`): the baseline measurement of the existing suite, each
generator's command, and each candidate's N runs (one fresh working copy per candidate,
each run a new process, coverage measured by :mod:`aqe.testgen._measure`). This module
only orchestrates; the verdicts come from the pure keep rule (:mod:`aqe.testgen.keep`),
and :func:`batch_events` turns a result into the events the log keeps.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import msgspec

from aqe.errors import AqeError, ConfigError, SandboxError
from aqe.events import Event
from aqe.events.testgen import (
    CoverageTotals,
    GeneratedTestKept,
    GeneratedTestRejected,
    GenerationMeasured,
)
from aqe.sandbox import Limits, Sandbox, SandboxSpec
from aqe.testgen.generators import OUT_DIR, Candidate, Generator, GeneratorCommand
from aqe.testgen.keep import Evaluated, Verdict, judge
from aqe.testgen.measure import (
    MEASURE_OUT,
    FileSets,
    Measurement,
    measure_argv,
    parse_measurement,
    totals_of,
)

__all__ = [
    "BatchResult",
    "GenerationJob",
    "Progress",
    "batch_events",
    "batch_id_of",
    "choose_backend",
    "evaluate_candidate",
    "measure_suite",
    "run_batch",
]

_MAX_CODE = 64_000

Progress = Callable[[str], None]


class GenerationJob(msgspec.Struct, frozen=True, kw_only=True):
    """What one batch does.

    Attributes:
        source: the project folder (copied into every sandbox run).
        package: what coverage measures (``--source``: a package or module name).
        targets: the modules to generate tests for.
        generators: generator names, in order.
        tests: the existing suite's pytest arguments (paths), run for the baseline.
        omit: coverage ``--omit`` glob (the tests themselves).
        seed: given to every generator.
        budget_s: search time per target and generator (Pynguin), wall-clock cap for
            writing (ghostwriter).
        max_candidates: most candidates judged per target and generator.
        runs: the keep rule's N.
        backend: the sandbox backend generated code runs in.
        parallel: candidates measured at once.
        candidate_wall_s: wall-clock limit of one candidate's N runs.
        python: the interpreter that runs pytest and coverage in the sandbox.
        instance_id: the workflow instance the batch belongs to, if any.
    """

    source: str
    package: str
    targets: tuple[str, ...]
    generators: tuple[str, ...] = ("ghostwriter",)
    tests: tuple[str, ...] = ()
    omit: str = ""
    seed: int = 0
    budget_s: float = 30.0
    max_candidates: int = 10
    runs: int = 3
    backend: str = "namespace"
    parallel: int = 2
    candidate_wall_s: float = 120.0
    python: str = sys.executable
    instance_id: str = ""
    batch_id: str = ""
    """Given by a workflow step (its task id); empty: a new id per run."""

    def __post_init__(self) -> None:
        if self.runs < 1:
            raise ConfigError(f"testgen: runs must be >= 1, not {self.runs}")
        if not self.targets:
            raise ConfigError("testgen: give at least one target module")
        if self.parallel < 1 or self.max_candidates < 1:
            raise ConfigError("testgen: parallel and max_candidates must be >= 1")


def batch_id_of(job: GenerationJob) -> str:
    """The job's batch id, else a new one (generation is not repeatable run to run)."""
    if job.batch_id:
        return job.batch_id
    raw = msgspec.json.encode(job, order="deterministic") + uuid.uuid4().bytes
    return f"tg-{hashlib.sha256(raw).hexdigest()[:20]}"


class BatchResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a batch found."""

    batch_id: str
    job: GenerationJob
    before: dict[str, CoverageTotals]
    after: dict[str, CoverageTotals]
    verdicts: list[Verdict]
    generated: dict[str, int]
    kept: dict[str, int]
    generation_errors: dict[str, str] = msgspec.field(default_factory=dict)
    """``generator:target`` -> why it wrote nothing."""
    wall_s: float = 0.0


def _spec(
    job: GenerationJob, *, wall_s: float, env: Mapping[str, str] | None = None
) -> SandboxSpec:
    return SandboxSpec(
        source=job.source,
        backend=job.backend,
        limits=Limits(wall_s=wall_s, memory_mb=2048, processes=128, network=False),
        env={"PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", **(env or {})},
        artefacts=(MEASURE_OUT, f"{OUT_DIR}/**/*.py", f"{OUT_DIR}/*.txt"),
    )


async def _measure(
    sandbox: Sandbox,
    job: GenerationJob,
    pytest_args: Sequence[str],
    *,
    runs: int,
    wall_s: float,
    candidate: Candidate | None = None,
) -> tuple[Measurement | None, str | None, str]:
    argv = measure_argv(
        job.python,
        source=job.package,
        omit=job.omit,
        runs=runs,
        out=MEASURE_OUT,
        pytest_args=pytest_args,
        candidate=(candidate.name, candidate.code) if candidate is not None else None,
        stop_on_failure=candidate is not None,
    )
    try:
        result = await sandbox.run(_spec(job, wall_s=wall_s), argv)
    except AqeError as exc:
        return None, None, f"{type(exc).__name__}: {exc}"
    data = result.artefacts.get(MEASURE_OUT)
    if result.stopped is not None:
        return None, result.stopped, result.stderr[-1000:]
    if data is None:
        return None, None, f"exit {result.exit_code}: {result.stderr[-1000:]}"
    return parse_measurement(data, origin=f"{job.source}: {MEASURE_OUT}"), None, ""


async def evaluate_candidate(job: GenerationJob, sandbox: Sandbox, cand: Candidate) -> Evaluated:
    """Run one candidate ``job.runs`` times in one fresh copy, under coverage.

    The runs stop at the first failure (one failure already decides the verdict).
    """
    m, stop, err = await _measure(
        sandbox, job, [cand.name], runs=job.runs, wall_s=job.candidate_wall_s, candidate=cand
    )
    return Evaluated(candidate=cand, measurement=m, stopped=stop, error=err)


async def measure_suite(job: GenerationJob, sandbox: Sandbox) -> dict[str, FileSets]:
    """What the existing suite (``job.tests``) covers, measured once in a sandbox.

    Raises:
        SandboxError: no measurement came back (the suite could not run).
        ConfigError: the measurement holds no file of ``job.package``.
    """
    baseline, stopped, error = await _measure(
        sandbox, job, job.tests, runs=1, wall_s=max(300.0, job.candidate_wall_s)
    )
    if baseline is None:
        raise SandboxError(
            f"testgen: the existing suite of {job.source} could not be measured "
            f"({stopped or 'no measurement'}): {error[-500:]}"
        )
    if not baseline.files:
        raise ConfigError(
            f"testgen: coverage of {job.package!r} measured no file in {job.source} "
            f"(suite exit {', '.join(map(str, baseline.exit_codes))}): is the package name "
            "right, and importable from the project's root?"
        )
    return dict(baseline.files)


async def run_batch(
    job: GenerationJob,
    sandbox: Sandbox,
    generators: Mapping[str, Generator],
    *,
    progress: Progress | None = None,
) -> BatchResult:
    """Run one batch (see the module docstring).

    Raises:
        SandboxError: the baseline could not be measured (the suite does not run).
        ConfigError: a generator named by the job is missing from ``generators``.
    """
    say = progress or (lambda _msg: None)
    began = time.perf_counter()
    batch_id = batch_id_of(job)
    missing = [g for g in job.generators if g not in generators]
    if missing:
        raise ConfigError(f"testgen: no generator {', '.join(missing)}")
    say(f"baseline: measuring the existing suite of {job.source}")
    baseline = await measure_suite(job, sandbox)
    gate = asyncio.Semaphore(job.parallel)
    errors: dict[str, str] = {}

    async def write(name: str, target: str, cmd: GeneratorCommand) -> list[Candidate]:
        gen = generators[name]
        async with gate:
            say(f"{name}: writing tests for {target}")
            try:
                result = await sandbox.run(_spec(job, wall_s=cmd.wall_s, env=cmd.env), cmd.argv)
            except AqeError as exc:
                errors[f"{name}:{target}"] = f"{type(exc).__name__}: {exc}"
                return []
        found = gen.candidates(
            target, seed=job.seed, max_candidates=job.max_candidates, files=result.artefacts
        )
        if not found:
            why = result.stopped or f"exit {result.exit_code}"
            errors[f"{name}:{target}"] = f"no tests ({why}): {result.stderr[-500:].strip()}"
        return found

    # Generators write at once (``parallel`` at a time); their candidates keep job order.
    # Every command first: a generator that cannot run here (no Pynguin venv) fails the
    # batch before anything starts.
    commands = [
        (
            name,
            target,
            generators[name].command(
                target, seed=job.seed, budget_s=job.budget_s, max_candidates=job.max_candidates
            ),
        )
        for name in job.generators
        for target in job.targets
    ]
    written = await asyncio.gather(*(write(n, t, c) for n, t, c in commands))
    candidates = [c for found in written for c in found]
    say(f"judging {len(candidates)} candidates, {job.runs} runs each")
    done = 0

    async def evaluate(cand: Candidate) -> Evaluated:
        nonlocal done
        if cand.unresolved:
            return Evaluated(candidate=cand)
        async with gate:
            found = await evaluate_candidate(job, sandbox, cand)
        done += 1
        m = found.measurement
        say(f"[{done}/{len(candidates)}] {cand.name}: {m.passed if m else 0}/{job.runs} passed")
        return found

    evaluated = await asyncio.gather(*(evaluate(c) for c in candidates))
    verdicts, after = judge(evaluated, baseline, runs=job.runs)
    generated: dict[str, int] = {g: 0 for g in job.generators}
    kept: dict[str, int] = {g: 0 for g in job.generators}
    for v in verdicts:
        generated[v.candidate.generator] += 1
        kept[v.candidate.generator] += int(v.kept)
    return BatchResult(
        batch_id=batch_id,
        job=job,
        before=totals_of(baseline),
        after=totals_of(after),
        verdicts=verdicts,
        generated=generated,
        kept=kept,
        generation_errors=errors,
        wall_s=round(time.perf_counter() - began, 2),
    )


def batch_events(result: BatchResult) -> list[Event]:
    """The batch as events: one verdict per candidate, then the measurement (last)."""
    job = result.job
    out: list[Event] = []
    for v in result.verdicts:
        c = v.candidate
        cid = c.candidate_id(result.batch_id)
        if v.kept:
            out.append(
                GeneratedTestKept(
                    candidate_id=cid,
                    batch_id=result.batch_id,
                    target=c.target,
                    generator=c.generator,
                    seed=c.seed,
                    name=c.name,
                    code=c.code[:_MAX_CODE],
                    runs=v.runs,
                    lines_gained=v.lines_gained,
                    branches_gained=v.branches_gained,
                    gained_lines={p: tuple(sorted(s)) for p, s in sorted(v.gained_lines.items())},
                    instance_id=job.instance_id,
                )
            )
        else:
            out.append(
                GeneratedTestRejected(
                    candidate_id=cid,
                    batch_id=result.batch_id,
                    target=c.target,
                    generator=c.generator,
                    seed=c.seed,
                    name=c.name,
                    reason=v.reason,
                    runs=v.runs,
                    passed=v.passed,
                    detail=v.detail[-2000:],
                    code=c.code[:_MAX_CODE],
                    instance_id=job.instance_id,
                )
            )
    out.append(
        GenerationMeasured(
            batch_id=result.batch_id,
            source=str(Path(job.source)),
            targets=job.targets,
            generators=job.generators,
            seed=job.seed,
            runs=job.runs,
            sandbox=job.backend,
            before=result.before,
            after=result.after,
            generated=result.generated,
            kept=result.kept,
            wall_s=result.wall_s,
            instance_id=job.instance_id,
        )
    )
    return out


def choose_backend(name: str) -> str:
    """``auto``: ``namespace`` where it works here (no network, read-only host), else ``process``.

    Raises:
        SandboxUnavailableError: a named backend that cannot run here.
    """
    from aqe.sandbox import SandboxUnavailableError, open_sandbox

    if name != "auto":
        open_sandbox(name).close()  # type: ignore[attr-defined]
        return name
    try:
        open_sandbox("namespace").close()  # type: ignore[attr-defined]
    except SandboxUnavailableError:
        return "process"
    return "namespace"
