"""Reading and writing workflow instances in the log (what the CLI and the driver share)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

from aqe.errors import CommandRejectedError, ConcurrencyError, EventDecodeError
from aqe.events import Envelope, WorkflowCancelled, WorkflowStarted
from aqe.log.port import AppendResult, EventLog
from aqe.log.retry import append_conditional, while_unavailable
from aqe.workflows.engine import (
    INSTANCE_SUBJECTS,
    WORKFLOWS_STREAM,
    Fact,
    Instance,
    apply_instance,
    instance_filter,
)

__all__ = [
    "cancel_instance",
    "fact_of",
    "new_instance_id",
    "read_instance",
    "read_instances",
    "start_instance",
]


def new_instance_id(workflow: str) -> str:
    """A fresh instance id: the workflow's name and a random suffix."""
    return f"{workflow}-{uuid.uuid4().hex[:12]}"


def fact_of(env: Envelope) -> Fact | None:
    """The envelope as a :class:`Fact` (None when it does not decode)."""
    try:
        event = env.decode()
    except EventDecodeError:
        return None
    return Fact(event=event, seq=env.seq, recorded_at_ns=env.recorded_at_ns)


async def read_instance(log: EventLog, instance_id: str) -> tuple[Instance | None, list[Fact]]:
    """One instance's driver view and its facts, folded from its subjects."""
    instance: Instance | None = None
    facts: list[Fact] = []
    async for env in log.read(WORKFLOWS_STREAM, subjects=instance_filter(instance_id)):
        fact = fact_of(env)
        if fact is not None:
            facts.append(fact)
            instance = apply_instance(instance, fact)
    return instance, facts


async def read_instances(log: EventLog) -> dict[str, Instance]:
    """Every instance in the log, folded (started order)."""
    out: dict[str, Instance] = {}
    async for env in log.read(WORKFLOWS_STREAM, subjects=INSTANCE_SUBJECTS):
        fact = fact_of(env)
        instance_id = getattr(fact.event, "instance_id", None) if fact else None
        if fact is None or not isinstance(instance_id, str):
            continue
        folded = apply_instance(out.get(instance_id), fact)
        if folded is not None:
            out[instance_id] = folded
    return out


async def start_instance(
    log: EventLog,
    workflow: str,
    params: Mapping[str, str],
    *,
    instance_id: str | None = None,
    started_by: str = "",
    reasons: Sequence[str] = (),
) -> tuple[str, AppendResult]:
    """Start an instance (its subjects must be empty); returns its id and where it landed.

    Raises:
        CommandRejectedError: an instance with this id exists.
    """
    instance_id = instance_id or new_instance_id(workflow)
    event = WorkflowStarted(
        instance_id=instance_id,
        workflow=workflow,
        params=dict(params),
        started_by=started_by,
        reasons=tuple(reasons),
    )
    try:
        stored = await append_conditional(
            log,
            event,
            event_id=f"started-{event.default_id()}",
            expected_last_seq=0,
            expected_subject=instance_filter(instance_id),
        )
    except ConcurrencyError as exc:
        raise CommandRejectedError(f"workflow instance {instance_id} exists already") from exc
    return instance_id, stored


async def cancel_instance(
    log: EventLog, instance_id: str, *, reason: str = "", by: str = ""
) -> AppendResult:
    """Ask the driver to end an instance as ``cancelled``.

    Raises:
        CommandRejectedError: no such instance, or it has finished.
    """
    instance, _facts = await read_instance(log, instance_id)
    if instance is None:
        raise CommandRejectedError(f"no workflow instance {instance_id}")
    if instance.finished:
        raise CommandRejectedError(f"workflow instance {instance_id} is {instance.status} already")
    event = WorkflowCancelled(instance_id=instance_id, reason=reason, by=by)
    return await while_unavailable(
        lambda: log.append(event, event_id=f"cancelled-{instance_id}-{instance.last_seq}")
    )
