"""``aqe tasks submit|status|list`` and ``aqe topology show|select|set|table``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from aqe.app import AppContext, open_log, run
from aqe.cli._context import console, json_option, pass_app, print_json
from aqe.cli._table import Cell, Styled, emit_table, output_options, styled

if TYPE_CHECKING:
    from aqe.coordination.topology import Decision, InForce

_TOPOLOGIES = ("star", "mesh", "ring", "hierarchical")
_FLEET_OPTION = click.option(
    "--fleet", default="default", show_default=True, help="The fleet whose topology to use."
)


def _params(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{value!r} is not KEY=VALUE", param_hint="--param")
        out[key.strip()] = val
    return out


# -- tasks --------------------------------------------------------------------------------------


@click.group()
def tasks() -> None:
    """Work for the fleet: submit tasks and see how dispatch is doing.

    Tasks and their outcomes are events in AQE_COORD (aqe.coord.task.<id>.*); a running
    fleet claims them under its topology (see `aqe topology`).
    """


@tasks.command()
@click.argument("kind")
@click.option(
    "--complexity",
    type=click.FloatRange(min=0.0, min_open=True),
    default=1.0,
    show_default=True,
    help="Relative cost (1.0 = a typical task); the topology selector reads it.",
)
@click.option(
    "--param", "params", multiple=True, metavar="KEY=VALUE", help="A task parameter (repeatable)."
)
@click.option(
    "--count", type=click.IntRange(1, 100_000), default=1, show_default=True, help="How many tasks."
)
@click.option("--id", "task_id", help="The task id (one task only; default: a fresh id).")
@click.option("--by", "submitted_by", default="cli", show_default=True, help="Who submits.")
@json_option
@pass_app
def submit(
    app: AppContext,
    kind: str,
    complexity: float,
    params: tuple[str, ...],
    count: int,
    task_id: str | None,
    submitted_by: str,
    as_json: bool,
) -> None:
    """Submit COUNT tasks of KIND; each id must be new (a repeated --id is refused)."""
    from aqe.coordination.tasks import new_task_id, submit_task
    from aqe.events import TaskSubmitted

    if task_id is not None and count != 1:
        raise click.BadParameter("--id names one task; drop --count", param_hint="--id")
    fields = _params(params)
    new = [
        TaskSubmitted(
            task_id=task_id or new_task_id(),
            kind=kind,
            complexity=complexity,
            params=fields,
            submitted_by=submitted_by,
        )
        for _ in range(count)
    ]

    async def go() -> list[dict[str, Any]]:
        out = []
        async with open_log(app) as log:
            for t in new:
                result = await submit_task(log, t)
                out.append({"task_id": t.task_id, "seq": result.seq, "subject": result.subject})
        return out

    submitted = run(go())
    if as_json:
        print_json(submitted)
        return
    for row in submitted:
        click.echo(f"submitted {row['task_id']} (seq {row['seq']})")


@tasks.command()
@output_options
@pass_app
def status(app: AppContext, as_json: bool) -> None:
    """Task counts, claims per topology and claim latency p50/p95.

    Counts: submitted, pending, in flight, completed, failed, abandoned. Latency is
    server time from a task becoming claimable to its claim.
    """
    from aqe.coordination.tasks import read_board

    async def go() -> dict[str, Any]:
        async with open_log(app) as log:
            return (await read_board(log)).summary()

    summary = run(go())
    if as_json:
        print_json(summary)
        return
    out = console()
    counts = "  ".join(
        f"{key} {summary[key]}"
        for key in ("submitted", "pending", "in_flight", "completed", "failed", "abandoned")
    )
    out.print(counts)
    out.print(
        f"claim latency p50 {summary['latency_p50_ms']:.2f} ms  "
        f"p95 {summary['latency_p95_ms']:.2f} ms"
    )
    by_topology = summary["by_topology"]
    if by_topology:
        emit_table(
            ["topology", "claims", "p50 ms", "p95 ms"],
            [
                [
                    name,
                    int(row["claims"]),
                    f"{row['latency_p50_ms']:.2f}",
                    f"{row['latency_p95_ms']:.2f}",
                ]
                for name, row in by_topology.items()
            ],
        )
    for anomaly in summary["anomalies"]:
        out.print(f"[red]anomaly[/red] {anomaly}")


@tasks.command(name="list")
@click.option(
    "--status",
    "wanted",
    type=click.Choice(["pending", "claimed", "completed", "failed"]),
    help="Only tasks in this state.",
)
@click.option(
    "--limit",
    type=click.IntRange(1),
    default=50,
    show_default=True,
    help="At most this many (newest).",
)
@output_options
@pass_app
def list_(app: AppContext, wanted: str | None, limit: int, as_json: bool) -> None:
    """Tasks with their state, owner and topology, newest first."""
    from aqe.coordination.tasks import read_board

    async def go() -> list[Any]:
        async with open_log(app) as log:
            board = await read_board(log)
        entries = sorted(board.tasks.values(), key=lambda e: -e.submitted_seq)
        if wanted == "failed":
            entries = [e for e in entries if e.ok is False]
        elif wanted is not None:
            entries = [e for e in entries if e.status == wanted]
        return entries[:limit]

    entries = run(go())
    if as_json:
        print_json(entries)
        return
    cells: list[list[Cell]] = [
        [
            e.task_id,
            e.kind,
            e.status,
            e.agent or "",
            e.topology or "",
            e.attempt,
            "" if e.ok is None else ("yes" if e.ok else styled("no", "red")),
        ]
        for e in entries
    ]
    emit_table(["task", "kind", "status", "agent", "topology", "attempt", "ok"], cells)


# -- topology -------------------------------------------------------------------------------------


@click.group()
def topology() -> None:
    """Dispatch topologies: the one in force and what the measured signals suggest.

    A fleet runs star, mesh, ring or hierarchical dispatch; its topology is the last
    TopologySelected recorded for it (whose stream sequence is the epoch). Running
    fleets follow the record and switch without losing or repeating tasks.
    """


def _in_force_dict(found: InForce) -> dict[str, Any]:
    decision = found.decision
    return {
        "fleet": found.fleet,
        "topology": found.topology,
        "epoch": found.epoch,
        "previous": decision.previous if decision else None,
        "signals": dict(decision.signals) if decision else {},
        "scores": dict(decision.scores) if decision else {},
        "reasons": list(decision.reasons) if decision else [],
        "recorded_at_ns": found.recorded_at_ns,
    }


@topology.command()
@_FLEET_OPTION
@click.option("--history", is_flag=True, help="Every decision, oldest first.")
@json_option
@pass_app
def show(app: AppContext, fleet: str, history: bool, as_json: bool) -> None:
    """The topology in force for a fleet (and with --history, every decision)."""
    from aqe.coordination.topology import topology_history, topology_in_force

    async def go() -> list[InForce]:
        async with open_log(app) as log:
            if history:
                return await topology_history(log, fleet)
            return [await topology_in_force(log, fleet)]

    found = run(go())
    if as_json:
        rows = [_in_force_dict(f) for f in found]
        print_json(rows if history else rows[0])
        return
    out = console()
    if not found or found[-1].topology is None:
        out.print(f"fleet {fleet}: no topology recorded (fleets start with star)")
        return
    for f in found:
        previous = f.decision.previous if f.decision else None
        was = previous or "none"
        out.print(f"fleet {fleet}: [bold]{f.topology}[/bold] since epoch {f.epoch} (was {was})")
        for reason in f.decision.reasons if f.decision else ():
            out.print(f"  - {reason}")


def _decision_dict(decision: Decision, fleet: str, recorded: int | None) -> dict[str, Any]:
    signals = decision.signals.as_dict() if decision.signals is not None else {}
    return {
        "fleet": fleet,
        "current": decision.previous,
        "topology": decision.topology,
        "best": decision.best,
        "switch": decision.switch,
        "scores": decision.scores,
        "latency_ms": decision.latency_ms,
        "risk_ms": decision.risk_ms,
        "calibration": decision.calibration,
        "signals": signals,
        "reasons": list(decision.reasons),
        "recorded_epoch": recorded,
    }


def _render_decision(row: dict[str, Any]) -> None:
    out = console()
    signals = row["signals"]
    out.print("signals: " + "  ".join(f"{k} {v:g}" for k, v in signals.items()))
    emit_table(
        ["topology", "latency ms", "risk ms", "score ms/task"],
        [
            [
                Styled(((name, ""), (" <- best", "bold green"))) if name == row["best"] else name,
                f"{row['latency_ms'][name]:.2f}",
                f"{row['risk_ms'][name]:.2f}",
                f"{row['scores'][name]:.2f}",
            ]
            for name in _TOPOLOGIES
        ],
    )
    for reason in row["reasons"]:
        out.print(f"  - {reason}")
    verdict = (
        f"switch {row['current'] or 'none'} -> {row['topology']}"
        if row["switch"]
        else f"stay on {row['topology']}"
    )
    out.print(f"[bold]{verdict}[/bold]")
    if row["recorded_epoch"] is not None:
        out.print(f"recorded: epoch {row['recorded_epoch']}")


@topology.command()
@_FLEET_OPTION
@click.option(
    "--agents",
    type=click.IntRange(1),
    help="Agent count [default: alive agents in AQE_AGENTS, else distinct claimers].",
)
@click.option(
    "--window",
    "window_s",
    type=click.FloatRange(min=1.0),
    default=60.0,
    show_default=True,
    help="Seconds of recent work measured.",
)
@click.option(
    "--margin",
    type=click.FloatRange(0.0, 1.0),
    default=0.2,
    show_default=True,
    help="How much cheaper the best must be to switch.",
)
@click.option(
    "--record", is_flag=True, help="Record the decision (a TopologySelected) when it is a switch."
)
@output_options
@pass_app
def select(
    app: AppContext,
    fleet: str,
    agents: int | None,
    window_s: float,
    margin: float,
    record: bool,
    as_json: bool,
) -> None:
    """Measure signals from the log, score every topology and say which to run.

    One evaluation (a hysteresis window of 1): it switches when the cheapest topology
    beats the one in force by --margin. With --record the switch is recorded
    (conditional on the epoch it saw) and running fleets follow it.
    """
    from aqe.coordination.dispatch import record_topology
    from aqe.coordination.tasks import read_board
    from aqe.coordination.topology import (
        Hysteresis,
        live_agents,
        measure,
        selection_event,
        topology_in_force,
    )
    from aqe.coordination.topology import select as decide

    async def go() -> dict[str, Any]:
        async with open_log(app) as log:
            board = await read_board(log)
            in_force = await topology_in_force(log, fleet)
            count = agents or await live_agents(log) or None
            signals = measure(board, agents=count, window_s=window_s)
            decision = decide(
                signals, in_force.topology, policy=Hysteresis(margin=margin, window=1)
            )
            recorded = None
            if record and decision.switch:
                event = selection_event(fleet, decision)
                result = await record_topology(log, event, expected_epoch=in_force.epoch)
                recorded = result.seq
            return _decision_dict(decision, fleet, recorded)

    row = run(go())
    if as_json:
        print_json(row)
        return
    _render_decision(row)


@topology.command(name="set")
@click.argument("name", type=click.Choice(_TOPOLOGIES))
@_FLEET_OPTION
@click.option("--reason", default="set by an operator", show_default=True, help="Why, in words.")
@json_option
@pass_app
def set_(app: AppContext, name: str, fleet: str, reason: str, as_json: bool) -> None:
    """Record NAME as the fleet's topology (running fleets switch to it)."""
    from aqe.coordination.dispatch import record_topology
    from aqe.coordination.topology import topology_in_force
    from aqe.events import TopologySelected

    async def go() -> dict[str, Any]:
        async with open_log(app) as log:
            in_force = await topology_in_force(log, fleet)
            event = TopologySelected(
                fleet=fleet,
                topology=name,  # type: ignore[arg-type]
                previous=in_force.topology,
                reasons=(reason,),
            )
            result = await record_topology(log, event, expected_epoch=in_force.epoch)
            return {
                "fleet": fleet,
                "topology": name,
                "previous": in_force.topology,
                "epoch": result.seq,
            }

    row = run(go())
    if as_json:
        print_json(row)
        return
    console().print(
        f"fleet {fleet}: {row['previous'] or 'none'} -> [bold]{name}[/bold] (epoch {row['epoch']})"
    )


@topology.command()
@output_options
def table(as_json: bool) -> None:
    """The selector's decisions for a table of representative workloads (no server)."""
    from aqe.coordination.topology import decision_table

    rows = decision_table()
    if as_json:
        print_json(rows)
        return
    emit_table(
        ["workload", *_TOPOLOGIES, "choice", "why"],
        [
            [
                row.workload,
                *(f"{row.scores[t]:.2f}" for t in _TOPOLOGIES),
                styled(row.best, "bold"),
                row.why,
            ]
            for row in rows
        ],
    )
