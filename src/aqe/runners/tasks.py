"""Runner tasks: what goes on a capability's work queue, and how it gets there.

A runner task is a :class:`~aqe.events.TaskSubmitted` whose ``kind`` is a capability
(``pytest``, ``bench``, ``noop``...), whose ``payload`` is a :class:`RunnerTask` as JSON
and whose ``queued`` flag keeps topology dispatchers away from it. It is appended in one
atomic batch with a :class:`~aqe.events.TaskQueued` on ``aqe.coord.work.<capability>.queued``,
conditional on the task's subjects being empty: the task and its place in the queue
land together or not at all, and a task id is submitted once.

The work queue of a capability is a durable pull consumer on ``AQE_COORD`` filtered to
that subject (:func:`queue_name`, explicit acks): every runner of the capability binds
to it and the server hands each queued message to one of them. The stream keeps every
message (limits retention), so the log stays the whole record of what was asked for,
and the queue is only a cursor over it: deleting a queue loses nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import msgspec

from aqe.coordination.bus import Bus
from aqe.coordination.tasks import COORD_STREAM, task_filter
from aqe.errors import CommandRejectedError, ConcurrencyError, ConfigError
from aqe.events import TaskQueued, TaskSubmitted
from aqe.log.port import BatchResult, EventLog, NewEvent
from aqe.log.retry import while_unavailable
from aqe.log.subjects import subject_for
from aqe.sandbox import SandboxSpec

__all__ = [
    "NOOP",
    "RunnerTask",
    "check_capability",
    "ensure_queue",
    "queue_name",
    "queue_subject",
    "runner_payload",
    "runner_task",
    "submit_runner_task",
]

NOOP = "noop"
"""A capability every runner has: the task runs nothing (measures the queue itself)."""

_CAPABILITY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class RunnerTask(msgspec.Struct, frozen=True, kw_only=True):
    """What a runner runs: a command in a sandbox made from ``spec``.

    ``ingest`` sends the JUnit XML artefacts through the same path as ``aqe ingest``
    (one run per attempt, ``run_id`` ``<task>-a<attempt>``), so history sees every rerun.
    """

    spec: SandboxSpec
    argv: tuple[str, ...]
    workdir: str = "."
    ingest: bool = True
    commit: str | None = None
    branch: str | None = None


def check_capability(capability: str) -> str:
    """The capability, checked to be a queue-safe name.

    Raises:
        ConfigError: not lower-case letters, digits, ``_`` and ``-`` (at most 64).
    """
    if not _CAPABILITY.match(capability):
        raise ConfigError(
            f"capability {capability!r}: use lower-case letters, digits, '_' and '-' "
            "(at most 64, starting with a letter or digit)"
        )
    return capability


def queue_subject(capability: str) -> str:
    """The subject a capability's queue entries are appended to."""
    return f"aqe.coord.work.{check_capability(capability)}.queued"


def queue_name(capability: str) -> str:
    """The durable consumer that is the capability's work queue."""
    return f"aqe-work-{check_capability(capability)}"


def runner_payload(
    spec: SandboxSpec, argv: Sequence[str], *, workdir: str = ".", ingest: bool = True
) -> str:
    """A :class:`RunnerTask` as the JSON a task's ``payload`` carries."""
    task = RunnerTask(spec=spec, argv=tuple(argv), workdir=workdir, ingest=ingest)
    return msgspec.json.encode(task).decode()


def runner_task(payload: str) -> RunnerTask:
    """Decode a task's payload.

    Raises:
        ConfigError: the payload is not a valid :class:`RunnerTask`.
    """
    try:
        return msgspec.json.decode(payload, type=RunnerTask)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ConfigError(f"runner task payload: {exc}") from exc


async def submit_runner_task(
    log: EventLog,
    task_id: str,
    capability: str,
    *,
    payload: str = "",
    params: Mapping[str, str] | None = None,
    complexity: float = 1.0,
    submitted_by: str = "",
) -> BatchResult:
    """Submit a task and queue it for ``capability``, atomically, once per task id.

    The submission's ``Nats-Msg-Id`` is its content hash, so a retry is deduplicated,
    and the batch is conditional on the task's subjects being empty.

    Raises:
        CommandRejectedError: a task with this id exists already.
        LogUnavailableError: the log stayed unreachable through the retries.
    """
    submitted = TaskSubmitted(
        task_id=task_id,
        kind=check_capability(capability),
        complexity=complexity,
        params=dict(params or {}),
        submitted_by=submitted_by,
        payload=payload,
        queued=True,
    )
    queued = TaskQueued(capability=capability, task_id=task_id)
    items = [
        NewEvent(event=submitted, expected_last_seq=0, expected_subject=task_filter(task_id)),
        NewEvent(event=queued, event_id=f"queued-{submitted.default_id()}"),
    ]
    try:
        return await while_unavailable(lambda: log.append_batch(items))
    except ConcurrencyError as exc:
        # The same submission stored before (a retry, a restarted workflow) is success.
        stored = await while_unavailable(lambda: log.last(subject_for(submitted)))
        if stored is not None and stored.event_id == submitted.default_id():
            return BatchResult(
                stream=stored.stream,
                first_seq=stored.seq,
                last_seq=stored.seq,
                count=len(items),
                chunks=1,
                duplicates=len(items),
            )
        raise CommandRejectedError(f"task {task_id} exists already") from exc


async def ensure_queue(
    bus: Bus, capability: str, *, ack_wait_s: float = 30.0, start_seq: int = 1
) -> str:
    """Create the capability's work queue if it is missing; returns its name.

    A durable consumer that never expires, from the start of the stream: a task queued
    before any runner of the capability started is still handed out.
    """
    name = queue_name(capability)
    await bus.create_work_queue(
        COORD_STREAM,
        name,
        (queue_subject(capability),),
        start_seq=start_seq,
        ack_wait_s=ack_wait_s,
        expires_s=None,
    )
    return name
