"""``aqe agents``: the fleet's members and their liveness; register, beat, retire, monitor."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from aqe.app import AppContext, open_log, run
from aqe.cli._context import apply_options, console, json_option, pass_app, print_json
from aqe.cli._table import Cell, Styled, emit_table, output_options, styled

if TYPE_CHECKING:
    from aqe.coordination.membership import (
        AgentRecord,
        FailureDetector,
        Liveness,
        MembershipState,
    )
    from aqe.log.port import AppendResult

_STATUS_STYLE = {"alive": "green", "suspect": "yellow", "dead": "red", "retired": "dim"}


def _detector_options(func: Any) -> Any:
    return apply_options(
        func,
        [
            click.option(
                "--interval",
                "interval_s",
                type=click.FloatRange(min=0, min_open=True),
                default=1.0,
                show_default=True,
                metavar="S",
                help="Heartbeat interval agents keep, in seconds.",
            ),
            click.option(
                "--suspect-after",
                type=click.IntRange(min=1),
                default=3,
                show_default=True,
                metavar="N",
                help="Missed intervals before an agent is suspect.",
            ),
            click.option(
                "--dead-after",
                type=click.IntRange(min=2),
                default=6,
                show_default=True,
                metavar="N",
                help="Missed intervals before an agent is dead.",
            ),
        ],
    )


def _detector(interval_s: float, suspect_after: int, dead_after: int) -> FailureDetector:
    from aqe.coordination.membership import FailureDetector

    return FailureDetector(
        interval_s=interval_s, suspect_after=suspect_after, dead_after=dead_after
    )


def _age(ns: int) -> str:
    seconds = ns / 1e9
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def agent_row(rec: AgentRecord, lv: Liveness) -> dict[str, Any]:
    """One agent as the listing's JSON shows it."""
    return {
        "agent_id": rec.agent_id,
        "role": rec.role,
        "status": lv.status,
        "reason": lv.reason,
        "last_seen_age_s": round(lv.age_ns / 1e9, 3),
        "missed": lv.missed,
        "suspected_by": list(lv.suspected_by),
        "beat": rec.beat,
        "session": rec.session,
        "work_status": rec.status,
        "load": rec.load,
        "capabilities": list(rec.capabilities),
        "host": rec.host,
        "version": rec.version,
        "registered": rec.registered,
        "registered_seq": rec.registered_seq,
        "retired_reason": rec.retired_reason if rec.retired else None,
        "last_seq": rec.last_seq,
    }


def _load_state(app: AppContext) -> MembershipState:
    """The membership projection, after folding what the log has that it lacks."""
    from aqe.app import projections_root
    from aqe.cli._projections import catch_up
    from aqe.coordination.membership import MembershipProjection
    from aqe.projections import SnapshotStore

    projection = MembershipProjection()

    async def go() -> str | None:
        async with open_log(app) as log:
            return await catch_up(log, app, projection, quiet=True)

    skipped = run(go())
    if skipped:
        console(stderr=True).print(f"[dim]not refreshed: {skipped}[/dim]")
    root = projections_root(app)
    return SnapshotStore(projection, root / projection.name).load().state


@click.group(invoke_without_command=True)
@click.option("--all", "show_all", is_flag=True, help="Include retired agents.")
@_detector_options
@output_options
@click.pass_context
def agents(
    ctx: click.Context,
    show_all: bool,
    interval_s: float,
    suspect_after: int,
    dead_after: int,
    as_json: bool,
) -> None:
    """List the fleet's agents with their liveness (alive, suspect, dead, retired).

    An agent is suspect after --suspect-after heartbeat intervals without a beat (or at
    once when a coordinator gossiped a suspicion of its last beat), dead after
    --dead-after. The subcommands drive one agent from the shell.

    \b
    Examples:
      aqe agents --all
      aqe vote keygen gen-1 && aqe agents register gen-1 --role generator --capability python
      aqe agents heartbeat gen-1 --status busy --load 0.5
      aqe agents retire gen-1 --reason "scaled down"
    """
    if ctx.invoked_subcommand is not None:
        return
    from aqe.coordination.membership import liveness

    app = ctx.find_object(AppContext)
    if app is None:  # pragma: no cover - the root group always sets it
        raise RuntimeError("aqe agents needs the root command's AppContext")
    detector = _detector(interval_s, suspect_after, dead_after)
    state = _load_state(app)
    now = time.time_ns()
    rows = []
    for agent_id in sorted(state.agents):
        rec = state.agents[agent_id]
        lv = liveness(rec, now, detector)
        if lv.status == "retired" and not show_all:
            continue
        rows.append(agent_row(rec, lv))
    if as_json:
        print_json(rows)
        return
    _render(rows, show_all, len(state.agents))
    for refused in state.keys.refused:
        console(stderr=True).print(
            f"[red]refused registration of {refused.agent_id} at seq {refused.seq}: "
            f"{refused.reason}[/red] [dim]({refused.detail})[/dim]",
            markup=True,
        )


