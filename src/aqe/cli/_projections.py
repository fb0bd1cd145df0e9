"""``aqe consume``, ``aqe replay`` and ``aqe projections list|show``."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from aqe.app import AppContext, fold_progress, open_log, pending_events, projections_root, run
from aqe.cli._context import console, json_option, pass_app, print_json
from aqe.cli._metrics import metrics_port_option, start_metrics
from aqe.cli._table import Cell, emit_table, output_options

if TYPE_CHECKING:
    from aqe.app import ProgressBar
    from aqe.log.jetstream import JetStreamEventLog
    from aqe.projections import Progress, Projection


@contextlib.contextmanager
def progress_bar(total: int, label: str, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr; yields ``set_completed(n)`` (a no-op when disabled)."""
    if not enabled or total <= 0:
        yield lambda _n: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=console(stderr=True),
        transient=True,
    )
    task = bar.add_task(label, total=total)
    with bar:
        yield lambda n: bar.update(task, completed=min(total, n))


async def catch_up(
    log: JetStreamEventLog,
    app: AppContext,
    projection: Projection[Any],
    *,
    quiet: bool,
    materialize: bool = True,
) -> str | None:
    """:func:`aqe.app.catch_up` with a progress bar on stderr unless ``quiet``."""
    from aqe.app import catch_up as fold

    return await fold(log, app, projection, bar=fold_bar(not quiet), materialize=materialize)


def fold_bar(enabled: bool) -> ProgressBar | None:
    """:func:`progress_bar` as the folds of :mod:`aqe.app` take it; None when not ``enabled``."""

    def bar(total: int, label: str) -> contextlib.AbstractContextManager[Callable[[int], None]]:
        return progress_bar(total, label, True)

    return bar if enabled else None


def _stats_line(stats: Any) -> str:
    cps = ", ".join(f"{k}={v}" for k, v in sorted(stats.checkpoints.items()))
    unparked = (
        f" ({stats.unparked} not parked: the dead-letter stream refused them; their "
        "references are in the snapshot, see `aqe projections list --json`)"
        if stats.unparked
        else ""
    )
    return (
        f"{stats.projection}: applied {stats.applied} events, {stats.dead_letters} dead letters"
        f"{unparked}, {stats.rate:,.0f} events/s; checkpoints {cps}"
    )


@click.command()
@click.argument("name")
@click.option(
    "--follow",
    "-f",
    is_flag=True,
    help="Keep folding new events until interrupted (Ctrl-C or SIGTERM).",
)
@click.option(
    "--flush-every",
    default=10_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Save state and checkpoints at least every N events.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@metrics_port_option
@json_option
@pass_app
def consume(
    app: AppContext,
    name: str,
    follow: bool,
    flush_every: int,
    quiet: bool,
    metrics_port: int | None,
    as_json: bool,
) -> None:
    """Fold the log into projection NAME from its checkpoint.

    The projections are listed by `aqe projections list`.
    """
    from aqe.metrics import watch_log
    from aqe.projections import (
        ProjectionRunner,
        SnapshotStore,
        get_projection,
        projection_lock,
    )
    from aqe.projections.deadletter import JetStreamDeadLetters

    projection = get_projection(name)
    root = projections_root(app)

    async def go() -> Any:
        async with open_log(app) as log:
            total, start = await pending_events(log, projection, root)
            bar_total = 0 if follow else total
            with (
                projection_lock(root / projection.name),
                progress_bar(bar_total, f"consume {name}", not (quiet or as_json)) as set_done,
            ):
                on_progress = fold_progress(set_done, start)
                watcher = None
                if metrics_port is not None:  # every event reported, for the metrics
                    metrics = start_metrics(metrics_port)
                    for stream, seq in start.items():
                        metrics.checkpoint(projection.name, stream, seq)
                    on_progress = _both(on_progress, metrics.progress())
                    watcher = asyncio.ensure_future(watch_log(log, metrics, projection.streams))
                runner = ProjectionRunner(
                    projection,
                    log,
                    SnapshotStore(projection, root / projection.name),
                    JetStreamDeadLetters(log.connection),
                    flush_every=flush_every,
                    on_progress=on_progress,
                    progress_every=1 if watcher else 1000,
                )
                task = asyncio.ensure_future(runner.run(follow=follow))
                if watcher is not None:
                    task.add_done_callback(lambda _: watcher.cancel())
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, task.cancel)
                if follow and not as_json:
                    console(stderr=True).print(
                        f"following {', '.join(projection.streams)} into {root / name} "
                        "(Ctrl-C stops)"
                    )
                try:
                    return await task
                except asyncio.CancelledError:
                    return None

    stats = run(go())
    if stats is None:
        console(stderr=True).print(f"{name}: stopped; state and checkpoints saved")
        return
    if as_json:
        print_json(msgspec_dump(stats))
    else:
        console().print(_stats_line(stats))


