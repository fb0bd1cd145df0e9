"""``aqe sandbox run|backends``: try a command in a sandbox, see which backends work here.

Parsing and rendering only; the sandbox lives in :mod:`aqe.sandbox`.
"""

from __future__ import annotations

import re
import sys
from typing import Any

import click

from aqe.app import run
from aqe.cli._context import console, json_option, print_json

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$", re.IGNORECASE)
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_BYTES = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


class Duration(click.ParamType[float]):
    """``10s``, ``1.5m``, ``500ms``, ``2h`` or plain seconds, as seconds."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            return value
        match = _DURATION.match(str(value))
        if match is None:
            self.fail(f"{value!r} is not a duration such as 10s, 1.5m or 500ms", param, ctx)
        return float(match[1]) * _SECONDS[(match[2] or "s").lower()]


class Size(click.ParamType[int]):
    """``512M``, ``2G``, ``64k`` or plain bytes, as bytes."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        match = _SIZE.match(str(value))
        if match is None:
            self.fail(f"{value!r} is not a size such as 512M, 2G or 64k", param, ctx)
        return int(match[1]) * _BYTES[match[2].lower()]


def _env_pair(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str]:
    env = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE", ctx, param)
        env[key] = rest
    return env


@click.group()
def sandbox() -> None:
    """Run commands in isolation with limits (process, namespace, container backends)."""


@sandbox.command("backends")
@json_option
def backends(as_json: bool) -> None:
    """Which sandbox backends work on this machine, and why the others do not."""
    from aqe.sandbox import BACKENDS, SandboxUnavailableError, open_sandbox

    rows: list[dict[str, Any]] = []
    for name in BACKENDS:
        try:
            box = open_sandbox(name)
        except SandboxUnavailableError as exc:
            rows.append({"backend": name, "available": False, "isolates": [], "why": exc.reason})
            continue
        rows.append(
            {"backend": name, "available": True, "isolates": sorted(box.isolates), "why": ""}
        )
    if as_json:
        print_json(rows)
        return
    out = console()
    for row in rows:
        if row["available"]:
            isolates = ", ".join(row["isolates"]) or "no network or file-system isolation"
            out.print(f"[green]{row['backend']:<10}[/] available  isolates: {isolates}")
        else:
            out.print(f"[red]{row['backend']:<10}[/] unavailable: {row['why']}", markup=True)


@sandbox.command("run", context_settings={"ignore_unknown_options": True})
@click.option(
    "--backend",
    type=click.Choice(["process", "namespace", "container"]),
    default="process",
    show_default=True,
)
@click.option("--source", default=".", show_default=True, help="Directory or git URL to copy.")
@click.option("--commit", help="Commit to check out (git sources).")
@click.option("--image", help="Image (container backend).")
@click.option("--workdir", default=".", show_default=True, help="Directory in the copy to run in.")
@click.option("--wall", type=Duration(), default="60s", show_default=True, help="Wall-clock limit.")
@click.option("--cpu", type=Duration(), help="CPU-time limit per process.")
@click.option("--memory", type=Size(), default="2G", show_default=True, help="Memory limit.")
@click.option("--processes", type=int, default=256, show_default=True, help="Most processes.")
@click.option("--output", type=Size(), default="1M", show_default=True, help="Kept per stream.")
@click.option("--network", is_flag=True, help="Allow the network (namespace, container).")
@click.option("--env", "env", multiple=True, callback=_env_pair, help="KEY=VALUE to pass in.")
@click.option("--artefact", "artefacts", multiple=True, help="Glob of files to return.")
@json_option
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run_command(
    backend: str,
    source: str,
    commit: str | None,
    image: str | None,
    workdir: str,
    wall: float,
    cpu: float | None,
    memory: int,
    processes: int,
    output: int,
    network: bool,
    env: dict[str, str],
    artefacts: tuple[str, ...],
    as_json: bool,
    command: tuple[str, ...],
) -> int:
    """Run COMMAND in a fresh copy of --source under limits; exit with its status.

    \b
    aqe sandbox run --backend namespace --wall 10s --memory 512M -- pytest -q
    """
    from aqe.sandbox import Limits, SandboxSpec, open_sandbox

    spec = SandboxSpec(
        source=source,
        commit=commit,
        backend=backend,
        image=image,
        env=env,
        limits=Limits(
            wall_s=wall,
            cpu_s=cpu,
            memory_mb=max(1, memory // (1024 * 1024)),
            processes=processes,
            output_bytes=output,
            network=network,
        ),
        **({"artefacts": artefacts} if artefacts else {}),
    )
    box = open_sandbox(backend)
    try:
        result = run(box.run(spec, command, workdir=workdir))
    finally:
        close = getattr(box, "close", None)
        if close is not None:
            close()
    if as_json:
        print_json(result)
    else:
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        sys.stdout.flush()
        how = (
            f"exit {result.exit_code}"
            if result.exit_code is not None
            else f"signal {result.signal}"
        )
        dropped = result.stdout_dropped + result.stderr_dropped
        console(stderr=True).print(
            f"[dim]aqe sandbox ({result.backend}): {how}"
            + (f", stopped: {result.stopped}" if result.stopped else "")
            + f", {result.wall_s:.2f} s wall, {result.cpu_s:.2f} s cpu, "
            f"{result.max_rss_kb // 1024} MiB max rss"
            + (f", {dropped} output bytes dropped" if dropped else "")
            + (f", artefacts: {', '.join(sorted(result.artefacts))}" if result.artefacts else "")
            + "[/]",
            highlight=False,
        )
    if result.exit_code is not None:
        return result.exit_code
    return 128 + (result.signal or 0)