def _render(rows: list[dict[str, Any]], show_all: bool, known: int) -> None:
    hidden = known - len(rows)
    title = f"{len(rows)} agents" + (f" ({hidden} retired hidden; --all)" if hidden else "")
    cells: list[list[Cell]] = []
    for row in rows:
        style = _STATUS_STYLE[row["status"]]
        parts = [(row["status"], style)]
        if row["reason"] and row["status"] != "alive":
            parts.append((f" ({row['reason']})", "dim"))
        cells.append(
            [
                row["agent_id"],
                row["role"] or styled("unregistered", "dim"),
                Styled(tuple(parts)),
                f"{_age(int(row['last_seen_age_s'] * 1e9))} ago",
                row["beat"],
                f"{row['load']:.2f} {row['work_status']}",
                ", ".join(row["capabilities"]),
            ]
        )
    columns = ["agent", "role", "status", "last beat", "beat", "load", "capabilities"]
    emit_table(columns, cells, title=title)


def _print_ack(what: str, agent_id: str, result: AppendResult, as_json: bool, **extra: Any) -> None:
    if as_json:
        print_json({"agent_id": agent_id, "action": what, **extra, **_ack(result)})
        return
    dup = " (already stored)" if result.duplicate else ""
    detail = "".join(f" {k} {v}" for k, v in extra.items())
    console().print(f"{what} {agent_id}{detail}: {result.stream} seq {result.seq}{dup}")


def _ack(result: AppendResult) -> dict[str, Any]:
    return {
        "stream": result.stream,
        "seq": result.seq,
        "subject": result.subject,
        "event_id": result.event_id,
        "duplicate": result.duplicate,
    }


@agents.command()
@click.argument("agent_id", metavar="ID")
@click.option("--role", required=True, help="What the agent does (generator, flaky-hunter...).")
@click.option(
    "--capability",
    "capabilities",
    multiple=True,
    metavar="C",
    help="Something it can be given to do (repeatable).",
)
@click.option("--host", help="Where it runs [default: this host].")
@click.option(
    "--key",
    "key_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The agent's private key: signs the registration and binds its public key "
    "[default: DATA_DIR/keys/ID.key when it exists].",
)
@click.option(
    "--new-key",
    "new_key_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Rotate: bind this private key's public key instead (--key, the bound one, signs).",
)
@click.option("--no-key", is_flag=True, help="Register without a key (only while none is bound).")
@json_option
@pass_app
def register(
    app: AppContext,
    agent_id: str,
    role: str,
    capabilities: tuple[str, ...],
    host: str | None,
    key_file: Path | None,
    new_key_file: Path | None,
    no_key: bool,
    as_json: bool,
) -> None:
    """Register agent ID (again): role, capabilities and key replace the last ones.

    The first signed registration of ID binds its key (trust on first use, recorded in
    the log); every later one must be signed by the bound key, or readers refuse it.
    """
    import socket

    from aqe import __version__
    from aqe.coordination.agent import append_retrying, session_event_id
    from aqe.coordination.identity import sign_registration
    from aqe.coordination.voting import key_file_stem, load_private_key, public_key_b64
    from aqe.events import AgentRegistered

    if no_key and (key_file or new_key_file):
        raise click.UsageError("--no-key cannot be combined with --key or --new-key")
    default_key = app.settings.data_dir / "keys" / f"{key_file_stem(agent_id)}.key"
    if key_file is None and not no_key and (new_key_file or default_key.exists()):
        key_file = default_key
    signer = load_private_key(key_file) if key_file is not None else None
    bound = load_private_key(new_key_file) if new_key_file is not None else signer
    # A fresh nonce (and message id) per invocation: registering again is a new fact,
    # even within the duplicate window; retries inside this invocation keep the id.
    nonce = uuid.uuid4().hex
    event = AgentRegistered(
        agent_id=agent_id,
        role=role,
        capabilities=capabilities,
        host=host if host is not None else socket.gethostname(),
        version=__version__,
        public_key=public_key_b64(bound) if bound is not None else None,
        nonce=nonce if signer is not None else None,
    )
    if signer is not None:
        event = sign_registration(event, signer)
    event_id = session_event_id("registered", agent_id, nonce)

    async def go() -> AppendResult:
        async with open_log(app) as log:
            return await append_retrying(log, event, event_id=event_id)

    _print_ack("registered", agent_id, run(go()), as_json)


@agents.command()
@click.argument("agent_id", metavar="ID")
@click.option(
    "--status",
    type=click.Choice(["idle", "busy", "draining"]),
    default="idle",
    show_default=True,
    help="What the agent is doing.",
)
@click.option(
    "--load", type=click.FloatRange(min=0), default=0.0, show_default=True, help="Its load."
)
@click.option(
    "--session",
    help="Session id; a new one restarts the beat count at 1 [default: the last beat's, "
    "else 'cli'].",
)
@json_option
@pass_app
def heartbeat(
    app: AppContext,
    agent_id: str,
    status: str,
    load: float,
    session: str | None,
    as_json: bool,
) -> None:
    """Send one heartbeat for agent ID: the next beat of its session."""
    from aqe.coordination.agent import append_retrying
    from aqe.events import AgentHeartbeat
    from aqe.log.subjects import subject_for

    async def go() -> tuple[AppendResult, AgentHeartbeat]:
        async with open_log(app) as log:
            last_env = await log.last(subject_for(AgentHeartbeat(agent_id=agent_id, beat=0)))
            last = last_env.decode() if last_env is not None else None
            sess, beat = session or "cli", 1
            if isinstance(last, AgentHeartbeat) and (session is None or session == last.session):
                sess, beat = last.session or "cli", last.beat + 1
            event = AgentHeartbeat(
                agent_id=agent_id,
                beat=beat,
                session=sess,
                status=status,  # type: ignore[arg-type]  # click.Choice checked it
                load=load,
            )
            return await append_retrying(log, event), event

    result, event = run(go())
    _print_ack("heartbeat", agent_id, result, as_json, beat=event.beat, session=event.session)


