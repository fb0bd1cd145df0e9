"""The flaky workflow's two links to the rest of the log: starts from history, quarantine.

* :func:`start_from_history` hands the pure trigger's answer
  (:func:`aqe.workflows._flaky_trigger.flaky_starts`) to the engine's start: an instance
  id that exists already is skipped, so calling it after every fold of the history
  starts each instance once.
* :func:`investigate` runs a set of instances to their end in this process: a workflow
  driver and runner agents (the ones ``aqe agent run --capability pytest`` starts),
  for ``aqe demo`` and one-off checks; a fleet runs the same parts as separate processes.
* :func:`carry_out_quarantines` turns the ``quarantine`` / ``unquarantine`` decisions of
  flaky instances into ``TestCaseQuarantined`` / ``TestCaseUnquarantined`` events, each
  with an id derived from its decision, so running it again appends nothing; the
  history projection and the pytest plugin then enforce the quarantine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import msgspec

from aqe.errors import CommandRejectedError
from aqe.events import WorkflowDecided, WorkflowFinished
from aqe.log.port import EventLog, NewEvent
from aqe.log.retry import append_new
from aqe.projections.history import HistoryState
from aqe.workflows._flaky_trigger import FlakyStart, flaky_starts, quarantine_event
from aqe.workflows._store import fact_of, read_instance, read_instances, start_instance
from aqe.workflows.engine import INSTANCE_SUBJECTS, WORKFLOWS_STREAM
from aqe.workflows.flaky import FLAKY

if TYPE_CHECKING:
    from aqe.coordination.bus import Bus
    from aqe.projections.deadletter import DeadLetterSink

__all__ = [
    "Investigated",
    "carry_out_quarantines",
    "investigate",
    "start_flaky",
    "start_from_history",
    "verdicts",
]


async def start_flaky(log: EventLog, starts: list[FlakyStart], *, started_by: str) -> list[str]:
    """Start each instance in ``starts`` that does not exist yet; returns those started."""
    existing = await read_instances(log)
    started: list[str] = []
    for start in starts:
        if start.instance_id in existing:
            continue
        try:
            await start_instance(
                log,
                FLAKY,
                start.params,
                instance_id=start.instance_id,
                started_by=started_by,
                reasons=start.reasons,
            )
        except CommandRejectedError:
            continue  # started meanwhile by another watcher
        started.append(start.instance_id)
    return started


async def start_from_history(
    log: EventLog, state: HistoryState, base: Mapping[str, str], *, started_by: str = "history"
) -> list[str]:
    """Start the flaky instances the history calls for (see the module docstring)."""
    existing = await read_instances(log)
    active = {
        i.params.get("test_id", "")
        for i in existing.values()
        if i.workflow == FLAKY and not i.finished
    }
    return await start_flaky(log, flaky_starts(state, base, active=active), started_by=started_by)


async def carry_out_quarantines(log: EventLog) -> int:
    """Append the quarantine events flaky instances decided on; returns how many were new."""
    flaky: set[str] = set()
    items: list[NewEvent] = []
    async for env in log.read(WORKFLOWS_STREAM, subjects=INSTANCE_SUBJECTS):
        fact = fact_of(env)
        if fact is None:
            continue
        event = fact.event
        if getattr(event, "workflow", None) == FLAKY:
            flaky.add(getattr(event, "instance_id", ""))
        if isinstance(event, WorkflowDecided) and event.instance_id in flaky:
            mapped = quarantine_event(event)
            if mapped is not None:
                event_id, enforced = mapped
                items.append(NewEvent(event=enforced, event_id=event_id))
    return await append_new(log, items)


class Investigated(msgspec.Struct, frozen=True, kw_only=True):
    """What one instance concluded: its verdict's evidence and how it ended."""

    instance_id: str
    verdict: dict[str, str]
    status: str = ""
    reasons: tuple[str, ...] = ()


async def verdicts(log: EventLog, instance_ids: list[str]) -> list[Investigated]:
    """Each instance's verdict decision and end, as stored."""
    out: list[Investigated] = []
    for instance_id in instance_ids:
        _, facts = await read_instance(log, instance_id)
        verdict: dict[str, str] = {}
        status = ""
        reasons: tuple[str, ...] = ()
        for fact in facts:
            event = fact.event
            if isinstance(event, WorkflowDecided) and event.key == "verdict":
                verdict = dict(event.data)
            elif isinstance(event, WorkflowFinished):
                status, reasons = event.status, event.reasons
        out.append(
            Investigated(instance_id=instance_id, verdict=verdict, status=status, reasons=reasons)
        )
    return out


async def investigate(
    log: EventLog,
    bus: Bus,
    starts: list[FlakyStart],
    *,
    runners: int = 2,
    dead_letters: DeadLetterSink | None = None,
    timeout_s: float = 600.0,
    started_by: str = "",
) -> tuple[list[Investigated], bool]:
    """Start ``starts`` (those not started yet) and drive them to their end here.

    Returns each instance's verdict, and whether anything ran: nothing is started, and
    nothing appended, when every instance has ended already.

    Raises:
        TimeoutError: an instance had not ended after ``timeout_s``.
    """
    from aqe.runners import RunnerConfig
    from aqe.workflows.flaky import FlakyWorkflow
    from aqe.workflows.local import drive_here

    ids = [s.instance_id for s in starts]

    async def open_ones() -> list[str]:
        found = await read_instances(log)
        return [i for i in ids if i not in found or not found[i].finished]

    ran = bool(await open_ones())
    if ran:
        await start_flaky(log, starts, started_by=started_by)
        await drive_here(
            log,
            bus,
            FlakyWorkflow(),
            open_ones,
            capabilities=["pytest"],
            config=RunnerConfig(ack_wait_s=60.0, fetch_timeout_s=0.5),
            runners=runners,
            timeout_s=timeout_s,
            poll_s=0.5,
            what="flaky instances",
            dead_letters=dead_letters,
        )
    return await verdicts(log, ids), ran
