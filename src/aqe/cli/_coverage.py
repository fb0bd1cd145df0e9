"""``aqe coverage [FILE]``, ``aqe coverage gaps``, ``collect``, ``ingest`` and ``audit``."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from aqe.app import AppContext, open_log, run
from aqe.cli._context import ExistingPath, console, json_option, pass_app, print_json
from aqe.cli._projections import catch_up
from aqe.cli._table import emit_table, output_options

if TYPE_CHECKING:
    from aqe.coverage.measured import MeasuredFile
    from aqe.coverage.projection import CoverageState


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


async def _folded(app: AppContext, *, quiet: bool = True) -> CoverageState:
    from aqe.app import projections_root
    from aqe.coverage.projection import CoverageProjection
    from aqe.projections import SnapshotStore

    projection = CoverageProjection()
    async with open_log(app) as log:
        await catch_up(log, app, projection, quiet=quiet, materialize=False)
    snapshot = SnapshotStore(projection, projections_root(app) / projection.name).load()
    return snapshot.state


def coverage_state(app: AppContext) -> CoverageState:
    """The coverage projection, caught up with the log (for other commands too)."""
    return run(_folded(app))


class _DefaultShow(click.Group):
    """``aqe coverage FILE`` means ``aqe coverage show FILE``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["show", *args]
        elif not args:
            args = ["show"]
        return super().parse_args(ctx, args)


@click.group(cls=_DefaultShow)
def coverage() -> None:
    """Coverage in the log: per file, per test, gaps; collect and ingest it.

    `aqe coverage` alone prints every file; `aqe coverage FILE` one file line by line.
    """


@coverage.command()
@click.argument("file", required=False)
@output_options
@pass_app
def show(app: AppContext, file: str | None, as_json: bool) -> None:
    """Line and branch coverage per file, or one FILE with the tests of each line."""
    import msgspec

    from aqe.coverage.queries import file_detail, file_summaries, line_ranges, overall

    state = coverage_state(app)
    if file is not None:
        detail = file_detail(state, file.removeprefix("./"))
        if detail is None:
            raise click.BadParameter(f"{file!r}: no coverage recorded for it", param_hint="FILE")
        if as_json:
            print_json(
                {
                    **msgspec.to_builtins(detail),
                    "line_pct": detail.summary.line_pct,
                    "branch_pct": detail.summary.branch_pct,
                }
            )
            return
        s = detail.summary
        console().print(
            f"{s.path}: lines {s.covered}/{s.statements} ({_pct(s.line_pct)}), branches "
            f"{s.taken}/{s.branches} ({_pct(s.branch_pct)}), {s.tests} tests, run {s.run_id}"
        )
        emit_table(
            ["line", "tests"],
            [
                [line, ", ".join(tests[:3]) + (f" +{len(tests) - 3}" if len(tests) > 3 else "")]
                for line, tests in detail.lines.items()
            ],
            title="executed lines and the tests that ran them (none: only outside tests)",
        )
        missing = ", ".join(
            str(a) if a == b else f"{a}-{b}" for a, b in line_ranges(detail.missing)
        )
        console().print(f"missing: {missing or 'none'}")
        return
    summaries = file_summaries(state)
    total = overall(summaries)
    if as_json:
        print_json(
            {
                "files": [
                    {**msgspec.to_builtins(s), "line_pct": s.line_pct, "branch_pct": s.branch_pct}
                    for s in summaries
                ],
                "total": total,
                "runs": [msgspec.to_builtins(r) for r in state.runs.values()],
                "pending_runs": sorted(state.pending),
            }
        )
        return
    if not summaries:
        console().print("no coverage yet: `aqe coverage collect -- tests` or `aqe coverage ingest`")
        return
    emit_table(
        ["file", "statements", "covered", "lines", "branches", "taken", "branch", "tests"],
        [
            [
                s.path,
                s.statements,
                s.covered,
                _pct(s.line_pct),
                s.branches,
                s.taken,
                _pct(s.branch_pct),
                s.tests,
            ]
            for s in summaries
        ],
        title=f"{total['files']} files: lines {_pct(total['line_pct'])}, branches "
        f"{_pct(total['branch_pct'])}",
    )


