"""``aqe testgen setup|generate|eval|kept|write|report``: generated tests, kept by rule.

Parsing and rendering only; the work lives in :mod:`aqe.testgen`.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from aqe.app import AppContext, open_log, run
from aqe.cli._context import console, json_option, pass_app, print_json
from aqe.cli._table import emit_table

if TYPE_CHECKING:
    from aqe.testgen.pipeline import BatchResult, GenerationJob
    from aqe.testgen.store import GenerationLog


def _csv(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(v.strip() for raw in values for v in raw.split(",") if v.strip())


def _job_options(func: Any) -> Any:
    options = [
        click.option(
            "--generator",
            "generators",
            multiple=True,
            default=("ghostwriter",),
            show_default=True,
            help="ghostwriter and/or pynguin (repeat or comma-separate).",
        ),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option(
            "--budget",
            type=float,
            default=30.0,
            show_default=True,
            help="Search seconds per module and generator (Pynguin).",
        ),
        click.option(
            "--max-candidates",
            type=int,
            default=10,
            show_default=True,
            help="Most tests judged per module and generator.",
        ),
        click.option(
            "--runs",
            type=int,
            default=3,
            show_default=True,
            help="Passing runs in a row a test needs to be kept.",
        ),
        click.option(
            "--backend",
            type=click.Choice(["auto", "process", "namespace", "container"]),
            default="auto",
            show_default=True,
            help="Sandbox for generated code (auto: namespace where it works).",
        ),
        click.option("--parallel", type=int, default=2, show_default=True),
        json_option,
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.group()
def testgen() -> None:
    """Generate tests in sandboxes (Hypothesis ghostwriter, Pynguin); keep those that earn it."""


@testgen.command("setup")
@pass_app
def setup(app: AppContext) -> None:
    """Create Pynguin's own virtual environment under the data directory."""
    from aqe.testgen.generators import PYNGUIN_VERSION, pynguin_venv, setup_pynguin

    venv = pynguin_venv(app.settings.data_dir)
    console(stderr=True).print(f"installing pynguin=={PYNGUIN_VERSION} into {venv} ...")
    binary = setup_pynguin(venv)
    console().print(f"pynguin ready: {binary}")


def _run_job(app: AppContext, job: GenerationJob) -> BatchResult:
    from aqe.sandbox import open_sandbox
    from aqe.testgen.generators import make_generator
    from aqe.testgen.pipeline import batch_events, run_batch
    from aqe.testgen.store import record_batch

    gens = {g: make_generator(g, data_dir=app.settings.data_dir) for g in job.generators}
    for gen in gens.values():
        gen.command(job.targets[0], seed=job.seed, budget_s=job.budget_s, max_candidates=1)
    err = console(stderr=True)
    if job.backend == "process":
        err.print(
            "warning: the process sandbox does not isolate the network or the file system; "
            "generated code runs as you (install bubblewrap for the namespace sandbox)"
        )

    async def go() -> BatchResult:
        box = open_sandbox(job.backend)
        try:
            result = await run_batch(job, box, gens, progress=lambda m: err.print(m))
        finally:
            box.close()  # type: ignore[attr-defined]
        async with open_log(app) as log:
            await record_batch(log, batch_events(result))
        return result

    return run(go())


