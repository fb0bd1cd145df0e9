"""The perf-confirms projection: which confirm instances exist, and their verdicts.

A pure fold of ``AQE_WORKFLOWS`` that keeps only what the perf pipeline asks of it
every round, so ``aqe perf watch`` resumes it from its checkpoint
(:func:`aqe.app.caught_up_state`) instead of reading every workflow event again:

* a :class:`~aqe.events.WorkflowStarted` of a ``perf-confirm-…`` instance: the instance
  exists (a confirmation is never started twice); its
  :class:`~aqe.events.WorkflowFinished` ends it (what ``confirm_here`` waits for);
* a :class:`~aqe.events.WorkflowDecided` ``verdict`` of the instance named after the
  change in its data (``perf-confirm-<change id>``): the change's verdict, the first one
  kept, to be carried into ``AQE_PERF`` as a ``PerfChangeVerified``.

Other workflows' events change nothing. :func:`read_confirms` folds the stream from
the start, for callers without a stored projection.
"""

from __future__ import annotations

import msgspec

from aqe.errors import EventDecodeError
from aqe.events import Envelope, Event, WorkflowDecided, WorkflowFinished, WorkflowStarted
from aqe.log.port import EventLog
from aqe.workflows.engine import INSTANCE_SUBJECTS, WORKFLOWS_STREAM
from aqe.workflows.perf import PERF_CONFIRM

__all__ = [
    "ConfirmsProjection",
    "ConfirmsState",
    "Verdict",
    "confirm_instance_id",
    "read_confirms",
]

_ENCODER = msgspec.json.Encoder(order="sorted")
_PREFIX = f"{PERF_CONFIRM}-"


def confirm_instance_id(change_id: str) -> str:
    """The confirm workflow instance of a change."""
    return f"{_PREFIX}{change_id}"


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    """A confirm instance's verdict on its change, as decided."""

    instance_id: str
    decision: str
    reasons: tuple[str, ...] = ()
    data: dict[str, str] = msgspec.field(default_factory=dict)


class ConfirmsState(msgspec.Struct, kw_only=True):
    """Confirm instances (id -> end status, ``""`` while running) and verdicts by change."""

    instances: dict[str, str] = msgspec.field(default_factory=dict)
    verdicts: dict[str, Verdict] = msgspec.field(default_factory=dict)

    def running(self, instance_id: str) -> bool:
        """Whether the instance was started and has not finished."""
        return self.instances.get(instance_id) == ""


class ConfirmsProjection:
    """The fold described in the module docstring."""

    name = "perf-confirms"
    streams: tuple[str, ...] = (WORKFLOWS_STREAM,)
    version = 1

    def initial(self) -> ConfirmsState:
        """No instances, no verdicts."""
        return ConfirmsState()

    def apply(self, state: ConfirmsState, envelope: Envelope, event: Event) -> ConfirmsState:
        """Fold one workflow event (others' instances are ignored)."""
        if isinstance(event, WorkflowStarted):
            if event.instance_id.startswith(_PREFIX):
                state.instances.setdefault(event.instance_id, "")
        elif isinstance(event, WorkflowFinished):
            if state.instances.get(event.instance_id) == "":
                state.instances[event.instance_id] = event.status
        elif isinstance(event, WorkflowDecided) and event.key == "verdict":
            change_id = event.data.get("change_id", "")
            if change_id and event.instance_id == confirm_instance_id(change_id):
                state.verdicts.setdefault(
                    change_id,
                    Verdict(
                        instance_id=event.instance_id,
                        decision=event.decision,
                        reasons=event.reasons,
                        data=dict(event.data),
                    ),
                )
        return state

    def encode(self, state: ConfirmsState) -> bytes:
        """Canonical JSON (sorted keys)."""
        return _ENCODER.encode(state)

    def decode(self, data: bytes) -> ConfirmsState:
        """Invert :meth:`encode`."""
        return msgspec.json.decode(data, type=ConfirmsState)


async def read_confirms(log: EventLog) -> ConfirmsState:
    """Fold ``AQE_WORKFLOWS`` from the start (undecodable events are skipped here; the
    projection runner parks them)."""
    projection = ConfirmsProjection()
    state = projection.initial()
    async for env in log.read(WORKFLOWS_STREAM, subjects=INSTANCE_SUBJECTS):
        try:
            event = env.decode()
        except EventDecodeError:
            continue
        state = projection.apply(state, env, event)
    return state