@coverage.command(name="runs")
@output_options
@pass_app
def runs_(app: AppContext, as_json: bool) -> None:
    """Per run, its coverage totals (line %, branch %), newest first; and runs still waiting."""
    import msgspec

    state = coverage_state(app)
    runs = sorted(state.runs.values(), key=lambda r: -r.seq)

    def pct(part: int, whole: int) -> float | None:
        return 100.0 * part / whole if whole else None

    if as_json:
        print_json(
            {
                "runs": [
                    {
                        **msgspec.to_builtins(r),
                        "status": r.status,
                        "per_test": r.per_test,
                        "line_pct": pct(r.covered, r.statements),
                        "branch_pct": pct(r.taken, r.branches),
                    }
                    for r in runs
                ],
                "pending": {
                    run_id: {"chunks": p.chunks, "received": len(p.parts)}
                    for run_id, p in sorted(state.pending.items())
                },
            }
        )
        return
    emit_table(
        ["run", "source", "status", "files", "lines", "branches", "tests"],
        [
            [
                r.run_id,
                r.source,
                r.status,
                r.files,
                _pct(pct(r.covered, r.statements)),
                _pct(pct(r.taken, r.branches)),
                r.tests,
            ]
            for r in runs
        ],
        title="coverage runs, newest first",
    )
    for run_id, waiting in sorted(state.pending.items()):
        console(stderr=True).print(
            f"waiting: run {run_id}: {len(waiting.parts)} of {waiting.chunks} chunks"
            + (", no finish marker yet" if waiting.awaits_run else "")
        )


@coverage.command(name="test")
@click.argument("test_id")
@output_options
@pass_app
def test_(app: AppContext, test_id: str, as_json: bool) -> None:
    """What one test covers (its newest covered run): files and lines."""
    from aqe.coverage.queries import line_ranges, test_files
    from aqe.ingest.identity import split_pytest_nodeid, test_identity

    state = coverage_state(app)
    if "::" in test_id:  # a pytest node id: aqe's identity of it
        test_id = test_identity(*split_pytest_nodeid(test_id))
    files = test_files(state, test_id)
    if not files:
        raise click.BadParameter(f"{test_id!r}: no coverage recorded for it", param_hint="TEST_ID")
    run_id = state.tests[test_id].run_id
    if as_json:
        print_json({"test_id": test_id, "run_id": run_id, "files": files})
        return
    emit_table(
        ["file", "lines", "ranges"],
        [
            [
                path,
                len(lines),
                ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in line_ranges(lines)),
            ]
            for path, lines in files.items()
        ],
        title=f"{test_id}: run {run_id}",
    )


def _failures(app: AppContext) -> dict[str, int]:
    """Per test id, its failures and errors in the history (0 when there is none)."""
    from aqe.app import projections_root
    from aqe.projections import SnapshotStore
    from aqe.projections.history import HistoryProjection

    projection = HistoryProjection()

    async def go() -> None:
        async with open_log(app) as log:
            await catch_up(log, app, projection, quiet=True, materialize=False)

    run(go())
    state = SnapshotStore(projection, projections_root(app) / projection.name).load().state
    return {t: h.failures + h.errors for t, h in state.tests.items() if h.failures + h.errors}


