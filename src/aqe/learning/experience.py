"""The experience-buffer projection: policies' recorded decisions, as replay buffers.

Folds ``learning.experience.recorded.v1`` events into one bounded buffer per policy
(the newest ``CAPACITY`` steps, like a replay memory) and materialises them as the
LanceDB table ``transitions`` (policy, cycle, test, state, action, reward, next state,
done). Like every projection it is rebuilt from the log by replay; the same events
give the same buffers, so a policy trained from rebuilt buffers with the same seed is
the same policy.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from aqe.events import Envelope, Event, ExperienceRecorded, PolicyTrained
from aqe.learning.base import Transition

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "CAPACITY",
    "ExperienceProjection",
    "ExperienceState",
    "PolicyBuffer",
    "StoredStep",
    "sample",
    "transitions",
]

CAPACITY = 100_000
"""Steps kept per policy; older ones leave the buffer first."""

_ENCODER = msgspec.json.Encoder(order="sorted")


class StoredStep(msgspec.Struct, array_like=True, kw_only=True):
    """One decision in a buffer (stored as a JSON array to keep snapshots compact)."""

    seq: int
    cycle: str
    test_id: str
    state: list[float]
    action: float
    reward: float
    next_state: list[float]
    done: bool


class PolicyBuffer(msgspec.Struct, kw_only=True):
    """A policy's experience and what is known about it."""

    algorithm: str
    feature_version: int
    cycles: int = 0
    recorded: int = 0
    """Steps ever recorded (the buffer keeps the newest ``CAPACITY``)."""
    steps: list[StoredStep] = msgspec.field(default_factory=list)
    trained: list[dict[str, Any]] = msgspec.field(default_factory=list)
    """``learning.policy.trained.v1`` facts about this policy, oldest first."""


class ExperienceState(msgspec.Struct, kw_only=True):
    """Buffers by policy id."""

    policies: dict[str, PolicyBuffer] = msgspec.field(default_factory=dict)


class ExperienceProjection:
    """Folds ``AQE_LEARNING`` into experience buffers."""

    name: str = "experience"
    version: int = 1
    streams: tuple[str, ...] = ("AQE_LEARNING",)

    def __init__(self) -> None:
        self._decoder = msgspec.json.Decoder(ExperienceState)

    def initial(self) -> ExperienceState:
        """No policies."""
        return ExperienceState()

    def apply(self, state: ExperienceState, envelope: Envelope, event: Event) -> ExperienceState:
        """Append a cycle's steps to its policy's buffer; record trained policies."""
        if isinstance(event, ExperienceRecorded):
            buffer = state.policies.get(event.policy_id)
            if buffer is None:
                buffer = state.policies[event.policy_id] = PolicyBuffer(
                    algorithm=event.algorithm, feature_version=event.feature_version
                )
            elif buffer.feature_version != event.feature_version:
                raise ValueError(
                    f"policy {event.policy_id} recorded feature version "
                    f"{event.feature_version} after {buffer.feature_version}"
                )
            buffer.cycles += 1
            buffer.recorded += len(event.steps)
            buffer.steps.extend(
                StoredStep(
                    seq=envelope.seq,
                    cycle=event.cycle,
                    test_id=step.test_id,
                    state=list(step.state),
                    action=step.action,
                    reward=step.reward,
                    next_state=list(step.next_state or step.state),
                    done=step.done,
                )
                for step in event.steps
            )
            del buffer.steps[:-CAPACITY]
        elif isinstance(event, PolicyTrained):
            buffer = state.policies.get(event.policy_id)
            if buffer is None:
                buffer = state.policies[event.policy_id] = PolicyBuffer(
                    algorithm=event.algorithm, feature_version=event.feature_version
                )
            buffer.trained.append(msgspec.to_builtins(event))
        return state

    def encode(self, state: ExperienceState) -> bytes:
        """Canonical JSON (sorted keys)."""
        return _ENCODER.encode(state)

    def decode(self, data: bytes) -> ExperienceState:
        """Parse what :meth:`encode` wrote."""
        return self._decoder.decode(data)

    def materialize(
        self, state: ExperienceState, directory: Path, checkpoints: dict[str, int]
    ) -> None:
        """Write the ``transitions`` LanceDB table beside the snapshot."""
        from aqe.projections.tables import write_tables

        rows = [
            {"policy_id": policy_id, **msgspec.to_builtins(_as_dict(step))}
            for policy_id in sorted(state.policies)
            for step in state.policies[policy_id].steps
        ]
        write_tables(directory, {"transitions": (rows, _schema())}, checkpoints)


def _as_dict(step: StoredStep) -> dict[str, Any]:
    return {f: getattr(step, f) for f in step.__struct_fields__}


def _schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            ("policy_id", pa.string()),
            ("seq", pa.int64()),
            ("cycle", pa.string()),
            ("test_id", pa.string()),
            ("state", pa.list_(pa.float32())),
            ("action", pa.float64()),
            ("reward", pa.float64()),
            ("next_state", pa.list_(pa.float32())),
            ("done", pa.bool_()),
        ]
    )


def transitions(state: ExperienceState, policy_id: str) -> list[Transition]:
    """A policy's buffer in recording order, as :class:`Transition` values.

    Raises:
        KeyError: no experience for that policy.
    """
    buffer = state.policies[policy_id]
    return [
        Transition(
            cycle=s.cycle,
            test_id=s.test_id,
            policy=policy_id,
            state=tuple(s.state),
            action=s.action,
            reward=s.reward,
            next_state=tuple(s.next_state),
            done=s.done,
        )
        for s in buffer.steps
    ]


def sample(state: ExperienceState, policy_id: str, n: int, *, seed: int = 0) -> list[Transition]:
    """``n`` transitions drawn uniformly without replacement (all when fewer), seeded."""
    import numpy as np

    everything = transitions(state, policy_id)
    if n >= len(everything):
        return everything
    picks = np.random.default_rng(seed).choice(len(everything), size=n, replace=False)
    return [everything[i] for i in sorted(picks.tolist())]