def _both(
    first: Callable[[Progress], None], second: Callable[[Progress], None]
) -> Callable[[Progress], None]:
    def update(p: Progress) -> None:
        first(p)
        second(p)

    return update


def msgspec_dump(value: Any) -> Any:
    """Structs to JSON-ready builtins, properties included where useful."""
    import msgspec

    data = msgspec.to_builtins(value)
    if hasattr(value, "rate"):
        data["rate"] = round(value.rate, 1)
    return data


@click.command()
@click.argument("name")
@click.option(
    "--until-seq",
    type=click.IntRange(min=0),
    metavar="N",
    help="Stop every stream at sequence N (replay the past as of N).",
)
@click.option(
    "--verify",
    is_flag=True,
    help="Compare the live projection with the log (lag behind each stream's end, and "
    "a rebuild aside up to the live checkpoints); change nothing.",
)
@click.option(
    "--as-of",
    "as_of",
    metavar="SEQ|TIME",
    help="Build the projection as it was at sequence SEQ of every stream, or at a time "
    "(2026-12-01T12:00Z: each stream up to its last event stored by then); needs --into.",
)
@click.option(
    "--into",
    type=click.Path(file_okay=False, path_type=Path),
    help="Build into DIR/NAME instead of the live directory (the live one is untouched).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option
@pass_app
def replay(
    app: AppContext,
    name: str,
    until_seq: int | None,
    verify: bool,
    as_of: str | None,
    into: Path | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Rebuild projection NAME from the log into a fresh directory and swap it in.

    With --verify, print how far the live projection lags each stream's end and any
    difference from a rebuild aside up to its checkpoints; the exit status is 1 when
    it lags or differs. With --as-of and --into, build the past into a side directory.
    """
    from aqe.projections import get_projection, rebuild
    from aqe.projections import verify as verify_projection
    from aqe.projections.deadletter import JetStreamDeadLetters, MemoryDeadLetters

    projection = get_projection(name)
    root = projections_root(app) if into is None else into
    if as_of is not None and (into is None or until_seq is not None or verify):
        raise click.UsageError("--as-of needs --into DIR and goes without --until-seq/--verify")
    as_of_seq, as_of_ns = _parse_as_of(as_of) if as_of is not None else (None, None)
    if as_of_seq is not None:
        until_seq = as_of_seq
    until = None if until_seq is None else dict.fromkeys(projection.streams, until_seq)

    async def go() -> Any:
        async with open_log(app) as log:
            nonlocal until
            if as_of_ns is not None:
                from aqe.projections import sequence_at

                until = {s: await sequence_at(log, s, as_of_ns) for s in projection.streams}
            total = 0
            if verify:  # the rebuild aside stops at the live checkpoints
                _, start = await pending_events(log, projection, root)
            for stream in projection.streams:
                last = await log.last_seq(stream)
                if verify:
                    last = min(last, start[stream])
                total += min(last, until[stream]) if until is not None else last
            label = f"{'verify' if verify else 'replay'} {name}"
            with progress_bar(total, label, not (quiet or as_json)) as set_completed:
                on_progress = fold_progress(set_completed, {})
                if verify:
                    return await verify_projection(projection, log, root, on_progress=on_progress)
                return await rebuild(
                    projection,
                    log,
                    root,
                    # A build of the past beside the live one parks nothing again.
                    JetStreamDeadLetters(log.connection) if into is None else MemoryDeadLetters(),
                    until=until,
                    on_progress=on_progress,
                )

    result = run(go())
    if as_json:
        print_json(msgspec_dump(result))
    elif verify:
        out = console()
        cps = ", ".join(f"{k}={v}" for k, v in sorted(result.checkpoints.items()))
        if result.equal:
            out.print(
                f"{name}: live state equals a rebuild from the log ({cps}, "
                f"{result.live_bytes} bytes)"
            )
        else:
            why = f"lags the log by {result.lag} events" if result.lag else "differs from the log"
            out.print(f"[red]{name}: live state {why} ({cps})[/red]")
            for line in result.differences:
                out.print(f"  {line}")
    elif into is not None:
        console().print(_stats_line(result) + f" (built into {root / name})")
    else:
        console().print(_stats_line(result) + " (rebuilt from sequence 1 and swapped in)")
    if verify and not result.equal:
        raise SystemExit(1)


def _parse_as_of(text: str) -> tuple[int | None, int | None]:
    """``--as-of``: (sequence, None) or (None, epoch nanoseconds)."""
    from datetime import UTC, datetime

    if text.isdigit():
        return int(text), None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: neither a sequence nor a time like 2026-12-01T12:00Z", param_hint="--as-of"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return None, int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000


@click.group()
def projections() -> None:
    """List projections and show what they know."""


@projections.command(name="list")
@output_options
@pass_app
def list_(app: AppContext, as_json: bool) -> None:
    """Every projection with its checkpoints and how far it lags the log."""
    from aqe.projections import PROJECTIONS, SnapshotStore, get_projection

    root = projections_root(app)

    async def go() -> list[dict[str, Any]]:
        rows = []
        async with open_log(app) as log:
            for pname in sorted(PROJECTIONS):
                proj = get_projection(pname)
                header = SnapshotStore(proj, root / pname).describe()
                cps = header.get("checkpoints", {})
                lag = 0
                for stream in proj.streams:
                    lag += max(0, await log.last_seq(stream) - cps.get(stream, 0))
                rows.append(
                    {
                        "name": pname,
                        "streams": list(proj.streams),
                        "checkpoints": cps,
                        "lag": lag,
                        "events_applied": header.get("events_applied", 0),
                        "dead_letters": header.get("dead_letters", 0),
                        "unparked": header.get("unparked_total", 0),
                        "unparked_letters": header.get("unparked", []),
                        "path": str(root / pname),
                        "built": bool(header),
                    }
                )
        return rows

    rows = run(go())
    if as_json:
        print_json(rows)
        return
    cells: list[list[Cell]] = []
    for r in rows:
        cps = ", ".join(f"{k}={v}" for k, v in sorted(r["checkpoints"].items())) or "never run"
        cells.append(
            [
                r["name"],
                " ".join(r["streams"]),
                cps,
                r["lag"],
                r["events_applied"],
                str(r["dead_letters"])
                + (f" ({r['unparked']} not parked)" if r["unparked"] else ""),
            ]
        )
    emit_table(["projection", "streams", "checkpoints", "lag", "applied", "dead letters"], cells)


@projections.command()
@click.argument("name")
@output_options
@pass_app
def show(app: AppContext, name: str, as_json: bool) -> None:
    """Print what projection NAME knows (as of its checkpoint; run `aqe consume` first)."""
    from aqe.cli._render import render_state
    from aqe.projections import SnapshotStore, get_projection

    projection = get_projection(name)
    snap = SnapshotStore(projection, projections_root(app) / name).load()
    if as_json:
        import msgspec

        print_json(
            {
                "checkpoints": snap.checkpoints,
                "state": msgspec.json.decode(projection.encode(snap.state)),
            }
        )
        return
    render_state(name, snap.state, snap.checkpoints)
