"""The vector index on real all-MiniLM-L6-v2 vectors: CoSQA snippets and real queries.

Recall is measured against exact search over the same real vectors; the model is the
default embedding backend, loaded offline from its wheel. The embeddings go through the
project's content-addressed cache kept in pytest's cache directory, so only the first
run pays for the model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from aqe.datasets import dataset_path, find_file, open_text
from aqe.search.embed import Embedder
from aqe.search.vector import TARGET_RECALL, VectorIndex, exact_top

K = 10


def _cosqa() -> tuple[list[str], list[str]]:
    cosqa = dataset_path("cosqa")
    code_map = find_file(cosqa / "code_idx_map.txt") if cosqa else None
    dev = find_file(cosqa / "cosqa-retrieval-dev-500.json") if cosqa else None
    if code_map is None or dev is None:
        pytest.skip("the CoSQA data set (data/cosqa) is not there")
    with open_text(code_map) as fh:
        snippets = list(json.load(fh))
    with open_text(dev) as fh:
        queries = [row["doc"] for row in json.load(fh)]
    return snippets, queries


@pytest.fixture(scope="module")
def embedder(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Embedder]:
    # pytest's cache keeps the vectors between runs; without it (-p no:cacheprovider), a temp dir
    store = getattr(request.config, "cache", None)
    cache = Path(store.mkdir("aqe-embeddings")) if store else tmp_path_factory.mktemp("embeddings")
    with Embedder(cache) as model:
        yield model


def recall(index: VectorIndex, vectors: np.ndarray, ids: list[str], queries: np.ndarray) -> float:
    truth = exact_top(vectors, queries, K)
    found = 0
    for q, rows in zip(queries, truth, strict=True):
        got = {pid for pid, _ in index.search(q, K)}
        found += len(got & {ids[r] for r in rows.tolist()})
    return found / (K * len(queries))


def test_a_few_hundred_real_vectors_stay_exact_through_adds_and_removes(
    embedder: Embedder,
) -> None:
    # Calibration measures that 400 real vectors have no lists worth probing (recall 0.99
    # on its hard queries needs most of them), so the index keeps one list: exact.
    snippets, query_texts = _cosqa()
    vectors = embedder.embed(snippets[:400])
    queries = embedder.embed(query_texts[:60])
    ids = [f"s{i}" for i in range(400)]

    index = VectorIndex.build(ids[:300], vectors[:300], exact_max=100, nlist=12)

    assert index.kind == "exact"
    assert index.params["ivf_rejected"]["probed_share"] > 0.35
    assert recall(index, vectors[:300], ids[:300], queries) == 1.0
    index.add(ids[300:], vectors[300:])
    assert recall(index, vectors, ids, queries) == 1.0
    index.remove(ids[:50])
    assert index.ids == ids[50:]
    assert recall(index, vectors[50:], ids[50:], queries) == 1.0
    # The scores are the cosines of the real vectors.
    position = {pid: i for i, pid in enumerate(ids)}
    for pid, score in index.search(queries[0], 3):
        assert score == pytest.approx(float(vectors[position[pid]] @ queries[0]), abs=1e-5)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ivf_on_the_whole_cosqa_corpus_keeps_recall_through_adds_and_removes(
    embedder: Embedder,
) -> None:
    snippets, query_texts = _cosqa()
    vectors = embedder.embed(snippets)
    queries = embedder.embed(query_texts)
    n = len(snippets)
    ids = [f"s{i}" for i in range(n)]

    index = VectorIndex.build(ids, vectors, exact_max=1000)

    assert index.kind == "ivf"  # (at 4,000 real vectors calibration still keeps one list)
    assert index.params["probed_share"] < 0.35
    assert recall(index, vectors, ids, queries) >= TARGET_RECALL
    index.remove(ids[:1000])  # out of the trained lists, no retraining (n > trained / 2)
    assert "rebuilt" not in index.params
    assert recall(index, vectors[1000:], ids[1000:], queries) >= TARGET_RECALL
    index.add(ids[:1000], vectors[:1000])  # back into the trained lists
    assert "rebuilt" not in index.params
    assert index.ids == ids[1000:] + ids[:1000]
    order = np.r_[np.arange(1000, n), np.arange(1000)]
    assert recall(index, vectors[order], index.ids, queries) >= TARGET_RECALL
