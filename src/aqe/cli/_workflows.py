"""``aqe workflows list|show|cancel|run`` and ``aqe workflow start NAME``."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import TYPE_CHECKING, Any

import click

from aqe.app import AppContext, open_log, run, workflow_registry
from aqe.cli._context import console, json_option, pass_app, print_json

if TYPE_CHECKING:
    from aqe.workflows.engine import Instance


def _row(instance: Instance) -> dict[str, Any]:
    return {
        "instance_id": instance.instance_id,
        "workflow": instance.workflow,
        "status": instance.status or ("cancelling" if instance.cancel_requested else "running"),
        "steps": len(instance.steps),
        "steps_done": len(instance.results),
        "timers": dict(instance.timers),
        "decisions": dict(instance.decisions),
        "params": dict(instance.params),
        "reasons": list(instance.reasons),
        "result": dict(instance.result),
        "last_seq": instance.last_seq,
    }


@click.group()
def workflows() -> None:
    """Durable workflows: list, show, cancel, and the driver that runs them."""


@workflows.command("list")
@json_option
@pass_app
def list_(app: AppContext, as_json: bool) -> None:
    """Every workflow instance and where it stands."""
    from aqe.workflows._store import read_instances

    async def go() -> list[dict[str, Any]]:
        async with open_log(app) as log:
            return [_row(i) for i in (await read_instances(log)).values()]

    rows = run(go())
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table("instance", "workflow", "status", "steps", "decisions")
    for row in rows:
        table.add_row(
            row["instance_id"],
            row["workflow"],
            row["status"],
            f"{row['steps_done']}/{row['steps']}",
            ", ".join(f"{k}: {v}" for k, v in row["decisions"].items()),
        )
    console().print(table)


@workflows.command("show")
@click.argument("instance_id")
@json_option
@pass_app
def show(app: AppContext, instance_id: str, as_json: bool) -> None:
    """One instance: its state and every event, with reasons."""
    import msgspec

    from aqe.errors import CommandRejectedError
    from aqe.workflows._store import read_instance

    async def go() -> tuple[Instance | None, list[Any]]:
        async with open_log(app) as log:
            return await read_instance(log, instance_id)

    instance, facts = run(go())
    if instance is None:
        raise CommandRejectedError(f"no workflow instance {instance_id}")
    events = [
        {"seq": f.seq, "recorded_at_ns": f.recorded_at_ns, **msgspec.to_builtins(f.event)}
        for f in facts
    ]
    if as_json:
        print_json({**_row(instance), "events": events})
        return
    out = console()
    row = _row(instance)
    out.print(f"[bold]{instance_id}[/bold] ({row['workflow']}): {row['status']}")
    for event in events:
        detail = {k: v for k, v in event.items() if k not in ("seq", "recorded_at_ns", "event")}
        detail.pop("instance_id", None)
        out.print(f"  {event['seq']:>6}  {event['event']}  {detail}")


@workflows.command("cancel")
@click.argument("instance_id")
@click.option("--reason", default="cancelled by hand", show_default=True)
@json_option
@pass_app
def cancel(app: AppContext, instance_id: str, reason: str, as_json: bool) -> None:
    """Ask the driver to end an instance as cancelled (queued steps still run)."""
    from aqe.workflows._store import cancel_instance

    async def go() -> int:
        async with open_log(app) as log:
            return (await cancel_instance(log, instance_id, reason=reason, by="cli")).seq

    seq = run(go())
    if as_json:
        print_json({"instance_id": instance_id, "cancel_seq": seq})
    else:
        console().print(f"{instance_id}: cancel requested (seq {seq})")


@workflows.command("run")
@pass_app
def run_driver(app: AppContext) -> None:
    """Drive every workflow instance until stopped (SIGTERM, Ctrl-C)."""
    from aqe.workflows.driver import WorkflowDriver

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with open_log(app) as log:
            driver = WorkflowDriver(log, workflow_registry())
            await driver.start()
            console(stderr=True).print("driving workflows: " + ", ".join(driver.workflows))
            try:
                await stop.wait()
            finally:
                await driver.stop()

    run(go())


@click.group()
def workflow() -> None:
    """Start a workflow instance."""


@workflow.command("start")
@click.argument("name")
@click.option("--param", "params", multiple=True, metavar="K=V", help="A parameter (repeatable).")
@click.option("--id", "instance_id", metavar="ID", help="The instance id [default: NAME-<random>].")
@json_option
@pass_app
def start(
    app: AppContext, name: str, params: tuple[str, ...], instance_id: str | None, as_json: bool
) -> None:
    """Start an instance of workflow NAME; a driver (aqe workflows run) runs it.

    For rerun: --param test=NODE_ID --param source=PATH [--param times=N]; python
    defaults to this interpreter.
    """
    from aqe.errors import ConfigError
    from aqe.workflows._store import start_instance

    known = workflow_registry()
    if name not in known:
        raise ConfigError(f"no workflow {name!r}; known: {', '.join(sorted(known))}")
    values: dict[str, str] = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--param {item!r}: expected KEY=VALUE")
        values[key] = value
    if name == "rerun":
        values.setdefault("python", sys.executable)

    async def go() -> tuple[str, int]:
        async with open_log(app) as log:
            started, stored = await start_instance(
                log, name, values, instance_id=instance_id, started_by="cli", reasons=("by hand",)
            )
            return started, stored.seq

    started, seq = run(go())
    if as_json:
        print_json({"instance_id": started, "workflow": name, "params": values, "seq": seq})
    else:
        console().print(f"started {started} (seq {seq})")
