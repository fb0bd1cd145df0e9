"""``aqe perf ...`` (results in, series, changes, alerts, the watch) and ``aqe bench run``."""

from __future__ import annotations

import asyncio
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from aqe.app import AppContext, open_log, run
from aqe.cli._context import ExistingPath, console, pass_app, print_json
from aqe.cli._table import Cell, Column, emit_table, output_options, styled

if TYPE_CHECKING:
    from aqe.perf.detect import DetectConfig
    from aqe.perf.pipeline import ConfirmOptions
    from aqe.perf.series import ChangeEntry, PerfState
    from aqe.perf.sinks import AlertSink


def _detect_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        [
            click.option(
                "--min-effect",
                type=float,
                default=0.05,
                show_default=True,
                help="Smallest relative change that counts.",
            ),
            click.option(
                "--alpha",
                type=float,
                default=0.001,
                show_default=True,
                help="Significance level between segments.",
            ),
            click.option(
                "--penalty",
                type=float,
                default=3.0,
                show_default=True,
                help="Change-point penalty (x log n).",
            ),
            click.option(
                "--min-size",
                type=int,
                default=5,
                show_default=True,
                help="Fewest points per segment.",
            ),
        ]
    ):
        func = option(func)
    return func


def _config(min_effect: float, alpha: float, penalty: float, min_size: int) -> DetectConfig:
    from aqe.errors import ConfigError
    from aqe.perf.detect import DetectConfig

    if not (0 < alpha < 1) or min_effect < 0 or penalty <= 0 or min_size < 2:
        raise ConfigError(
            "detection: need 0 < alpha < 1, min-effect >= 0, penalty > 0, min-size >= 2"
        )
    return DetectConfig(min_effect=min_effect, alpha=alpha, penalty=penalty, min_size=min_size)


@click.group()
def perf() -> None:
    """Performance regressions: benchmark series, change points, confirmation, alerts."""


@perf.command("ingest")
@click.argument("files", nargs=-1, required=True, type=ExistingPath(dir_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "pytest-benchmark", "pyperf", "google-benchmark"]),
    default="auto",
    show_default=True,
)
@click.option("--commit", default="", help="The commit measured [default: the file's, if it says].")
@click.option("--repo", default="", help="Where the commit lives (path or git URL), for re-runs.")
@click.option(
    "--command",
    "command",
    default="",
    help="The command that measures it again (shell words), for re-runs.",
)
@click.option("--machine-class", default=None, help="Override the machine class (series key).")
@output_options
@pass_app
def ingest(
    app: AppContext,
    files: tuple[str, ...],
    fmt: str,
    commit: str,
    repo: str,
    command: str,
    machine_class: str | None,
    as_json: bool,
) -> None:
    """Ingest pytest-benchmark, pyperf or Google Benchmark JSON files as series points."""
    from aqe.perf._fingerprint import local_fingerprint
    from aqe.perf.formats import parse_bench_file
    from aqe.perf.pipeline import append_measurements, measured_events

    local = local_fingerprint(machine_class)
    parsed = [parse_bench_file(Path(f), fmt) for f in files]
    from aqe.perf.measure import repo_url as to_url

    repo_url = to_url(repo) if repo else ""
    events = []
    for bench in parsed:
        # The file's own machine, unless a class is forced or the file names none.
        fp = local if machine_class or bench.machine is None else bench.machine
        events += measured_events(
            bench, machine=fp, commit=commit, repo=repo_url, command=shlex.split(command)
        )

    async def go() -> int:
        async with open_log(app) as log:
            return await append_measurements(log, events)

    new = run(go())
    rows: list[dict[str, Any]] = [
        {
            "file": b.path,
            "format": b.format,
            "benchmarks": len(b.results),
            "samples": sum(len(r.samples) for r in b.results),
        }
        for b in parsed
    ]
    if as_json:
        print_json({"files": rows, "points": len(events), "new": new})
        return
    emit_table(
        ["file", "format", Column("benchmarks", "right"), Column("samples", "right")],
        [[r["file"], r["format"], r["benchmarks"], r["samples"]] for r in rows],
    )
    console(stderr=True).print(f"{len(events)} points, {new} new")


@click.group()
def bench() -> None:
    """Run benchmarks and record every sample."""


