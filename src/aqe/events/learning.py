"""Events of the learning domain: experience of prioritisation policies, trained policies."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

import msgspec

from aqe.events._base import Event

__all__ = ["ExperienceRecorded", "ExperienceStep", "PolicyTrained"]


class ExperienceStep(msgspec.Struct, frozen=True, kw_only=True):
    """One decision of a policy: a test's state, the priority chosen, its reward."""

    test_id: str
    state: tuple[float, ...]
    action: float
    reward: float
    next_state: tuple[float, ...] = ()
    """Empty when equal to ``state`` (one-step episodes, the usual case)."""
    done: bool = True


class ExperienceRecorded(Event, frozen=True, kw_only=True, tag="learning.experience.recorded.v1"):
    """The decisions a policy made ranking one CI cycle, with their rewards."""

    id_field: ClassVar[str] = "policy_id"

    policy_id: str
    algorithm: str
    cycle: str
    feature_version: int
    steps: tuple[ExperienceStep, ...]


class PolicyTrained(Event, frozen=True, kw_only=True, tag="learning.policy.trained.v1"):
    """A policy artefact was trained and saved."""

    id_field: ClassVar[str] = "policy_id"

    policy_id: str
    algorithm: str
    seed: int
    feature_version: int
    hyperparameters: dict[str, str] = msgspec.field(default_factory=dict)
    """Hyperparameters as strings (JSON-encoded values)."""
    trained_on: str = ""
    """``log`` or the data set path."""
    trained_until_seq: int = 0
    """The AQE_TESTS sequence the history it learned from ends at (0 for a data set)."""
    cycles: int = 0
    mean_apfd: float | None = None
    mean_napfd: float | None = None
    artefact: str = ""
    """Where the parameters are: ``<bucket>/<digest>`` (older facts: a directory under
    the data dir)."""
    trained_at: datetime | None = None
    bucket: str = ""
    """The JetStream object store bucket holding the packed parameters."""
    digest: str = ""
    """The object's name there: the sha256 of the packed parameters (empty for facts
    from before policies were stored in the log)."""
