"""``aqe streams apply|list|info``: make the server match ``streams/*.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from aqe.app import AppContext, open_log, run
from aqe.cli._context import console, json_option, pass_app, print_json
from aqe.cli._table import Cell, emit_table, output_options, styled


@click.group()
def streams() -> None:
    """Stream definitions (streams/*.json) and their state on the server."""


def _specs(app: AppContext, directory: Path | None) -> Any:
    from aqe.log.streams import load_stream_specs, with_replicas

    return with_replicas(load_stream_specs(directory), app.settings.replicas)


@streams.command()
@click.option("--dry-run", is_flag=True, help="Show what would change without changing it.")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Folder of stream files [default: the project's streams/].",
)
@json_option
@pass_app
def apply(app: AppContext, dry_run: bool, directory: Path | None, as_json: bool) -> None:
    """Create or update streams so the server matches the files; print what changed."""
    from aqe.log.admin import apply_streams

    specs = _specs(app, directory)

    async def go() -> Any:
        async with open_log(app, ensure_streams=False) as log:
            return await apply_streams(log.connection, specs, dry_run=dry_run)

    changes = run(go())
    if as_json:
        print_json(changes)
        return
    out = console()
    verb = {"create": "would create", "update": "would update"} if dry_run else {}
    for change in changes:
        action = verb.get(change.action, change.action)
        out.print(f"[bold]{change.name}[/bold]: {action}")
        if change.action == "update":
            for field, (old, new) in sorted(change.diff.items()):
                out.print(f"    {field}: {old!r} -> {new!r}")


@streams.command(name="list")
@output_options
@pass_app
def list_(app: AppContext, as_json: bool) -> None:
    """List declared and live streams with message counts and drift."""
    from aqe.log.admin import describe_streams

    async def go() -> Any:
        async with open_log(app, ensure_streams=False) as log:
            return await describe_streams(log.connection, log.specs)

    states = run(go())
    if as_json:
        print_json(states)
        return
    cells: list[list[Cell]] = []
    for s in states:
        if not s.exists:
            status: Cell = styled("missing: run `aqe streams apply`", "yellow")
        elif not s.declared:
            status = "not declared in streams/"
        elif s.drift:
            status = styled(f"drift: {', '.join(sorted(s.drift))}", "yellow")
        else:
            status = styled("in sync", "green")
        cells.append([s.name, s.messages, s.bytes, s.first_seq, s.last_seq, status])
    emit_table(["stream", "messages", "bytes", "first", "last", "status"], cells)


@streams.command()
@click.argument("name")
@json_option
@pass_app
def info(app: AppContext, name: str, as_json: bool) -> None:
    """Show one stream: its state, live configuration and, on a cluster, its replicas
    (leader, and each follower's lag and whether it is current)."""
    from aqe.errors import ConfigError
    from aqe.log.admin import describe_streams

    async def go() -> Any:
        async with open_log(app, ensure_streams=False) as log:
            return await describe_streams(log.connection, log.specs)

    found = [s for s in run(go()) if s.name == name]
    if not found or not found[0].exists:
        raise ConfigError(f"stream {name} does not exist on the server")
    state = found[0]
    if as_json:
        print_json(state)
        return
    out = console()
    out.print(
        f"[bold]{state.name}[/bold]  messages {state.messages}  bytes {state.bytes}  "
        f"seq {state.first_seq}..{state.last_seq}"
    )
    for key, value in state.config.items():
        mark = "  [yellow](differs from file)[/yellow]" if key in state.drift else ""
        out.print(f"  {key}: {value!r}{mark}")
    if state.replicas:
        replicas: list[list[Cell]] = []
        for replica in state.replicas:
            if replica.offline:
                current = styled("offline", "red")
            elif replica.current:
                current = styled("yes", "green")
            else:
                current = styled("no: catching up", "yellow")
            seen = "-" if replica.active_s is None else f"{replica.active_s:.1f} s ago"
            role = "leader" if replica.leader else "follower"
            replicas.append([replica.name, role, current, replica.lag, seen])
        emit_table(["replica", "role", "current", "lag", "last seen"], replicas)
