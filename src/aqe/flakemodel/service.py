"""Training and serving the flakiness model through the log.

* :func:`train_model` embeds and featurises a labelled set, fits a :class:`FlakeModel`,
  puts its artefact in the object store under its digest and appends a
  :class:`FlakeModelTrained` naming the object and the digest.
* :func:`fetch_model` loads a model by id from the object store, via the event that
  names it (the projection or the log), and checks the digest.
* :func:`score` gives one probability and verdict per test; :func:`record_predictions`
  appends them as :class:`FlakinessPredicted` events (ids derived from model digest,
  test and input digest: predicting the same thing twice stores it once).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import msgspec
import numpy as np
from numpy.typing import NDArray

from aqe.errors import ConfigError
from aqe.events.flakemodel import FlakeModelTrained, FlakinessPredicted
from aqe.flakemodel.data import TestCode, text_digest
from aqe.flakemodel.inputs import Blocks, embed_codes, input_matrix
from aqe.flakemodel.model import FlakeModel, HeadConfig
from aqe.log.objectstore import BUCKET, ModelStore
from aqe.search.embed import DIM

if TYPE_CHECKING:
    from aqe.flakemodel.projection import PredictionsState
    from aqe.log.jetstream import JetStreamEventLog
    from aqe.search.embed import Backend, Embedder, Precision

__all__ = [
    "Prediction",
    "embedder_for",
    "fetch_model",
    "file_digest",
    "model_inputs",
    "record_predictions",
    "resolve_model",
    "score",
    "train_model",
]

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Prediction:
    """One scored test."""

    project: str
    test: str
    probability: float
    flaky: bool
    input_digest: str


TRAINING_EMBEDDER: tuple[Backend, Precision] = ("onnx", "int8")
"""The embedding backend models are trained with: aqe's default (ONNX Runtime, int8),
the one the README's numbers were measured with. On the loaded 2-core machine it
embedded FlakeFlagger methods 3.6x faster than torch fp32 (5.1 vs 1.4 per second)."""


def embedder_for(cache_dir: Path | None, version: str | None = None) -> Embedder:
    """An embedder for training (``version`` None) or for a model trained on ``version``.

    Raises:
        ConfigError: ``version`` names a backend this aqe does not have.
    """
    from aqe.search.embed import Embedder

    if version is None:
        backend, precision = TRAINING_EMBEDDER
        return Embedder(cache_dir, backend=backend, precision=precision)
    kind = version.rsplit("/", 1)[-1]
    wanted: tuple[Backend, Precision]
    if kind in ("fp32", "bf16"):
        wanted = ("torch", cast("Precision", kind))
    elif kind in ("onnx-fp32", "onnx-int8"):
        wanted = ("onnx", cast("Precision", kind.removeprefix("onnx-")))
    else:
        raise ConfigError(f"the model's embedder {version!r} is not one this aqe can run")
    embedder = Embedder(cache_dir, backend=wanted[0], precision=wanted[1])
    if embedder.model_version != version:
        embedder.close()
        raise ConfigError(
            f"the model was trained on {version}; this aqe embeds with {embedder.model_version}"
        )
    return embedder


def model_inputs(
    blocks: Blocks,
    codes: Sequence[str],
    embedder: Embedder | None,
    *,
    on_progress: Progress | None = None,
) -> tuple[NDArray[np.float32], list[str]]:
    """The input matrix of ``codes`` and its column names."""
    emb = None
    if blocks.embedding:
        if embedder is None:
            raise ConfigError("this model reads embeddings: an embedder is needed")
        emb = embed_codes(embedder, codes, on_progress=on_progress)
    return input_matrix(blocks, codes, emb), blocks.names(DIM)


async def train_model(
    log: JetStreamEventLog,
    tests: Sequence[TestCode],
    *,
    embedder: Embedder,
    trained_on: str,
    data_digest: str = "",
    config: HeadConfig | None = None,
    on_progress: Progress | None = None,
) -> tuple[FlakeModel, FlakeModelTrained]:
    """Fit on every labelled test, store the artefact, append the trained event.

    The inner folds that choose the threshold hold out whole projects when the set
    has at least ``config.inner_folds`` projects.
    """
    if any(t.flaky is None for t in tests):
        raise ConfigError("training needs a label (`flaky`) on every test")
    config = config or HeadConfig()
    blocks = Blocks(embedding=True, signals=True)
    x, columns = model_inputs(blocks, [t.code for t in tests], embedder, on_progress=on_progress)
    y = np.array([bool(t.flaky) for t in tests])
    started = time.perf_counter()
    model = FlakeModel.fit(
        x,
        y,
        columns=columns,
        embedder=embedder.model_version,
        groups=[t.project for t in tests],
        config=config,
    )
    seconds = time.perf_counter() - started
    data = model.to_bytes()
    digest = await ModelStore(log.connection).put(data)
    event = FlakeModelTrained(
        model_id=model.model_id,
        digest=digest,
        bucket=BUCKET,
        object_name=digest,
        size_bytes=len(data),
        embedder=model.embedder,
        columns=len(columns),
        threshold=model.threshold,
        trained_on=trained_on,
        data_digest=data_digest,
        tests=len(tests),
        flaky=int(y.sum()),
        hyperparameters={k: json.dumps(v) for k, v in msgspec.to_builtins(config).items()},
        train_seconds=round(seconds, 3),
        trained_at=datetime.now(UTC),
    )
    # One model, one event: the digest is the id, so a retrain of the same bytes dedups.
    await log.append_many([_new(event, f"flakemodel-{digest}")])
    return model, event


def _new(event: Any, event_id: str) -> Any:
    from aqe.log.port import NewEvent

    return NewEvent(event=event, event_id=event_id)


def resolve_model(state: PredictionsState, model_id: str) -> FlakeModelTrained:
    """The trained event of ``model_id`` (``latest``, an id, or a digest prefix) from
    the projection's state.

    Raises:
        ConfigError: No such model (or none trained yet).
    """
    if model_id == "latest":
        entry = state.latest_model()
    else:
        entry = state.models.get(model_id) or next(
            (
                m
                for m in state.models.values()
                if m.digest.startswith(model_id) and len(model_id) >= 8
            ),
            None,
        )
    if entry is None:
        known = ", ".join(sorted(state.models)) or "none: `aqe flaky-model train` first"
        raise ConfigError(f"no flakiness model {model_id!r}; known: {known}")
    return FlakeModelTrained(
        model_id=entry.model_id,
        digest=entry.digest,
        bucket=entry.bucket,
        object_name=entry.object_name,
        size_bytes=0,
        embedder=entry.embedder,
        threshold=entry.threshold,
        trained_on=entry.trained_on,
        tests=entry.tests,
        flaky=entry.flaky,
    )


async def fetch_model(log: JetStreamEventLog, trained: FlakeModelTrained) -> FlakeModel:
    """Load the artefact the event names and check it is that model."""
    if trained.bucket != BUCKET:
        raise ConfigError(
            f"model {trained.model_id} lives in bucket {trained.bucket}, not {BUCKET}"
        )
    model = FlakeModel.from_bytes(await ModelStore(log.connection).get(trained.object_name))
    if model.digest != trained.digest:
        raise ConfigError(f"model {trained.model_id}: artefact digest differs from the event's")
    return model


def score(
    model: FlakeModel,
    tests: Sequence[TestCode],
    embedder: Embedder | None,
    *,
    on_progress: Progress | None = None,
) -> list[Prediction]:
    """One prediction per test, in input order.

    Raises:
        ConfigError: The model reads embeddings of another embedding model than
            ``embedder``'s.
    """
    columns = model.columns
    blocks = Blocks(
        embedding=any(c.startswith("emb") for c in columns),
        signals=any(c.startswith("sig_") for c in columns),
        history=any(c.startswith("hist_") for c in columns),
    )
    if blocks.embedding and embedder is not None and embedder.model_version != model.embedder:
        raise ConfigError(
            f"the model was trained on {model.embedder} embeddings; this embedder is "
            f"{embedder.model_version}"
        )
    codes = [t.code for t in tests]
    x, _ = model_inputs(blocks, codes, embedder, on_progress=on_progress)
    probs = model.predict_proba(x)
    return [
        Prediction(
            project=t.project,
            test=t.test,
            probability=round(float(p), 6),
            flaky=bool(p >= model.threshold),
            input_digest=text_digest(t.code),
        )
        for t, p in zip(tests, probs, strict=True)
    ]


async def record_predictions(
    log: JetStreamEventLog,
    model: FlakeModel,
    predictions: Sequence[Prediction],
    *,
    source: str,
) -> int:
    """Append one :class:`FlakinessPredicted` per prediction; how many were new."""
    items = []
    for p in predictions:
        key = f"{model.digest}\n{p.test}\n{p.input_digest}".encode()
        event = FlakinessPredicted(
            test_id=p.test,
            model_id=model.model_id,
            digest=model.digest,
            probability=p.probability,
            flaky=p.flaky,
            threshold=model.threshold,
            input_digest=p.input_digest,
            project=p.project,
            source=source,
        )
        items.append(_new(event, "flakiness-" + hashlib.sha256(key).hexdigest()[:32]))
    results = await log.append_many(items)
    return sum(not r.duplicate for r in results)


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
