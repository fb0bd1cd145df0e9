"""``aqe leader status|campaign``: who leads a group, and a process that campaigns for it."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from aqe.app import AppContext, open_log, run
from aqe.cli._context import console, json_option, pass_app, print_json

if TYPE_CHECKING:
    from aqe.coordination.lease import LeaderElection, Lease
    from aqe.log.port import EventLog

__all__ = ["leader"]


@click.group()
def leader() -> None:
    """Leader election with fencing tokens: leases in the AQE_COORD stream.

    A group's leader holds a lease that it renews; its term (the fencing token) is the
    stream sequence of its LeaseAcquired. Its writes are conditional on that lease, so
    the server rejects a deposed leader's late writes.
    """


def _lease_view(group: str, lease: Lease | None, now_ns: int) -> dict[str, Any]:
    if lease is None:
        return {"group": group, "state": "none", "holder": None, "term": None}
    if lease.released:
        state = "released"
    elif lease.expired(now_ns):
        state = "expired"
    else:
        state = "held"
    return {
        "group": group,
        "state": state,
        "holder": lease.holder,
        "term": lease.term,
        "last_seq": lease.last_seq,
        "lease_ms": lease.lease_ms,
        "renewed_at_ns": lease.renewed_at_ns,
        "age_ms": round((now_ns - lease.renewed_at_ns) / 1e6, 1),
        "expires_in_ms": None if lease.released else round((lease.expires_at_ns - now_ns) / 1e6, 1),
    }


@leader.command()
@click.argument("group")
@json_option
@pass_app
def status(app: AppContext, group: str, as_json: bool) -> None:
    """Show GROUP's lease: holder, term (fencing token), age and time to expiry.

    State is held, expired (free for the next candidate), released or none.
    """
    from aqe.coordination.lease import read_lease

    async def go() -> Lease | None:
        async with open_log(app) as log:
            return await read_lease(log, group)

    view = _lease_view(group, run(go()), time.time_ns())
    if as_json:
        print_json(view)
        return
    out = console()
    if view["state"] == "none":
        out.print(f"[bold]{group}[/bold]: no lease yet (no candidate has campaigned)")
        return
    line = (
        f"[bold]{group}[/bold]: {view['state']}  holder {view['holder']}  term {view['term']}"
        f"  age {view['age_ms']:.0f} ms"
    )
    if view["state"] == "held":
        line += f"  expires in {view['expires_in_ms']:.0f} ms"
    out.print(line)


def _emitter(as_json: bool, group: str, candidate: str) -> Any:
    def emit(what: str, **fields: Any) -> None:
        if as_json:
            print_json(
                {"event": what, "group": group, "id": candidate, "at_ns": time.time_ns(), **fields}
            )
            return
        shown = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        sys.stdout.write(f"{what} {shown}".rstrip() + "\n")
        sys.stdout.flush()

    return emit


async def _write_loop(election: LeaderElection, every_s: float, emit: Any) -> None:
    """Append a fenced write every ``every_s`` while a term is held.

    It deliberately does not check the local lease deadline (``is_leader``): a leader
    that was paused wakes up believing it still leads, and the server must reject it.
    """
    from aqe.errors import DeposedError, LogUnavailableError
    from aqe.events.coordination import LeaderCheckpointed

    count = 0
    while True:
        await asyncio.sleep(every_s)
        lease = election.lease
        if lease is None:
            continue
        count += 1
        event = LeaderCheckpointed(
            group=election.group,
            holder=election.candidate,
            term=lease.term,
            n=count,
            note=f"fenced write {count} of term {lease.term}",
        )
        try:
            await election.append_fenced(event)
        except DeposedError as exc:
            emit("late-write-rejected", term=exc.term, write=count, actual=exc.actual)
        except LogUnavailableError as exc:
            emit("write-failed", term=lease.term, write=count, reason=str(exc))


async def _campaign(
    log: EventLog,
    group: str,
    candidate: str,
    *,
    lease_ms: int,
    renew_every_ms: int | None,
    write_every_ms: int | None,
    for_s: float | None,
    emit: Any,
) -> None:
    from aqe.coordination.lease import LeaderElection, read_lease
    from aqe.errors import DeposedError

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if for_s is not None:
        loop.call_later(for_s, stop.set)
    election = LeaderElection(
        log, group, candidate, lease_ms=lease_ms, renew_every_ms=renew_every_ms
    )
    terms: list[int] = []

    def elected(lease: Lease) -> None:
        terms.append(lease.term)
        emit("elected", term=lease.term)

    def deposed(error: DeposedError) -> None:
        emit("deposed", term=error.term, actual=error.actual)

    emit("campaigning", lease_ms=lease_ms)
    writer = (
        asyncio.create_task(_write_loop(election, write_every_ms / 1000, emit))
        if write_every_ms
        else None
    )
    try:
        await election.run(stop, on_elected=elected, on_deposed=deposed)
    finally:
        if writer is not None:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    final = await read_lease(log, group)
    if final is not None and final.released and final.holder == candidate and final.term in terms:
        emit("released", term=final.term)
    emit("stopped")


@leader.command()
@click.argument("group")
@click.option("--id", "candidate", required=True, help="This candidate's id (unique per process).")
@click.option(
    "--lease-ms",
    type=click.IntRange(min=10),
    default=2000,
    show_default=True,
    help="Lease length; a dead leader is replaced after about this long.",
)
@click.option(
    "--renew-every-ms",
    type=click.IntRange(min=1),
    help="Renewal period while leading [default: a third of the lease].",
)
@click.option(
    "--write-every-ms",
    type=click.IntRange(min=1),
    help="While holding a term, append a fenced write this often (a LeaderCheckpointed "
    "event) to show that the server rejects a deposed "
    "leader's late writes. For demonstrations and tests.",
)
@click.option(
    "--for-s",
    type=click.FloatRange(min=0),
    help="Step down and exit after this many seconds [default: run until SIGTERM/SIGINT].",
)
@json_option
@pass_app
def campaign(
    app: AppContext,
    group: str,
    candidate: str,
    lease_ms: int,
    renew_every_ms: int | None,
    write_every_ms: int | None,
    for_s: float | None,
    as_json: bool,
) -> None:
    """Campaign for GROUP's leadership, hold it, and campaign again when deposed.

    Prints one line per change of state: campaigning, elected term=N, deposed term=N,
    late-write-rejected term=N (a fenced write the server refused because the term was
    over), write-failed (the log was unavailable), released term=N, stopped.
    With --json each line is a JSON object with an "event" field. SIGTERM or SIGINT
    releases the lease and exits 0.
    """
    if renew_every_ms is not None and renew_every_ms >= lease_ms:
        raise click.BadParameter(
            f"must be shorter than --lease-ms ({lease_ms})", param_hint="--renew-every-ms"
        )
    emit = _emitter(as_json, group, candidate)

    async def go() -> None:
        async with open_log(app) as log:
            await _campaign(
                log,
                group,
                candidate,
                lease_ms=lease_ms,
                renew_every_ms=renew_every_ms,
                write_every_ms=write_every_ms,
                for_s=for_s,
                emit=emit,
            )

    run(go())