@bench.command("run", context_settings={"ignore_unknown_options": True})
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--name", default=None, help="The benchmark's name [default: the command].")
@click.option(
    "--repo", default=".", show_default=True, help="The git repository (or folder) to run in."
)
@click.option(
    "--commit",
    default="HEAD",
    show_default=True,
    help="The commit to check out (git repositories).",
)
@click.option("--warmup", type=int, default=1, show_default=True, help="Untimed runs first.")
@click.option(
    "--repeat", type=int, default=5, show_default=True, help="Timed runs (one sample each)."
)
@click.option("--backend", default="process", show_default=True, help="Sandbox backend.")
@click.option("--machine-class", default=None, help="Override the machine class (series key).")
@click.option(
    "--clock",
    type=click.Choice(["wall", "cpu"]),
    default="wall",
    show_default=True,
    help="Sample wall time (metric time) or the command's CPU time (metric cpu-time).",
)
@output_options
@pass_app
def bench_run(
    app: AppContext,
    command: tuple[str, ...],
    name: str | None,
    repo: str,
    commit: str,
    warmup: int,
    repeat: int,
    backend: str,
    machine_class: str | None,
    clock: str,
    as_json: bool,
) -> None:
    """Run COMMAND (after --) in a sandbox at a commit: warm-up, then timed repetitions.

    Every repetition's wall time is a sample of the series NAME (metric time, unit s);
    with --clock cpu its user + system CPU time (metric cpu-time), which a busy machine
    stretches far less. The command and repository are kept so a suspected change can
    be re-run (on the same clock).
    """
    from aqe.events.perf import BenchmarkMeasured
    from aqe.perf._fingerprint import local_fingerprint
    from aqe.perf.measure import measure, resolve_source
    from aqe.perf.pipeline import append_measurements

    source = resolve_source(repo, commit)
    machine = local_fingerprint(machine_class)

    async def go() -> BenchmarkMeasured:
        point = await measure(
            source,
            command,
            machine=machine,
            name=name,
            warmup=warmup,
            repeat=repeat,
            backend=backend,
            clock=clock,
        )
        async with open_log(app) as log:
            await append_measurements(log, [point])
        return point

    event = run(go())
    import statistics

    if as_json:
        print_json(
            {
                "benchmark": event.benchmark,
                "series_id": event.series_id,
                "commit": event.commit,
                "samples": list(event.samples),
                "median": statistics.median(event.samples),
            }
        )
        return
    console().print(
        f"{event.benchmark} @ {event.commit[:12] or '-'}: "
        f"median {statistics.median(event.samples):.6g} s "
        f"over {len(event.samples)} runs (series {event.series_id})"
    )


async def _state(app: AppContext) -> PerfState:
    from aqe.perf.pipeline import read_state

    async with open_log(app) as log:
        return await read_state(log)


@perf.command("series")
@click.argument("name")
@click.option("--machine-class", default=None, help="Only this machine class.")
@output_options
@pass_app
def series_(app: AppContext, name: str, machine_class: str | None, as_json: bool) -> None:
    """One benchmark's series (NAME: its name, a part of it, or a series id), point by point."""
    from aqe.errors import CommandRejectedError

    state = run(_state(app))
    found = [
        s
        for s in state.series.values()
        if (name in (s.benchmark, s.series_id) or name in s.benchmark)
        and (machine_class is None or s.machine_class == machine_class)
    ]
    exact = [s for s in found if name in (s.benchmark, s.series_id)]
    found = exact or found
    if not found:
        raise CommandRejectedError(f"no benchmark series matches {name!r}")
    marks: dict[tuple[str, int], ChangeEntry] = {
        (c.detected.series_id, c.detected.index): c for c in state.changes.values()
    }
    if as_json:
        import msgspec

        print_json([{**msgspec.to_builtins(s), "runs": len(s.runs)} for s in found])
        return
    for s in found:
        rows: list[list[Cell]] = []
        for i, p in enumerate(s.points):
            change = marks.get((s.series_id, i))
            mark = (
                styled(
                    f"{change.detected.direction} x{change.detected.magnitude:.3f} "
                    f"({change.verdict})",
                    "bold red" if change.detected.direction == "regression" else "green",
                )
                if change
                else ""
            )
            rows.append([i, p.commit[:12], f"{p.median:.6g}", p.n, mark])
        emit_table(
            [
                Column("#", "right"),
                "commit",
                Column(f"median ({s.unit})", "right"),
                Column("n", "right"),
                "change",
            ],
            rows,
            title=f"{s.benchmark} · {s.metric} · {s.machine_class}",
        )


@perf.command("detect")
@_detect_options
@output_options
@pass_app
def detect(
    app: AppContext, min_effect: float, alpha: float, penalty: float, min_size: int, as_json: bool
) -> None:
    """Find change points in every series and record the new ones as suspected changes."""
    from aqe.perf.pipeline import read_state, record_changes

    cfg = _config(min_effect, alpha, penalty, min_size)

    async def go() -> list[Any]:
        async with open_log(app) as log:
            return await record_changes(log, await read_state(log), cfg)

    found = run(go())
    if as_json:
        import msgspec

        print_json([msgspec.to_builtins(c) for c in found])
        return
    _changes_table([(c, "suspected", "") for c in found])


