"""The flakiness model trained and served through the log, with real parts only.

A nats-server per test (events and the object store), the MiniLM model from its
wheel: train -> artefact in the object store by digest + a model-trained event ->
predictions as events -> the projection; then the projection is rebuilt from zero and
the model fetched again by the digest the log names: the same predictions.
"""

from __future__ import annotations

from pathlib import Path

import nats
import numpy as np
import pytest

from aqe.errors import ConfigError
from aqe.flakemodel.data import TestCode, load_tests
from aqe.flakemodel.model import FlakeModel, HeadConfig
from aqe.flakemodel.projection import PredictionsProjection, PredictionsState
from aqe.flakemodel.service import (
    embedder_for,
    fetch_model,
    record_predictions,
    resolve_model,
    score,
    train_model,
)
from aqe.log import load_stream_specs
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.log.objectstore import ModelStore
from aqe.projections import MemoryDeadLetters, ProjectionRunner, SnapshotStore, rebuild
from support.flakecode import write_tiny_set

pytestmark = [pytest.mark.nats, pytest.mark.timeout(300)]

SMALL = HeadConfig(c=1.0, seed=2)  # the default linear head (no torch import)


async def _fold(log: JetStreamEventLog, root: Path) -> PredictionsState:
    projection = PredictionsProjection()
    store = SnapshotStore(projection, root / projection.name)
    await ProjectionRunner(projection, log, store, MemoryDeadLetters()).run()
    state: PredictionsState = store.load().state
    return state


async def test_prediction_before_rebuild_equals_prediction_after(
    nats_url: str, tmp_path: Path
) -> None:
    tests = load_tests(write_tiny_set(tmp_path / "tiny.jsonl"), labelled=True)
    unseen = [
        TestCode(
            project="delta",
            test="delta.T-sleepy",
            code="@Test public void x() {\n"
            "  worker.start();\n  Thread.sleep(200);\n  assertTrue(worker.done());\n}",
        ),
        TestCode(
            project="delta",
            test="delta.T-pure",
            code="@Test public void y() {\n  assertEquals(7, Calculator.add(3, 4));\n}",
        ),
    ]
    root = tmp_path / "projections"
    nc = await nats.connect(nats_url)
    try:
        specs = load_stream_specs()
        await apply_streams(nc, specs)
        log = JetStreamEventLog(nc, specs)
        with embedder_for(tmp_path / "cache") as embedder:
            model, trained = await train_model(
                log, tests, embedder=embedder, trained_on="tiny", config=SMALL
            )
            assert trained.digest == model.digest
            assert trained.object_name == model.digest
            assert trained.model_id == model.model_id
            assert (trained.tests, trained.flaky) == (36, 12)
            # Learned, not guessed: the training set is separated.
            train_p = score(model, tests, embedder)
            assert sum(p.flaky == t.flaky for p, t in zip(train_p, tests, strict=True)) >= 33

            live = await _fold(log, root)
            assert resolve_model(live, "latest").digest == model.digest
            served = await fetch_model(log, resolve_model(live, model.model_id))
            before = score(served, unseen, embedder)
            assert [p.flaky for p in before] == [True, False]
            assert await record_predictions(log, served, before, source="inline") == 2
            assert await record_predictions(log, served, before, source="inline") == 0
            live = await _fold(log, root)

        projection = PredictionsProjection()
        await rebuild(projection, log, root, MemoryDeadLetters())
        rebuilt: PredictionsState = SnapshotStore(projection, root / projection.name).load().state
        assert projection.encode(rebuilt) == projection.encode(live)
        for p in before:
            entry = rebuilt.predictions[p.test]
            assert (entry.probability, entry.flaky, entry.digest) == (
                p.probability,
                p.flaky,
                model.digest,
            )

        # After the rebuild: the model comes back from the object store by the digest
        # the replayed log names, and scores the same input the same way.
        again = await fetch_model(log, resolve_model(rebuilt, "latest"))
        assert again.digest == model.digest
        with embedder_for(tmp_path / "cache") as embedder:
            after = score(again, unseen, embedder)
        assert after == before
        with embedder_for(tmp_path / "fresh-cache", model.embedder) as embedder:  # computed again
            fresh = score(again, unseen, embedder)
        assert [p.flaky for p in fresh] == [p.flaky for p in before]
        assert np.allclose(
            [p.probability for p in fresh], [p.probability for p in before], atol=1e-5
        )

        with pytest.raises(ConfigError, match="no flakiness model"):
            resolve_model(rebuilt, "fm-0000")
        with pytest.raises(ConfigError, match="no such object"):
            await ModelStore(nc).get("0" * 64)
    finally:
        await nc.close()


def test_artefact_bytes_are_canonical() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 3)).astype(np.float32)
    y = np.arange(40) % 4 == 0
    x[:, 0] += y * 3
    a = FlakeModel.fit(x, y, columns=["a", "b", "c"], config=SMALL)
    assert FlakeModel.from_bytes(a.to_bytes()).to_bytes() == a.to_bytes()
