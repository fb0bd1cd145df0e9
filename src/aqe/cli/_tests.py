"""``aqe ingest`` and the test-history questions: history, flaky, broken, runs, quarantine."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from aqe import queries
from aqe.app import AppContext, open_log, run
from aqe.cli._context import apply_options, console, json_option, pass_app, print_json
from aqe.cli._projections import fold_bar, progress_bar
from aqe.cli._table import Cell, Column, Styled, emit_table, output_options, styled
from aqe.errors import AqeError, ConfigError, IngestError

if TYPE_CHECKING:
    from aqe.events import Event
    from aqe.ingest.model import ParsedReport
    from aqe.projections.history import HistoryPolicy

_VERDICT_STYLE = {"p": "green", "r": "yellow", "f": "red", "e": "magenta", "s": "dim"}


@click.command()
@click.argument("files", nargs=-1, required=True, metavar="FILES...")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "junit", "ctrf", "pytest-json", "aqe-spool"]),
    default="auto",
    show_default=True,
    help="Report format; auto sniffs each file's content.",
)
@click.option(
    "--run-id", help="Run id [default: a digest of the files, so re-ingesting is a no-op]."
)
@click.option("--commit", help="Commit the tests ran on (enables same-commit flaky detection).")
@click.option("--branch", help="Branch the tests ran on.")
@click.option("--ci-url", help="Link to the CI job.")
@click.option("--no-fold", is_flag=True, help="Only append; do not update the history projection.")
@click.option(
    "--run-per-file",
    is_flag=True,
    help="Each report file is a run of its own (files of different CI runs) [default: "
    "the files given together are one run].",
)
@click.option(
    "--max-file-size",
    "max_bytes",
    type=click.IntRange(min=1),
    default=128 * 1024 * 1024,
    show_default=True,
    envvar="AQE_INGEST_MAX_BYTES",
    help="Refuse a report or spool file larger than this many bytes [env AQE_INGEST_MAX_BYTES].",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option
@pass_app
def ingest(
    app: AppContext,
    files: tuple[str, ...],
    fmt: str,
    run_id: str | None,
    commit: str | None,
    branch: str | None,
    ci_url: str | None,
    no_fold: bool,
    run_per_file: bool,
    max_bytes: int,
    quiet: bool,
    as_json: bool,
) -> None:
    """Append test reports to the log as one run, then update the test history.

    FILES are JUnit XML (pytest, Maven Surefire, gotestsum, jest-junit), CTRF JSON,
    pytest-json-report JSON, or spool files written by the aqe pytest plugin;
    directories are searched for .xml/.json/.jsonl files (a symbolic link in them
    that points outside is skipped, with a message). All files are parsed before
    anything is published: one bad file publishes nothing and names the file and line.
    Files given together are one run (a test's results in several files are its
    attempts, in the order the files started); with --run-per-file each file is a run.
    A run shows in the history once all of it is stored; event ids are deterministic,
    so ingesting the same files again adds nothing, or completes a run cut short.
    """
    from aqe.ingest.files import find_reports
    from aqe.ingest.parsers import detect_format, parse_report
    from aqe.ingest.runs import append_run, run_events
    from aqe.ingest.spool import finish_interrupted, read_spool

    paths, skipped_links = find_reports(files)
    for line in skipped_links:
        console(stderr=True).print(line, markup=False)
    reports: list[ParsedReport] = []
    events: list[Event] = []
    interrupted: list[str] = []
    for path in paths:
        kind = detect_format(path, max_bytes=max_bytes) if fmt == "auto" else fmt
        if kind == "aqe-spool":
            spooled = read_spool(path, max_bytes=max_bytes)
            # A killed session's spool has no TestRunFinished: close its run as interrupted.
            closing = finish_interrupted(spooled)
            events.extend(spooled)
            events.extend(closing)
            interrupted.extend(marker.run_id for marker in closing)
        else:
            reports.append(parse_report(path, kind, max_bytes=max_bytes))
    if run_per_file and run_id and len(reports) > 1:
        raise click.BadParameter("one --run-id cannot name several runs", param_hint="--run-id")
    for group in [[r] for r in reports] if run_per_file else [reports] if reports else []:
        events.extend(run_events(group, run_id=run_id, commit=commit, branch=branch, ci_url=ci_url))
        reports.clear()  # the events hold what the fold needs; free the rest early
    if not events:
        raise click.BadParameter("the files hold no test results", param_hint="FILES")
    show = not (quiet or as_json)

    names = tuple(str(p) for p in paths)

    async def go() -> tuple[Any, str | None]:
        try:
            async with open_log(app) as log:
                with progress_bar(len(events), "ingest", show) as set_done:
                    result = await append_run(log, events, on_progress=set_done)
                # The fold reads the events back from the log: drop ours first, so
                # a large run is not held in memory twice (issue 21: 200k cases).
                events.clear()
                try:
                    skipped = (
                        None
                        if no_fold
                        else await queries.fold_history(log, app, bar=fold_bar(show))
                    )
                except AqeError as exc:
                    raise IngestError(
                        names, f"run stored, but the history was not updated: {exc}"
                    ) from exc
                return result, skipped
        except IngestError:
            raise
        except AqeError as exc:
            raise IngestError(
                names,
                f"not ingested: {exc} (a run stored in part stays invisible until the "
                "same files are ingested again, which stores only what is missing)",
            ) from exc

    started = time.monotonic()
    result, fold_skipped = run(go())
    elapsed = time.monotonic() - started
    if as_json:
        import msgspec

        print_json(
            {
                **msgspec.to_builtins(result),
                "files": [str(p) for p in paths],
                "interrupted": interrupted,
            }
        )
        return
    s = result.summary
    out = console()
    out.print(
        f"ingested {len(paths)} file(s) as run{'s' if len(result.run_ids) > 1 else ''} "
        f"{', '.join(result.run_ids)}: "
        f"{s.tests} tests, [green]{s.passed} passed[/green], [red]{s.failed} failed[/red], "
        f"[magenta]{s.errors} errors[/magenta], {s.skipped} skipped, "
        f"[yellow]{s.flaky} flaky on retry[/yellow] ({s.attempts} attempts)"
    )
    out.print(
        f"{result.appended} events appended, {result.duplicates} already stored, "
        f"{result.chunks} atomic batch(es), {elapsed:.2f} s"
    )
    for run_id in interrupted:
        out.print(
            f"[yellow]run {run_id} was interrupted[/yellow] (no TestRunFinished in the spool): "
            "closed with the totals of the executions it recorded"
        )
    if fold_skipped:
        out.print(f"history not updated: {fold_skipped}")


# -- questions ---------------------------------------------------------------------------


def parse_since(value: str | None) -> int | None:
    """``--since``: :func:`aqe.queries.parse_since`, a bad value a usage error naming it."""
    try:
        return queries.parse_since(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None


def _load(
    app: AppContext, refresh: bool, policy: HistoryPolicy | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """History rows, after folding what the log has that the projection lacks."""
    tests, runs, skipped = queries.load_history(app, policy, refresh=refresh)
    if skipped:
        console(stderr=True).print(f"[dim]not refreshed: {skipped}[/dim]")
    return tests, runs


def _question_options(func: Callable[..., Any]) -> Callable[..., Any]:
    return apply_options(
        func,
        [
            click.option(
                "--since",
                metavar="WHEN",
                help="Only tests seen / runs started since (7d, 2026-11-01).",
            ),
            click.option("--limit", "-n", type=click.IntRange(min=1), help="At most N rows."),
            click.option(
                "--offline",
                is_flag=True,
                help="Answer from the local projection without folding new events first.",
            ),
            output_options,
        ],
    )


def _policy_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--broken-streak",
        type=click.IntRange(min=1),
        help="Failing runs in a row before a test can be broken (unless its earlier "
        "failure rate makes them likely) [default 3].",
    )(func)
    return click.option(
        "--flip-threshold",
        type=click.FloatRange(0, 1),
        help="Flip rate (pass<->fail changes per run) that makes a test flaky [default 0.2].",
    )(func)


def _recent(recent: str, width: int = 20) -> Styled:
    """The newest verdicts, oldest left to newest right, coloured."""
    shown = recent[:width][::-1]
    return Styled(tuple((v, _VERDICT_STYLE[v]) for v in shown))


def _failing_since(row: dict[str, Any]) -> str:
    """The run a broken test's streak began in, marked when that is its first run."""
    since = row["failing_since"] or row["first_run"]
    return f"{since} (first seen)" if since == row["first_run"] else since


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _tests_table(title: str, rows: list[dict[str, Any]], extra: str) -> None:
    columns = [
        Column("test"),
        Column("status"),
        Column("runs", "right"),
        Column("pass", "right"),
        Column("flip", "right"),
        Column("p50 s", "right"),
        Column("p95 s", "right"),
        Column("recent (old → new)"),
        Column(extra),
    ]
    cells: list[list[Cell]] = []
    for r in rows:
        status = r["status"] + (" (q)" if r["quarantined"] else "")
        if extra == "failing since":
            first_line = (r["last_failure_message"] or "").partition("\n")[0]
            detail = f"{_failing_since(r)}: {first_line[:60]}"
        elif extra == "why":
            detail = r["reason"]
        else:
            detail = r["last_run"]
        cells.append(
            [
                r["test_id"],
                status,
                r["runs"],
                _pct(r["pass_rate"]),
                _pct(r["flip_rate"]),
                f"{r['duration_p50_s']:.3f}",
                f"{r['duration_p95_s']:.3f}",
                _recent(r["recent"]),
                detail,
            ]
        )
    emit_table(columns, cells, title=title)