def _changes_table(rows: list[tuple[Any, str, str]]) -> None:
    emit_table(
        [
            "change",
            "benchmark",
            "direction",
            Column("x", "right"),
            Column("confidence", "right"),
            "commits",
            "verdict",
            "alert",
        ],
        [
            [
                d.change_id,
                d.benchmark,
                styled(d.direction, "red" if d.direction == "regression" else "green"),
                f"{d.magnitude:.3f}",
                f"{d.confidence:.4f}",
                f"{d.commit_before[:10]}..{d.commit_after[:10]}",
                verdict,
                alert or "-",
            ]
            for d, verdict, alert in rows
        ],
    )


@perf.command("changes")
@click.option("--since", default=None, help="Only changes detected since (7d, 12h, an ISO date).")
@output_options
@pass_app
def changes(app: AppContext, since: str | None, as_json: bool) -> None:
    """Suspected, confirmed and dismissed changes, newest last."""
    import msgspec

    from aqe.cli._tests import parse_since

    after_ns = parse_since(since)
    state = run(_state(app))
    entries = sorted(state.changes.values(), key=lambda e: e.detected_seq)
    if after_ns is not None:
        entries = [e for e in entries if e.detected_at_ns >= after_ns]
    if as_json:
        print_json(
            [
                {
                    **msgspec.to_builtins(e.detected),
                    "verdict": e.verdict,
                    "alert": e.alert,
                    "verified": msgspec.to_builtins(e.verified),
                }
                for e in entries
            ]
        )
        return
    _changes_table([(e.detected, e.verdict, e.alert) for e in entries])


@perf.command("alerts")
@click.option("--all", "show_all", is_flag=True, help="Resolved alerts too.")
@output_options
@pass_app
def alerts(app: AppContext, show_all: bool, as_json: bool) -> None:
    """Alerts of confirmed changes: firing (and with --all, resolved)."""
    from aqe.perf.alerts import alert_summary

    state = run(_state(app))
    entries = [
        e
        for e in sorted(state.changes.values(), key=lambda e: e.detected_seq)
        if e.alert == "firing" or (show_all and e.alert)
    ]
    rows: list[dict[str, Any]] = [
        {
            "change_id": e.detected.change_id,
            "state": e.alert,
            "summary": alert_summary(e),
            "benchmark": e.detected.benchmark,
            "direction": e.detected.direction,
            "magnitude": e.verified.magnitude if e.verified else e.detected.magnitude,
            "commit_before": e.detected.commit_before,
            "commit_after": e.detected.commit_after,
            "delivered": list(e.delivered),
        }
        for e in entries
    ]
    if as_json:
        print_json(rows)
        return
    emit_table(
        ["change", "state", "summary", "delivered"],
        [
            [r["change_id"], r["state"], r["summary"], ", ".join(r["delivered"]) or "-"]
            for r in rows
        ],
    )


def _sinks(stdout: bool, webhooks: tuple[str, ...], alertmanager: str | None) -> list[AlertSink]:
    from aqe.perf.sinks import AlertmanagerSink, StdoutSink, WebhookSink

    sinks: list[AlertSink] = [StdoutSink()] if stdout else []
    sinks += [
        WebhookSink(url, name="webhook" if i == 0 else f"webhook-{i + 1}")
        for i, url in enumerate(webhooks)
    ]
    if alertmanager:
        sinks.append(AlertmanagerSink(alertmanager))
    return sinks


@perf.command("watch")
@click.option("--once", is_flag=True, help="One round, then exit.")
@click.option(
    "--interval", type=float, default=30.0, show_default=True, help="Seconds between rounds."
)
@click.option(
    "--runners",
    type=int,
    default=0,
    show_default=True,
    help="Run confirmations here with N bench runners (0: leave them to the fleet).",
)
@click.option(
    "--stdout/--no-stdout", "to_stdout", default=True, show_default=True, help="Print alerts."
)
@click.option(
    "--webhook",
    "webhooks",
    multiple=True,
    metavar="URL",
    help="POST alerts here (Slack-compatible JSON; repeatable).",
)
@click.option(
    "--alertmanager",
    metavar="URL",
    default=None,
    help="Alertmanager base URL (POST /api/v2/alerts).",
)
@click.option(
    "--rounds", type=int, default=5, show_default=True, help="A/B re-run pairs per confirmation."
)
@click.option(
    "--repeat", type=int, default=3, show_default=True, help="Timed runs per re-run step."
)
@click.option(
    "--python",
    "python",
    default=sys.executable,
    show_default=False,
    help="Interpreter that runs the timing harness [this one].",
)
@_detect_options
@output_options
@pass_app
def watch(
    app: AppContext,
    once: bool,
    interval: float,
    runners: int,
    to_stdout: bool,
    webhooks: tuple[str, ...],
    alertmanager: str | None,
    rounds: int,
    repeat: int,
    python: str,
    min_effect: float,
    alpha: float,
    penalty: float,
    min_size: int,
    as_json: bool,
) -> None:
    """Detect, start confirmations, record verdicts, raise and deliver alerts (in rounds).

    The perf state resumes from the perf projection's checkpoint (as `aqe consume perf`
    leaves it), the confirm instances and verdicts from the perf-confirms projection's:
    each round reads only what AQE_PERF and AQE_WORKFLOWS added since.
    """
    import msgspec

    from aqe.perf.pipeline import ConfirmOptions, WatchReport

    cfg = _config(min_effect, alpha, penalty, min_size)
    options = ConfirmOptions(rounds=rounds, repeat=repeat, min_effect=min_effect, python=python)
    sinks = _sinks(to_stdout and not as_json, webhooks, alertmanager)

    async def go() -> list[WatchReport]:
        reports = []
        async with open_log(app) as log:
            while True:
                reports += await _round(app, log, sinks, cfg, options, runners)
                if once:
                    return reports
                await asyncio.sleep(interval)

    reports = run(go())
    if as_json:
        print_json([msgspec.to_builtins(r) for r in reports])
        return
    for r in reports:
        console(stderr=True).print(
            f"{r.series} series, {len(r.detected)} new changes, "
            f"{len(r.confirmations)} confirmations started, {r.verdicts} verdicts, "
            f"{r.alerts} alert events, {sum(d.ok for d in r.deliveries)} deliveries"
        )


