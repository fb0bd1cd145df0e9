"""The ``testgen`` runner capability: what a runner does with a test-generation task.

A workflow step of kind ``testgen`` carries a :class:`TestgenTask` as its payload, in
one of three modes:

* ``gaps``: which modules to generate for. From the coverage projection
  (:mod:`aqe.coverage`, the least-covered files of the package, weighted by change) when
  the log holds coverage of the package; else from a baseline measurement of the
  existing suite in a sandbox, ranked by missing lines plus untaken branch arcs;
* ``generate``: one batch (:func:`aqe.testgen.pipeline.run_batch`) in the sandbox the job
  names, its events appended; a batch already in the log (a retried task) is not run
  again;
* ``report``: the instance's report rendered from the log, written as Markdown and HTML
  under ``report_dir``.

The result is a :class:`~aqe.events.TaskOutcome` whose ``stdout_tail`` is one JSON
object (:class:`StepSummary`), which the workflow folds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

import msgspec

from aqe.coordination.tasks import TaskEntry
from aqe.errors import AqeError, ConfigError
from aqe.events import TaskOutcome
from aqe.events.testgen import GenerationMeasured
from aqe.log.port import EventLog
from aqe.sandbox import Sandbox
from aqe.testgen.generators import make_generator
from aqe.testgen.measure import FileSets, sum_totals
from aqe.testgen.pipeline import GenerationJob, batch_events, choose_backend, run_batch
from aqe.testgen.store import read_generation, record_batch

__all__ = [
    "TESTGEN",
    "StepSummary",
    "TestgenHandler",
    "TestgenTask",
    "gaps_from_files",
    "module_of",
    "summary_of",
]

TESTGEN = "testgen"
"""The runner capability (and task kind) of test-generation steps."""

_SUMMARY_CAP = 3500


class TestgenTask(msgspec.Struct, frozen=True, kw_only=True):
    """The payload of a ``testgen`` task."""

    __test__ = False  # not a pytest class

    mode: Literal["gaps", "generate", "report"]
    job: GenerationJob
    """For ``gaps``: the source, package, suite and sandbox (targets ignored)."""
    gaps: int = 3
    report_dir: str = ""


class StepSummary(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a ``testgen`` step reports back to its workflow (JSON in ``stdout_tail``)."""

    targets: tuple[str, ...] = ()
    """``gaps``: the modules chosen, worst first."""
    gaps_from: str = ""
    """``gaps``: ``coverage-projection`` or ``baseline``."""
    batch_id: str = ""
    line_before: float = 0.0
    line_after: float = 0.0
    branch_before: float = 0.0
    branch_after: float = 0.0
    generated: int = 0
    kept: int = 0
    files: tuple[str, ...] = ()
    """``report``: the files written."""


def module_of(path: str) -> str:
    """``toolz/itertoolz.py`` -> ``toolz.itertoolz`` (``pkg/__init__.py`` -> ``pkg``)."""
    mod = path.removesuffix(".py").replace("/", ".")
    return mod.removesuffix(".__init__")


def gaps_from_files(files: Mapping[str, FileSets], *, limit: int) -> list[str]:
    """Modules of the measured files, most uncovered lines plus branch arcs first (pure)."""
    scored = []
    for path, sets in files.items():
        missing = len(sets.statements - sets.lines) + len(sets.arcs - sets.taken)
        if missing and not path.endswith("__init__.py"):
            scored.append((-missing, path))
    return [module_of(p) for _, p in sorted(scored)[:limit]]


def summary_of(batch: GenerationMeasured) -> StepSummary:
    """The step summary of a finished batch (coverage of the targets' files)."""
    from aqe.testgen.report import target_files

    files = sorted({f for t in batch.targets for f in target_files(t, batch.before)})
    before = sum_totals(batch.before[f] for f in files)
    after = sum_totals(batch.after.get(f, batch.before[f]) for f in files)
    return StepSummary(
        batch_id=batch.batch_id,
        line_before=round(before.line_pct, 2),
        line_after=round(after.line_pct, 2),
        branch_before=round(before.branch_pct, 2),
        branch_after=round(after.branch_pct, 2),
        generated=sum(batch.generated.values()),
        kept=sum(batch.kept.values()),
    )