def _render_result(result: BatchResult, as_json: bool) -> None:
    import msgspec

    from aqe.testgen.measure import sum_totals

    before = sum_totals(result.before.values())
    after = sum_totals(result.after.values())
    summary = {
        "batch_id": result.batch_id,
        "targets": list(result.job.targets),
        "sandbox": result.job.backend,
        "line_pct_before": round(before.line_pct, 2),
        "line_pct_after": round(after.line_pct, 2),
        "branch_pct_before": round(before.branch_pct, 2),
        "branch_pct_after": round(after.branch_pct, 2),
        "generated": result.generated,
        "kept": result.kept,
        "rejected": {
            r: sum(1 for v in result.verdicts if v.reason == r)
            for r in sorted({v.reason for v in result.verdicts if not v.kept})
        },
        "generation_errors": result.generation_errors,
        "wall_s": result.wall_s,
        "before": msgspec.to_builtins(result.before),
        "after": msgspec.to_builtins(result.after),
    }
    if as_json:
        print_json(summary)
        return
    out = console()
    out.print(
        f"batch {result.batch_id}: lines {before.line_pct:.1f}% -> {after.line_pct:.1f}%, "
        f"branches {before.branch_pct:.1f}% -> {after.branch_pct:.1f}% "
        f"({result.wall_s:.0f} s, sandbox {result.job.backend})"
    )
    rows = [
        (g, str(result.generated.get(g, 0)), str(result.kept.get(g, 0)))
        for g in result.job.generators
    ]
    emit_table(["generator", "generated", "kept"], rows)
    for where, why in result.generation_errors.items():
        out.print(f"{where}: {why}")


def _job(
    source: str,
    package: str,
    targets: tuple[str, ...],
    tests: tuple[str, ...],
    omit: str,
    opts: dict[str, Any],
) -> GenerationJob:
    from aqe.testgen.generators import generator_names
    from aqe.testgen.pipeline import GenerationJob, choose_backend

    return GenerationJob(
        source=source,
        package=package,
        targets=_csv(targets),
        generators=generator_names(_csv(opts["generators"])),
        tests=tests,
        omit=omit,
        seed=opts["seed"],
        budget_s=opts["budget"],
        max_candidates=opts["max_candidates"],
        runs=opts["runs"],
        backend=choose_backend(opts["backend"]),
        parallel=opts["parallel"],
    )


@testgen.command("generate")
@click.argument("source", type=click.Path(exists=True, file_okay=False))
@click.option("--target", "targets", multiple=True, required=True, help="Module to test.")
@click.option("--package", required=True, help="What coverage measures (package or module).")
@click.option("--tests", "tests", multiple=True, help="The existing suite (pytest paths).")
@click.option("--omit", default="", help="Coverage --omit glob (e.g. the tests).")
@_job_options
@pass_app
def generate(
    app: AppContext,
    /,
    source: str,
    targets: tuple[str, ...],
    package: str,
    tests: tuple[str, ...],
    omit: str,
    **opts: Any,
) -> None:
    """Generate tests for modules of SOURCE, keep those that pass N times and add coverage."""
    job = _job(str(Path(source).resolve()), package, targets, tests, omit, opts)
    _render_result(_run_job(app, job), opts["as_json"])


@testgen.command("eval")
@click.option("--package", default="toolz", show_default=True, help="An installed package.")
@click.option(
    "--remove",
    multiple=True,
    default=("test_dicttoolz.py", "test_itertoolz.py"),
    show_default=True,
    help="Test files to delete from the package's tests/ first.",
)
@click.option(
    "--target",
    "targets",
    multiple=True,
    default=("toolz.dicttoolz", "toolz.itertoolz"),
    show_default=True,
    help="Modules to generate tests for.",
)
@click.option("--workdir", type=click.Path(file_okay=False), help="Keep the prepared copy here.")
@_job_options
@pass_app
def eval_(
    app: AppContext,
    /,
    package: str,
    remove: tuple[str, ...],
    targets: tuple[str, ...],
    workdir: str | None,
    **opts: Any,
) -> None:
    """Remove some of a real package's test files, generate, and measure before and after."""
    from aqe.testgen.evaluate import prepare_package

    with tempfile.TemporaryDirectory(prefix="aqe-testgen-eval-") as tmp:
        dest = Path(workdir) if workdir else Path(tmp)
        dest.mkdir(parents=True, exist_ok=True)
        project = prepare_package(package, dest, remove=_csv(remove))
        job = _job(project.source, project.package, targets, project.tests, project.omit, opts)
        console(stderr=True).print(
            f"{package}: removed {', '.join(project.removed)}; suite left: {project.tests[0]}"
        )
        _render_result(_run_job(app, job), opts["as_json"])