_STATUS_VIEWS = {
    "flaky": ("flaky tests", "why", "flip-rate"),
    "broken": ("broken tests", "failing since", "runs"),
}


def render_status_table(
    status: str, tests: list[dict[str, Any]], rows: list[dict[str, Any]] | None = None
) -> None:
    """The flaky or broken table (``rows`` default to every test of that status)."""
    title, extra, sort = _STATUS_VIEWS[status]
    if rows is None:
        rows = queries.select_tests([r for r in tests if r["status"] == status], None, sort, None)
    if not rows:
        console().print(f"no {status} tests ({len(tests)} tests known)")
        return
    _tests_table(f"{title}: {len(rows)} of {len(tests)} tests", rows, extra)


def _status_command(status: str) -> click.Command:
    _, _, default_sort = _STATUS_VIEWS[status]

    @click.command(name=status)
    @click.option(
        "--sort",
        type=click.Choice(sorted(queries.TEST_SORTS)),
        default=default_sort,
        show_default=True,
        help="Order of the rows.",
    )
    @_policy_options
    @_question_options
    @pass_app
    def command(
        app: AppContext,
        sort: str,
        flip_threshold: float | None,
        broken_streak: int | None,
        since: str | None,
        limit: int | None,
        offline: bool,
        as_json: bool,
        predicted: bool = False,
    ) -> None:
        tests, _ = _load(app, not offline, queries.history_policy(flip_threshold, broken_streak))
        if predicted:
            from aqe.cli._flaky_model import show_predicted

            show_predicted(app, tests, as_json, refresh=not offline)
            return
        rows = queries.select_tests(
            [r for r in tests if r["status"] == status], parse_since(since), sort, limit
        )
        if as_json:
            print_json(rows)
            return
        render_status_table(status, tests, rows)

    # click reads the help when the command is made: set it, not __doc__.
    command.help = {
        "flaky": "Tests that pass and fail without a change: passed on retry, failed and "
        "passed on one commit, or flip between pass and fail too often.",
        "broken": "Tests failing consistently: the newest runs (3 by default) all failed and "
        "the test's earlier failures do not make that likely by chance; with the run the "
        "failures began in.",
    }[status]
    command.short_help = {
        "flaky": "Tests that pass and fail without a change (retries, same-commit flips).",
        "broken": "Tests failing consistently, with the run their failures began in.",
    }[status]
    if status == "flaky":
        command.params.append(
            click.Option(
                ["--predicted"],
                is_flag=True,
                help="Tests the flakiness model predicts flaky (`aqe flaky-model predict-pytest`) "
                "beside the observed ones, with top remedies from the pattern library.",
            )
        )
    return command