def _outcome(summary: StepSummary, began: float) -> TaskOutcome:
    text = msgspec.json.encode(summary).decode()
    if len(text) > _SUMMARY_CAP:
        text = msgspec.json.encode(msgspec.structs.replace(summary, targets=())).decode()
    return TaskOutcome(exit_code=0, stdout_tail=text, wall_s=round(time.perf_counter() - began, 3))


SandboxFor = Callable[[str], Sandbox]


class TestgenHandler:
    """Runs ``testgen`` tasks for a runner agent (see the module docstring).

    Args:
        log: where batches are recorded and read back.
        data_dir: the data directory (Pynguin's venv lives under it).
    """

    __test__ = False

    def __init__(self, log: EventLog, data_dir: Path) -> None:
        self.log = log
        self.data_dir = data_dir

    async def __call__(self, entry: TaskEntry, sandbox_for: SandboxFor) -> TaskOutcome:
        """Run one task; an :class:`AqeError` becomes the outcome's ``error``."""
        began = time.perf_counter()
        try:
            task = msgspec.json.decode(entry.payload, type=TestgenTask)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return TaskOutcome(error=f"ConfigError: testgen task payload: {exc}")
        try:
            job = msgspec.structs.replace(task.job, backend=choose_backend(task.job.backend))
            if not Path(job.python).exists():  # submitted from another machine
                job = msgspec.structs.replace(job, python=sys.executable)
            if task.mode == "gaps":
                summary = await self._gaps(job, sandbox_for, task.gaps)
            elif task.mode == "generate":
                summary = await self._generate(job, sandbox_for(job.backend))
            else:
                summary = await self._report(job, task.report_dir)
        except AqeError as exc:
            return TaskOutcome(error=f"{type(exc).__name__}: {exc}")
        return _outcome(summary, began)

    async def _gaps(self, job: GenerationJob, sandbox_for: SandboxFor, limit: int) -> StepSummary:
        from_projection = await self._projection_gaps(job.package, limit)
        if from_projection:
            return StepSummary(targets=tuple(from_projection), gaps_from="coverage-projection")
        from aqe.testgen.pipeline import measure_suite

        files = await measure_suite(job, sandbox_for(job.backend))
        return StepSummary(targets=tuple(gaps_from_files(files, limit=limit)), gaps_from="baseline")

    async def _projection_gaps(self, package: str, limit: int) -> list[str]:
        from aqe.coverage.projection import CoverageProjection
        from aqe.coverage.queries import gaps

        projection = CoverageProjection()
        state = projection.initial()
        prefix = package.replace(".", "/")
        try:
            for stream in projection.streams:
                async for env in self.log.read(stream):
                    try:
                        event = env.decode()
                    except ValueError:
                        continue
                    state = projection.apply(state, env, event)
        except AqeError:
            return []  # no coverage stream on this server yet: measure instead
        found = [g.path for g in gaps(state, prefix=prefix, limit=None)]
        found = [p for p in found if not p.endswith("__init__.py") and "/tests/" not in p]
        return [module_of(p) for p in found[:limit]]

    async def _generate(self, job: GenerationJob, sandbox: Sandbox) -> StepSummary:
        done = await read_generation(self.log, batch_ids=[job.batch_id])
        if job.batch_id in done.batches:  # a retry of a task whose batch is recorded
            return summary_of(done.batches[job.batch_id])
        gens = {g: make_generator(g, data_dir=self.data_dir) for g in job.generators}
        result = await run_batch(job, sandbox, gens)
        events = batch_events(result)
        await record_batch(self.log, events)
        return summary_of(next(e for e in events if isinstance(e, GenerationMeasured)))

    async def _report(self, job: GenerationJob, report_dir: str) -> StepSummary:
        from aqe.testgen.report import render_html, render_markdown

        state = await read_generation(self.log, instance_id=job.instance_id)
        if not report_dir:
            raise ConfigError("testgen report: no report_dir")
        out = Path(report_dir)
        out.mkdir(parents=True, exist_ok=True)
        title = f"Test generation: workflow {job.instance_id}"
        md = out / f"testgen-{job.instance_id}.md"
        page = out / f"testgen-{job.instance_id}.html"
        md.write_text(render_markdown(state, title=title), encoding="utf-8")
        page.write_text(render_html(state, title=title), encoding="utf-8")
        kept = len(state.finished_kept())
        return StepSummary(
            files=(str(md), str(page)), kept=kept, generated=kept + len(state.rejected)
        )