@coverage.command()
@click.option("--limit", default=20, show_default=True, help="At most this many files.")
@click.option("--prefix", default="", help="Only files whose path starts with this.")
@output_options
@pass_app
def gaps(app: AppContext, limit: int, prefix: str, as_json: bool) -> None:
    """The least-covered files, weighted by their churn and their tests' failures."""
    import msgspec

    from aqe.coverage.queries import gaps as find_gaps

    state = coverage_state(app)
    found = find_gaps(state, failures=_failures(app), prefix=prefix, limit=limit)
    if as_json:
        print_json([msgspec.to_builtins(g) for g in found])
        return
    emit_table(
        ["file", "missing", "branches", "lines", "branch", "changes", "failures", "score"],
        [
            [
                g.path,
                g.missing,
                g.missing_branches,
                _pct(g.line_pct),
                _pct(g.branch_pct),
                g.changes,
                g.failures,
                f"{g.score:.1f}",
            ]
            for g in found
        ],
        title="coverage gaps (missing statements + untaken branch exits, weighted)",
    )


async def _append(app: AppContext, files: list[MeasuredFile], **fields: Any) -> tuple[int, int]:
    from aqe.coverage.measured import coverage_events
    from aqe.log import NewEvent

    events = coverage_events(files, **fields)
    async with open_log(app) as log:
        results = await log.append_many([NewEvent(event=e) for e in events])
    return len(events), sum(not r.duplicate for r in results)


@coverage.command(context_settings={"ignore_unknown_options": True})
@click.option(
    "--source",
    "sources",
    multiple=True,
    required=True,
    help="Package or directory to measure (repeatable), as coverage run --source takes it.",
)
@click.option("--run-id", help="The run's id [default: a new pytest-<hex>].")
@click.option("--commit", help="The commit under test.")
@click.option(
    "--data-file",
    type=click.Path(path_type=Path),
    default=Path(".aqe-coverage"),
    show_default=True,
    help="Where coverage.py writes its data.",
)
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
@json_option
@pass_app
def collect(
    app: AppContext,
    sources: tuple[str, ...],
    run_id: str | None,
    commit: str | None,
    data_file: Path,
    pytest_args: tuple[str, ...],
    as_json: bool,
) -> None:
    """Run pytest under coverage.py (branches, one context per test), record both.

    The tests' results go to the log through aqe's pytest plugin (--aqe), the coverage
    as coverage.run.recorded.v1 chunks of the same run. Example:

        aqe coverage collect --source src/mypkg -- -q tests
    """
    from aqe.coverage.collect import read_coverage_data, run_pytest

    root = Path.cwd()
    run_id = run_id or f"pytest-{uuid.uuid4().hex[:12]}"
    env = dict(os.environ)
    env["AQE_DATA_DIR"] = str(app.settings.data_dir)
    if app.settings.nats_url:
        env["AQE_NATS_URL"] = app.settings.nats_url
    args = ["--aqe", f"--aqe-run-id={run_id}", *(["--aqe-commit", commit] if commit else [])]
    code = run_pytest([*args, *pytest_args], cwd=root, source=sources, data_file=data_file, env=env)
    files = read_coverage_data(data_file, root=root)
    chunks, appended = run(_append(app, files, run_id=run_id, commit=commit))
    if as_json:
        print_json({"run_id": run_id, "exit_code": code, "files": len(files), "chunks": chunks})
    else:
        console(stderr=True).print(
            f"run {run_id}: pytest exit {code}; coverage of {len(files)} files in {chunks} "
            f"chunks ({appended} new)"
        )
    if code not in (0, 1):
        raise click.exceptions.Exit(code)