flaky = _status_command("flaky")
broken = _status_command("broken")


@click.command()
@click.argument("test", required=False)
@click.option(
    "--sort",
    type=click.Choice(sorted(queries.TEST_SORTS)),
    default="name",
    show_default=True,
    help="Order of the rows.",
)
@click.option("--status", "status_filter", type=click.Choice(["broken", "flaky", "new", "healthy"]))
@_policy_options
@_question_options
@pass_app
def history(
    app: AppContext,
    test: str | None,
    sort: str,
    status_filter: str | None,
    flip_threshold: float | None,
    broken_streak: int | None,
    since: str | None,
    limit: int | None,
    offline: bool,
    as_json: bool,
) -> None:
    """Per-test history; with TEST (an id or a substring of one), that test in detail."""
    tests, _ = _load(app, not offline, queries.history_policy(flip_threshold, broken_streak))
    if test:
        matches = queries.find_tests(tests, test)
        if len(matches) == 1:
            _one_test(matches[0], as_json)
            return
        tests = matches
    if status_filter:
        tests = [r for r in tests if r["status"] == status_filter]
    rows = queries.select_tests(tests, parse_since(since), sort, limit)
    if as_json:
        print_json(rows)
        return
    _tests_table(f"test history: {len(rows)} tests", rows, "last run")