async def _round(
    app: AppContext,
    log: Any,
    sinks: list[AlertSink],
    cfg: DetectConfig,
    options: ConfirmOptions,
    runners: int,
) -> list[Any]:
    from aqe.app import caught_up_state
    from aqe.perf.confirms import ConfirmsProjection
    from aqe.perf.pipeline import confirm_here, watch_once
    from aqe.perf.series import PerfProjection

    projection = PerfProjection()
    confirms = ConfirmsProjection()

    # Both from their projection's checkpoint, not from sequence 1.
    def state_of(log: Any) -> Any:
        return caught_up_state(log, app, projection)

    def confirms_of(log: Any) -> Any:
        return caught_up_state(log, app, confirms)

    async def once() -> Any:
        return await watch_once(
            log, sinks, config=cfg, options=options, state_of=state_of, confirms_of=confirms_of
        )

    first = await once()
    if runners <= 0 or not first.confirmations:
        return [first]
    from aqe.coordination.nats_bus import NatsBus

    bus = NatsBus(log.connection)
    await confirm_here(log, bus, first.confirmations, runners=runners, confirms_of=confirms_of)
    return [first, await once()]


@perf.command("quality")
@click.option("--series", "n_series", type=int, default=200, show_default=True)
@click.option("--length", type=int, default=500, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--threshold",
    type=float,
    default=0.10,
    show_default=True,
    help="The fixed-threshold rule's limit.",
)
@_detect_options
@output_options
def quality(
    n_series: int,
    length: int,
    seed: int,
    threshold: float,
    min_effect: float,
    alpha: float,
    penalty: float,
    min_size: int,
    as_json: bool,
) -> None:
    """Score detection on generated labelled series against a fixed-threshold rule."""
    from aqe.perf.quality import evaluate, generate

    cfg = _config(min_effect, alpha, penalty, min_size)
    if not as_json:
        console(stderr=True).print(
            f"scoring {n_series} series of {length} points (detection, confirm, threshold rule)..."
        )
    rows = evaluate(generate(n_series, length, seed=seed), config=cfg, threshold=threshold)
    data = [
        {
            "method": r.method,
            "precision": round(r.precision, 4),
            "recall": round(r.recall, 4),
            "false_alarms_per_1000": round(r.false_per_1000, 3),
            "delay_mean": r.delay_mean,
            "delay_median": r.delay_median,
            "true_changes": r.true_changes,
            "alarms": r.alarms,
            "hits": r.hits,
            "false_alarms": r.false_alarms,
            "confirm_removed_false_alarms": r.removed_false_alarms,
            "confirm_lost_hits": r.lost_hits,
        }
        for r in rows
    ]
    if as_json:
        print_json(data)
        return
    emit_table(
        [
            "method",
            Column("precision", "right"),
            Column("recall", "right"),
            Column("FA/1k pts", "right"),
            Column("delay (mean/median)", "right"),
            Column("confirm removed FA / lost hits", "right"),
        ],
        [
            [
                d["method"],
                f"{d['precision']:.3f}",
                f"{d['recall']:.3f}",
                f"{d['false_alarms_per_1000']:.2f}",
                "-"
                if d["delay_mean"] is None
                else f"{d['delay_mean']:.1f} / {d['delay_median']:.0f}",
                "-"
                if d["confirm_removed_false_alarms"] is None
                else f"{d['confirm_removed_false_alarms']} / {d['confirm_lost_hits']}",
            ]
            for d in data
        ],
    )
