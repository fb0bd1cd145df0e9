"""``aqe flaky-watch``: start the flaky workflow from the history, carry out its quarantines."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import click

from aqe.app import AppContext, open_log, projections_root, run
from aqe.cli._context import console, json_option, pass_app, print_json


@click.command("flaky-watch")
@click.option(
    "--source",
    required=True,
    help="The project the reruns check out: a local path or a git URL.",
)
@click.option("--workdir", default=".", show_default=True, help="Where pytest runs in it.")
@click.option(
    "--python",
    "python",
    default=sys.executable,
    show_default="this interpreter",
    help="The Python that runs pytest in the sandbox.",
)
@click.option("--param", "params", multiple=True, metavar="K=V", help="A workflow param.")
@click.option("--once", is_flag=True, help="One round, then exit.")
@click.option("--every", default=10.0, show_default=True, help="Seconds between rounds.")
@json_option
@pass_app
def flaky_watch(
    app: AppContext,
    source: str,
    workdir: str,
    python: str,
    params: tuple[str, ...],
    once: bool,
    every: float,
    as_json: bool,
) -> None:
    """Start a flaky workflow for each test the history shows flaky, quarantine what it finds.

    Each round folds the test history, starts one instance (id derived from the test
    and the run) for each test that passed on a retry or failed on a commit where it
    had passed, unless it is quarantined or under investigation, and appends the
    quarantine and unquarantine events the instances decided on. Instances run on
    `aqe agent run --capability workflows,pytest` (or separate drivers and runners).
    """
    base = {"source": source, "workdir": workdir, "python": python}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: use K=V", param_hint="--param")
        base[key] = value

    async def one_round(log: Any) -> dict[str, Any]:
        from aqe.projections import HistoryProjection, ProjectionRunner, SnapshotStore
        from aqe.projections.deadletter import JetStreamDeadLetters
        from aqe.projections.runner import projection_lock
        from aqe.workflows.flaky_watch import carry_out_quarantines, start_from_history

        projection = HistoryProjection()
        where = projections_root(app) / projection.name
        store = SnapshotStore(projection, where)
        with projection_lock(where):
            await ProjectionRunner(
                projection, log, store, JetStreamDeadLetters(log.connection)
            ).run()
        state = store.load().state
        started = await start_from_history(log, state, base, started_by="aqe flaky-watch")
        quarantines = await carry_out_quarantines(log)
        return {"started": started, "quarantine_events": quarantines}

    async def go() -> None:
        async with open_log(app) as log:
            while True:
                done = await one_round(log)
                if as_json:
                    print_json(done)
                else:
                    for instance_id in done["started"]:
                        console().print(f"started {instance_id}")
                    if done["quarantine_events"]:
                        console().print(f"{done['quarantine_events']} quarantine events appended")
                if once:
                    return
                await asyncio.sleep(every)

    run(go())