@coverage.command(name="ingest")
@click.argument("files", nargs=-1, required=True, type=ExistingPath(dir_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "cobertura", "lcov", "coverage.py"]),
    default="auto",
    show_default=True,
    help="Report format; auto sniffs the content (coverage.py data files need the name).",
)
@click.option("--run-id", help="Tie the coverage to this test run (held until it finishes).")
@click.option("--commit", help="The commit measured.")
@json_option
@pass_app
def ingest_(
    app: AppContext,
    files: tuple[str, ...],
    fmt: str,
    run_id: str | None,
    commit: str | None,
    as_json: bool,
) -> None:
    """Load Cobertura XML, LCOV or coverage.py data files (per file, no per-test)."""
    import hashlib

    from aqe.coverage.collect import read_coverage_data
    from aqe.coverage.reports import detect_coverage_format, parse_cobertura, parse_lcov

    root = Path.cwd()
    measured: dict[str, MeasuredFile] = {}
    digest = hashlib.sha256()
    kinds = set()
    for name in files:
        path = Path(name)
        kind = detect_coverage_format(path) if fmt == "auto" else fmt
        kinds.add(kind)
        if kind == "cobertura":
            parsed = parse_cobertura(path, root=root)
        elif kind == "lcov":
            parsed = parse_lcov(path)
        else:
            parsed = read_coverage_data(path, root=root)
        digest.update(path.read_bytes())
        for item in parsed:
            if item.path in measured:
                measured[item.path].merge(item)
            else:
                measured[item.path] = item
    source = "+".join(sorted(kinds))
    the_run = run_id or f"{source}-{digest.hexdigest()[:16]}"
    chunks, appended = run(
        _append(
            app,
            list(measured.values()),
            run_id=the_run,
            source=source,
            commit=commit,
            awaits_run=run_id is not None,
        )
    )
    if as_json:
        print_json({"run_id": the_run, "files": len(measured), "chunks": chunks, "new": appended})
        return
    console(stderr=True).print(
        f"{len(measured)} files of coverage ({source}) as run {the_run}: {chunks} chunks, "
        f"{appended} new"
    )


def _budgets(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, ...]:
    try:
        shares = tuple(float(v.strip().rstrip("%")) / 100 for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r}: shares like 10,25,50", ctx, param) from None
    if not shares or not all(0 < s <= 1 for s in shares):
        raise click.BadParameter(f"{value!r}: shares in (0, 100]", ctx, param)
    return shares


@coverage.command()
@click.option(
    "--package",
    default="toolz",
    show_default=True,
    help="Installed package whose own tests are run.",
)
@click.option("--mutants", "count", default=40, show_default=True, help="Mutants to sample.")
@click.option("--seed", default=0, show_default=True, help="Seed of the mutant sample.")
@click.option(
    "--budgets",
    default="10,25,50",
    show_default=True,
    callback=_budgets,
    help="Shares (%) of the suite the history and combined strategies may run.",
)
@click.option("--module", "modules", multiple=True, help="Only mutate this module (repeatable).")
@click.option("--quiet", "-q", is_flag=True, help="No progress.")
@output_options
def audit(
    package: str,
    count: int,
    seed: int,
    budgets: tuple[float, ...],
    modules: tuple[str, ...],
    quiet: bool,
    as_json: bool,
) -> None:
    """Escape audit: recall of coverage, history and combined selection on mutants.

    Copies the package and its own tests into a scratch project, measures per-test
    coverage once, then runs the full suite on each sampled mutant (minutes: one
    suite run per mutant). Nothing is appended to the log.
    """
    import msgspec

    from aqe.cli._projections import progress_bar
    from aqe.coverage.audit import run_audit

    with progress_bar(count, f"mutants of {package}", not (quiet or as_json)) as tick:
        report = run_audit(
            package,
            mutants=count,
            seed=seed,
            budgets=budgets,
            modules=modules or None,
            on_progress=lambda done, _total, _label: tick(done),
        )
    if as_json:
        print_json(msgspec.to_builtins(report))
        return
    emit_table(
        ["strategy", "killed", "caught", "escaped", "recall", "tests run"],
        [
            [
                r.strategy,
                r.killed,
                r.caught,
                r.escaped,
                "-" if r.recall is None else f"{r.recall:.3f}",
                f"{r.fraction:.1%}",
            ]
            for r in report.rows
        ],
        title=f"{package}: {report.tests} tests, {report.mutants_run} of "
        f"{report.mutants_found} mutants (seed {seed}), "
        f"{sum(1 for m in report.mutants if not m.killers)} not killed by the suite; "
        f"{report.seconds:.0f} s",
    )
