"""``aqe demo``: the main job end to end on the embedded (or configured) server."""

from __future__ import annotations

import time
from typing import Any

import click

from aqe.cli._context import AppContext, console, open_log, pass_app, run
from aqe.cli._projections import fold_progress, pending_events, progress_bar, projections_root


@click.command()
@click.option(
    "--runs",
    default=30,
    show_default=True,
    type=click.IntRange(min=1, max=10_000),
    help="CI runs to simulate.",
)
@click.option(
    "--seed",
    default=7,
    show_default=True,
    help="Simulation seed (same seed, same events, same ids: a second demo stores nothing new).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@pass_app
def demo(app: AppContext, runs: int, seed: int, quiet: bool) -> None:
    """Publish a realistic fleet's events, fold them into projections, show what they know.

    Simulates agents registering and heartbeating, a pattern library being seeded and
    RUNS CI runs of a suite with flaky and broken tests; each run lands as one atomic
    batch. Then folds the catalog projection, checks it against a rebuild from the
    log, and prints it.
    """
    from aqe.cli._render import render_catalog
    from aqe.demo import FleetPlan, simulate_fleet
    from aqe.log import NewEvent
    from aqe.projections import (
        CatalogProjection,
        ProjectionRunner,
        SnapshotStore,
        projection_lock,
        verify,
    )
    from aqe.projections.deadletter import JetStreamDeadLetters

    out = console()
    setup, sim_runs = simulate_fleet(FleetPlan(runs=runs, seed=seed))
    total = len(setup) + sum(len(r.events) for r in sim_runs)
    root = projections_root(app)

    async def go() -> dict[str, Any]:
        async with open_log(app) as log:
            where = app.settings.nats_url or "the embedded nats-server"
            out.print(f"[bold]1.[/bold] publishing {total} fleet events to {where}")
            started = time.perf_counter()
            new = dups = 0
            with progress_bar(total, "publish", not quiet) as tick:
                results = await log.append_many([NewEvent(event=e) for e in setup])
                new += sum(not r.duplicate for r in results)
                dups += sum(r.duplicate for r in results)
                done = len(setup)
                for sim in sim_runs:
                    batch = await log.append_batch([NewEvent(event=e) for e in sim.events])
                    new += batch.count - batch.duplicates
                    dups += batch.duplicates
                    done += batch.count
                    tick(done)
            publish_s = time.perf_counter() - started
            out.print(
                f"   {new} appended, {dups} already stored (deduplicated by event id), "
                f"{publish_s:.2f} s; each CI run landed as one atomic batch"
            )

            projection = CatalogProjection()
            out.print("[bold]2.[/bold] folding the log into the catalog projection")
            store = SnapshotStore(projection, root / projection.name)
            pending, start = await pending_events(log, projection, root)
            with (
                projection_lock(root / projection.name),
                progress_bar(pending, "consume catalog", not quiet) as set_completed,
            ):
                stats = await ProjectionRunner(
                    projection,
                    log,
                    store,
                    JetStreamDeadLetters(log.connection),
                    on_progress=fold_progress(set_completed, start),
                    progress_every=1000,
                ).run()
            out.print(
                f"   applied {stats.applied} new events ({stats.rate:,.0f} events/s), "
                f"{stats.dead_letters} dead letters"
            )
            out.print("[bold]3.[/bold] checking the projection against a rebuild from the log")
            report = await verify(projection, log, root)
            verdict = "[green]identical[/green]" if report.equal else "[red]DIFFERENT[/red]"
            out.print(f"   live vs rebuilt: {verdict} ({report.live_bytes} bytes)")
            return {"state": store.load(), "equal": report.equal}

    result = run(go())
    snap = result["state"]
    out.print("[bold]4.[/bold] what the catalog knows")
    render_catalog(snap.state, snap.checkpoints)
    out.print(
        "\nnext: [bold]aqe events tail[/bold] · [bold]aqe projections list[/bold] · "
        "[bold]aqe replay catalog --verify[/bold] · [bold]aqe server status[/bold]"
    )
    if not result["equal"]:
        raise SystemExit(1)