@agents.command()
@click.argument("agent_id", metavar="ID")
@click.option("--reason", default="retired by an operator", show_default=True, help="Why.")
@json_option
@pass_app
def retire(app: AppContext, agent_id: str, reason: str, as_json: bool) -> None:
    """Retire agent ID: it leaves the fleet until it registers again."""
    from aqe.coordination.agent import append_retrying, session_event_id
    from aqe.events import AgentRetired

    event_id = session_event_id("retired", agent_id, uuid.uuid4().hex)

    async def go() -> AppendResult:
        async with open_log(app) as log:
            return await append_retrying(
                log, AgentRetired(agent_id=agent_id, reason=reason), event_id=event_id
            )

    _print_ack("retired", agent_id, run(go()), as_json)


@agents.command()
@click.option(
    "--id",
    "coordinator_id",
    help="The coordinator's id in gossiped suspicions [default: monitor-<host>-<pid>].",
)
@click.option(
    "--check-every",
    type=click.FloatRange(min=0, min_open=True),
    metavar="S",
    help="How often timeouts are evaluated [default: half the interval].",
)
@click.option("--no-gossip", is_flag=True, help="Only listen: never append suspicions.")
@click.option(
    "--for",
    "duration_s",
    type=click.FloatRange(min=0),
    metavar="S",
    help="Stop after S seconds [default: run until interrupted].",
)
@_detector_options
@json_option
@pass_app
def monitor(
    app: AppContext,
    coordinator_id: str | None,
    check_every: float | None,
    no_gossip: bool,
    duration_s: float | None,
    interval_s: float,
    suspect_after: int,
    dead_after: int,
    as_json: bool,
) -> None:
    """Follow the fleet as a coordinator: print status changes, gossip suspicions.

    Prints one line (or one JSON object with --json) per status change it observes.
    """
    import asyncio
    import os
    import socket

    import msgspec

    from aqe.coordination.membership import MembershipMonitor, Transition

    detector = _detector(interval_s, suspect_after, dead_after)
    cid = coordinator_id or f"monitor-{socket.gethostname()}-{os.getpid()}"
    out = console()

    def show(tr: Transition) -> None:
        if as_json:
            print_json(msgspec.to_builtins(tr))
            return
        style = _STATUS_STYLE[tr.new]
        why = f" [dim]({tr.reason})[/dim]" if tr.reason else ""
        out.print(f"{tr.agent_id}: {tr.old or 'unseen'} -> [{style}]{tr.new}[/{style}]{why}")

    async def go() -> None:
        async with open_log(app) as log:
            mon = MembershipMonitor(
                log,
                cid,
                detector,
                check_interval_s=check_every,
                gossip=not no_gossip,
                on_transition=show,
            )
            async with mon:
                if duration_s is None:
                    await asyncio.Event().wait()
                else:
                    await asyncio.sleep(duration_s)

    run(go())


@agents.command()
@click.argument("agent_ids", metavar="AGENT...", nargs=-1, required=True)
@click.option(
    "--out",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory for nats-auth.conf and one USER.env per user (mode 0600).",
)
@click.option(
    "--coordinator",
    "coordinators",
    multiple=True,
    metavar="ID",
    help="A coordinator: may also suspect agents, hold leases, dispatch (repeatable).",
)
@click.option("--admin", default="admin", show_default=True, help="The unrestricted user.")
@click.option("--force", is_flag=True, help="Replace existing files (new passwords).")
@json_option
def credentials(
    agent_ids: tuple[str, ...],
    directory: Path,
    coordinators: tuple[str, ...],
    admin: str,
    force: bool,
    as_json: bool,
) -> None:
    """Write NATS users that let each AGENT publish only its own subjects.

    DIR/nats-auth.conf is an `authorization` block to include in the nats-server
    config; DIR/AGENT.env holds AQE_NATS_USER and AQE_NATS_PASSWORD for that agent's
    process. The server then refuses an agent publishing under another agent's
    subjects (Permissions Violation). See ops/README.md.
    """
    from aqe.coordination.credentials import write_credentials

    made = write_credentials(
        directory, agent_ids, coordinators=coordinators, admin=admin, overwrite=force
    )
    if as_json:
        print_json(made)
        return
    out = console()
    out.print(f"server block: {made.auth_file} (include it in the nats-server config)")
    for user, path in made.env_files.items():
        out.print(f"{user}: {path}")
