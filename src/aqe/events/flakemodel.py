"""Events of the flakiness model: a model was trained; a test's flakiness was predicted.

Both live in the learning domain (stream AQE_LEARNING). The model's weights are not in
the event: they are an object in the JetStream object store, named by their sha256
digest, and the event names the bucket, the object and the digest.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

import msgspec

from aqe.events._base import Event

__all__ = ["FlakeModelTrained", "FlakinessPredicted"]


class FlakeModelTrained(Event, frozen=True, kw_only=True, tag="learning.flakemodel.trained.v1"):
    """A flakiness model was trained and its artefact stored by digest."""

    id_field: ClassVar[str] = "model_id"

    model_id: str
    """``fm-`` + the first 16 hex digits of ``digest``."""
    digest: str
    """sha256 of the artefact bytes, hex."""
    bucket: str
    """The JetStream object store holding the artefact."""
    object_name: str
    """The artefact's name in the bucket (the digest)."""
    size_bytes: int
    embedder: str = ""
    """The embedding model version its inputs come from (empty: no embedding block)."""
    columns: int = 0
    threshold: float = 0.5
    trained_on: str = ""
    """The data set it learned from (path, or ``log``)."""
    data_digest: str = ""
    """sha256 of the training file's bytes."""
    tests: int = 0
    flaky: int = 0
    hyperparameters: dict[str, str] = msgspec.field(default_factory=dict)
    """Hyperparameters as strings (JSON-encoded values)."""
    train_seconds: float = 0.0
    trained_at: datetime | None = None


class FlakinessPredicted(Event, frozen=True, kw_only=True, tag="learning.flakiness.predicted.v1"):
    """A model scored one test's code: the probability that the test is flaky."""

    id_field: ClassVar[str] = "test_id"

    test_id: str
    model_id: str
    digest: str
    """The model artefact's digest."""
    probability: float
    flaky: bool
    """``probability >= threshold`` of that model."""
    threshold: float
    input_digest: str
    """sha256 of the code that was scored."""
    project: str = ""
    source: str = ""
    """Where the code was read (a file, or the input data set)."""
