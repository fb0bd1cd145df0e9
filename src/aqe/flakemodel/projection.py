"""The flaky-predictions projection: trained flakiness models and the latest prediction per test.

A pure fold of AQE_LEARNING: a :class:`~aqe.events.flakemodel.FlakeModelTrained`
adds a model (in log order, so "latest" is well defined), a
:class:`~aqe.events.flakemodel.FlakinessPredicted` replaces the test's prediction.
Other learning events pass through.
"""

from __future__ import annotations

import msgspec

from aqe.events import Envelope, Event
from aqe.events.flakemodel import FlakeModelTrained, FlakinessPredicted

__all__ = ["ModelEntry", "PredictionEntry", "PredictionsProjection", "PredictionsState"]

_ENCODER = msgspec.json.Encoder(order="sorted")


class ModelEntry(msgspec.Struct, kw_only=True):
    """A trained model as the log tells it."""

    model_id: str
    digest: str
    bucket: str
    object_name: str
    threshold: float
    embedder: str
    trained_on: str
    tests: int
    flaky: int
    seq: int


class PredictionEntry(msgspec.Struct, kw_only=True):
    """The newest prediction for one test."""

    model_id: str
    digest: str
    probability: float
    flaky: bool
    threshold: float
    input_digest: str
    project: str
    source: str
    seq: int


class PredictionsState(msgspec.Struct, kw_only=True):
    """Models by id (with their log order) and the newest prediction per test."""

    models: dict[str, ModelEntry] = msgspec.field(default_factory=dict)
    predictions: dict[str, PredictionEntry] = msgspec.field(default_factory=dict)

    def latest_model(self) -> ModelEntry | None:
        """The model trained last in the log, if any."""
        return max(self.models.values(), key=lambda m: m.seq, default=None)


class PredictionsProjection:
    """Folds AQE_LEARNING into a :class:`PredictionsState`."""

    name = "flaky-predictions"
    version = 1
    streams: tuple[str, ...] = ("AQE_LEARNING",)

    def __init__(self) -> None:
        self._decoder = msgspec.json.Decoder(PredictionsState)

    def initial(self) -> PredictionsState:
        """No models, no predictions."""
        return PredictionsState()

    def apply(self, state: PredictionsState, envelope: Envelope, event: Event) -> PredictionsState:
        """Record a trained model or a test's newest prediction."""
        if isinstance(event, FlakeModelTrained):
            state.models[event.model_id] = ModelEntry(
                model_id=event.model_id,
                digest=event.digest,
                bucket=event.bucket,
                object_name=event.object_name,
                threshold=event.threshold,
                embedder=event.embedder,
                trained_on=event.trained_on,
                tests=event.tests,
                flaky=event.flaky,
                seq=envelope.seq,
            )
        elif isinstance(event, FlakinessPredicted):
            state.predictions[event.test_id] = PredictionEntry(
                model_id=event.model_id,
                digest=event.digest,
                probability=event.probability,
                flaky=event.flaky,
                threshold=event.threshold,
                input_digest=event.input_digest,
                project=event.project,
                source=event.source,
                seq=envelope.seq,
            )
        return state

    def encode(self, state: PredictionsState) -> bytes:
        """Canonical JSON (sorted keys)."""
        return _ENCODER.encode(state)

    def decode(self, data: bytes) -> PredictionsState:
        """Parse what :meth:`encode` wrote."""
        return self._decoder.decode(data)