def _one_test(row: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(row)
        return
    cells: list[list[Cell]] = []
    for key, value in row.items():
        if key == "recent":
            value = _recent(value, 100)
        elif key.endswith("_ns"):
            value = (
                datetime.fromtimestamp(value / 1e9, UTC).isoformat(timespec="seconds")
                if value
                else "-"
            )
        elif value is not None and not isinstance(value, str | int | float):
            value = str(value)
        cells.append([styled(key, "bold"), value])
    emit_table(["field", "value"], cells, title=row["test_id"], show_header=False)


@click.command()
@click.option("--sort", type=click.Choice(queries.RUN_SORTS), default="newest")
@_question_options
@pass_app
def runs(
    app: AppContext,
    sort: str,
    since: str | None,
    limit: int | None,
    offline: bool,
    as_json: bool,
) -> None:
    """Runs with their totals, newest first."""
    _, rows = _load(app, not offline, None)
    rows = queries.select_runs(rows, parse_since(since), sort, limit)
    if as_json:
        print_json(rows)
        return
    columns = [Column("run"), Column("started"), Column("source"), Column("commit")]
    columns += [
        Column(name, "right")
        for name in ("tests", "passed", "failed", "errors", "skipped", "flaky", "duration s")
    ]
    seeded = any(r.get("random_seed") is not None for r in rows)
    if seeded:
        columns.append(Column("seed"))
    cells: list[list[Cell]] = []
    for r in rows:
        started = (
            datetime.fromtimestamp(r["started_ns"] / 1e9, UTC).strftime("%Y-%m-%d %H:%M")
            if r["started_ns"]
            else "-"
        )
        row: list[Cell] = [
            Styled(((r["run_id"], ""), (" (interrupted)", "yellow")))
            if r.get("interrupted")
            else r["run_id"],
            started,
            r["source"] or "-",
            r["commit"] or "-",
            r["total"] if r["finished"] else r["executions"],
            r["passed"],
            styled(r["failed"], "red") if r["failed"] else 0,
            r["errors"],
            r["skipped"],
            r["flaky"],
            f"{r['duration_s']:.1f}",
        ]
        if seeded:
            seed = r.get("random_seed")
            row.append("-" if seed is None else f"{seed} ({r.get('random_plugin') or '?'})")
        cells.append(row)
    emit_table(columns, cells, title=f"runs: {len(rows)}")


def _resolve_test(test: str, rows: list[dict[str, Any]]) -> str | None:
    """The test id ``test`` names (a test id, or a pytest node id), if the history has it."""
    from aqe.ingest.identity import split_pytest_nodeid, test_identity

    known = {r["test_id"] for r in rows}
    if test in known:
        return test
    if "::" in test:
        mapped = test_identity(*split_pytest_nodeid(test))
        if mapped in known:
            return mapped
    return None


def _quarantine_command(enter: bool) -> click.Command:
    @click.command(name="quarantine" if enter else "unquarantine")
    @click.argument("test")
    @click.option("--reason", default="", help="Why (kept in the log).")
    @click.option("--by", help="Who decided [default: $USER].")
    @click.option(
        "--allow-unknown",
        is_flag=True,
        help="Record it even though the test history has no such test (yet).",
    )
    @json_option
    @pass_app
    def command(
        app: AppContext,
        test: str,
        reason: str,
        by: str | None,
        allow_unknown: bool,
        as_json: bool,
    ) -> None:
        import getpass

        from aqe.events import TestCaseQuarantined, TestCaseUnquarantined
        from aqe.ingest.identity import split_pytest_nodeid, test_identity

        rows, _ = _load(app, True, None)
        test_id = _resolve_test(test, rows)
        if test_id is None:
            if not allow_unknown:
                last = test.replace("::", ".").rpartition(".")[2]
                near = [r["test_id"] for r in rows if r["test_id"].rpartition(".")[2] == last]
                hint = f"; same name: {', '.join(near[:3])}" if near else ""
                raise AqeError(
                    f"no test {test!r} in the history ({len(rows)} tests known{hint}); "
                    "pass --allow-unknown to record it anyway"
                )
            test_id = test_identity(*split_pytest_nodeid(test)) if "::" in test else test
        held = any(r["test_id"] == test_id and r["quarantined"] for r in rows)
        verb = "quarantined" if enter else "released from quarantine"
        if held == enter:
            state = "already in quarantine" if enter else "not in quarantine"
            if as_json:
                print_json({"test_id": test_id, "quarantined": held, "changed": False})
            else:
                console().print(f"{test_id}: {state}; nothing recorded")
            return
        who = by or getpass.getuser()
        now = datetime.now(UTC)
        event: Event = (
            TestCaseQuarantined(test_id=test_id, reason=reason, by=who, at=now)
            if enter
            else TestCaseUnquarantined(test_id=test_id, reason=reason, by=who, at=now)
        )

        async def go() -> int:
            async with open_log(app) as log:
                result = await log.append(event)
                await queries.fold_history(log, app)
                return result.seq

        seq = run(go())
        if as_json:
            print_json(
                {
                    "test_id": test_id,
                    "quarantined": enter,
                    "changed": True,
                    "seq": seq,
                    "reason": reason,
                    "by": who,
                }
            )
            return
        console().print(f"{test_id}: {verb} (event #{seq})")

    command.help = (
        "Put TEST (a test id or pytest node id from the history) in quarantine: its "
        "failures are still recorded, but the pytest plugin does not let them fail the run."
        if enter
        else "Take TEST out of quarantine (an event in the log)."
    )
    if enter:
        command.short_help = "Quarantine TEST: its failures are recorded but do not fail runs."
    return command


quarantine = _quarantine_command(True)
unquarantine = _quarantine_command(False)