def _selection(func: Any) -> Any:
    func = click.option("--batch", "batches", multiple=True, help="Only this batch (repeat).")(func)
    return click.option("--instance", help="Only batches of this workflow instance.")(func)


def _read(app: AppContext, instance: str | None, batches: tuple[str, ...]) -> GenerationLog:
    from aqe.testgen.store import read_generation

    async def go() -> GenerationLog:
        async with open_log(app) as log:
            return await read_generation(
                log, instance_id=instance, batch_ids=batches if batches else None
            )

    return run(go())


@testgen.command("kept")
@_selection
@json_option
@pass_app
def kept(app: AppContext, instance: str | None, batches: tuple[str, ...], as_json: bool) -> None:
    """The kept tests in the log: target, generator, seed, coverage gain."""
    import msgspec

    state = _read(app, instance, batches)
    tests = state.finished_kept()
    if as_json:
        print_json([msgspec.to_builtins(k) for k in tests])
        return
    rows = [
        (
            k.name,
            k.target,
            k.generator,
            str(k.seed),
            str(k.lines_gained),
            str(k.branches_gained),
            k.batch_id,
        )
        for k in tests
    ]
    emit_table(
        ["test", "target", "generator", "seed", "+lines", "+branches", "batch"],
        rows,
        title=f"kept tests: {len(rows)}",
    )


@testgen.command("write")
@_selection
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Write files here.")
@click.option(
    "--patch", "patch", type=click.Path(dir_okay=False), help="Write a patch ('-': stdout)."
)
@click.option(
    "--patch-dir",
    default="tests/generated",
    show_default=True,
    help="Where the patch puts the files.",
)
@pass_app
def write(
    app: AppContext,
    instance: str | None,
    batches: tuple[str, ...],
    out_dir: str | None,
    patch: str | None,
    patch_dir: str,
) -> None:
    """Write the kept tests out as files (--out DIR) or as a patch (--patch FILE)."""
    from aqe.errors import ConfigError
    from aqe.testgen.store import as_patch, write_tests

    if not out_dir and not patch:
        raise ConfigError("testgen write: give --out DIR or --patch FILE")
    tests = _read(app, instance, batches).finished_kept()
    if out_dir:
        paths = write_tests(tests, Path(out_dir))
        console(stderr=True).print(f"wrote {len(paths)} tests to {out_dir}")
    if patch:
        text = as_patch(tests, patch_dir)
        if patch == "-":
            sys.stdout.write(text)
        else:
            Path(patch).write_text(text, encoding="utf-8")
            console(stderr=True).print(f"wrote a patch adding {len(tests)} tests to {patch}")


@testgen.command("report")
@_selection
@click.option(
    "--md", "md_path", type=click.Path(dir_okay=False), help="Markdown file ('-': stdout)."
)
@click.option("--html", "html_path", type=click.Path(dir_okay=False), help="HTML file.")
@pass_app
def report(
    app: AppContext,
    instance: str | None,
    batches: tuple[str, ...],
    md_path: str | None,
    html_path: str | None,
) -> None:
    """Coverage before and after per module, generated vs kept, the kept tests (MD, HTML)."""
    from aqe.testgen.report import render_html, render_markdown

    state = _read(app, instance, batches)
    title = f"Test generation: workflow {instance}" if instance else "Test generation"
    if html_path:
        Path(html_path).write_text(render_html(state, title=title), encoding="utf-8")
        console(stderr=True).print(f"wrote {html_path}")
    if md_path and md_path != "-":
        Path(md_path).write_text(render_markdown(state, title=title), encoding="utf-8")
        console(stderr=True).print(f"wrote {md_path}")
    elif md_path == "-" or not html_path:
        sys.stdout.write(render_markdown(state, title=title))
