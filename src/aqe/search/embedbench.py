"""Measure the embedding backends on this machine: speed, agreement with fp32, nDCG.

``aqe patterns bench-embed`` and ``tests/benchmarks/bench_embed.py`` call this. For
each ``(backend, precision)`` it loads a fresh in-memory :class:`Embedder` (no cache,
so every text runs the model), then times

* single queries: each query alone, as a search embeds it (p50 ms and queries/s);
* batched snippets: one :meth:`Embedder.embed` call over code snippets (snippets/s);

and compares every vector with torch fp32's vector of the same text (cosine min and
1st percentile). torch fp32 is always measured, first: it is the reference.

:func:`ndcg_by_backend` runs the CoSQA (or any) relevance set through the semantic and
hybrid searches once per backend, through the persistent cache, so the nDCG@10 table
shows what each backend costs in relevance. :func:`recommend` picks the fastest
backend that stays within :data:`NDCG_TOLERANCE` of fp32 (and at cosine p1 >= 0.98).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import numpy as np

from aqe.search.embed import Backend, Embedder, Precision

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from aqe.search.engine import Mode
    from aqe.search.metrics import Dataset

__all__ = [
    "DEFAULT_CHOICES",
    "NDCG_TOLERANCE",
    "BackendQuality",
    "BackendSpeed",
    "measure",
    "ndcg_by_backend",
    "recommend",
]

Choice = tuple[Backend, Precision]
DEFAULT_CHOICES: tuple[Choice, ...] = (("torch", "fp32"), ("onnx", "fp32"), ("onnx", "int8"))
"""What is measured unless asked otherwise (torch bf16 only pays on AMX CPUs)."""
REFERENCE: Choice = ("torch", "fp32")
NDCG_TOLERANCE = 0.005
"""Largest nDCG@10 loss against torch fp32 a default backend may have."""
MIN_COSINE_P1 = 0.98


class BackendSpeed(msgspec.Struct, frozen=True, kw_only=True):
    """One backend's speed and agreement with torch fp32."""

    backend: str
    precision: str
    model_version: str
    load_s: float
    query_p50_ms: float
    queries_per_s: float
    snippets_per_s: float
    cosine_min: float
    cosine_p1: float


class BackendQuality(msgspec.Struct, frozen=True, kw_only=True):
    """One backend's relevance on a data set (nDCG@10 / MRR@10 per search mode)."""

    backend: str
    precision: str
    semantic_ndcg: float
    hybrid_ndcg: float
    semantic_mrr: float
    hybrid_mrr: float


def _ordered(choices: Sequence[Choice]) -> list[Choice]:
    rest = [c for c in dict.fromkeys(choices) if c != REFERENCE]
    return [REFERENCE, *rest]


def _fp32_first(choices: Sequence[Choice]) -> list[Choice]:
    """Unique choices with an fp32 one first (torch's if present): the nDCG reference."""
    unique = list(dict.fromkeys(choices))
    fp32 = [c for c in unique if c[1] == "fp32"]
    first = REFERENCE if REFERENCE in fp32 else (fp32[0] if fp32 else ("onnx", "fp32"))
    return [first, *(c for c in unique if c != first)]


def measure(
    choices: Sequence[Choice],
    queries: Sequence[str],
    snippets: Sequence[str],
    *,
    model_dir: Path | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> list[BackendSpeed]:
    """Time and compare each backend (torch fp32 first, as the reference).

    Args:
        choices: ``(backend, precision)`` pairs.
        queries: Texts embedded one at a time.
        snippets: Texts embedded in one batched call.
        model_dir: Where ONNX exports live (default: the embedder's).
        on_progress: Called with a label before each backend.

    Returns:
        One row per choice, reference first.
    """
    rows: list[BackendSpeed] = []
    reference: NDArray[np.float32] | None = None
    for backend, precision in _ordered(choices):
        if on_progress is not None:
            on_progress(f"{backend} {precision}")
        embedder = Embedder(backend=backend, precision=precision, model_dir=model_dir)
        started = time.perf_counter()
        embedder.embed(["load the model before timing"])
        load_s = time.perf_counter() - started
        single: list[float] = []
        query_vectors = np.empty((len(queries), 384), dtype=np.float32)
        for row, text in enumerate(queries):
            t0 = time.perf_counter()
            query_vectors[row] = embedder.embed([text])[0]
            single.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        snippet_vectors = embedder.embed(list(snippets))
        batch_s = time.perf_counter() - t0
        vectors = np.concatenate([query_vectors, snippet_vectors])
        if reference is None:
            reference = vectors
        cosines = np.einsum("ij,ij->i", vectors, reference)
        rows.append(
            BackendSpeed(
                backend=backend,
                precision=precision,
                model_version=embedder.model_version,
                load_s=load_s,
                query_p50_ms=statistics.median(single) * 1000,
                queries_per_s=len(single) / sum(single),
                snippets_per_s=len(snippets) / batch_s,
                cosine_min=float(cosines.min()),
                cosine_p1=float(np.percentile(cosines, 1)),
            )
        )
        embedder.close()
    return rows


def ndcg_by_backend(
    dataset: Dataset,
    choices: Sequence[Choice],
    cache_dir: Path | None,
    *,
    model_dir: Path | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> list[BackendQuality]:
    """nDCG@10 and MRR@10 of the semantic and hybrid searches, per backend.

    Args:
        dataset: The relevance set (its corpus is indexed in memory).
        choices: ``(backend, precision)`` pairs. The reference comes first: torch
            fp32 when asked for, else ONNX fp32 (the same vectors: cosine >= 0.9999 to
            torch, and several times cheaper over a whole corpus).
        cache_dir: The embedding cache (a second run embeds nothing).
        model_dir: Where ONNX exports live.
        on_progress: ``(label, done, total)`` while the corpus is embedded.

    Returns:
        One row per choice, reference first.
    """
    from aqe.search.engine import PatternSearch
    from aqe.search.metrics import dataset_library, evaluate
    from aqe.search.projection import active_ids, embedding_text

    state = dataset_library(dataset)
    ids = active_ids(state)
    texts = [embedding_text(state.patterns[i]) for i in ids]
    rows: list[BackendQuality] = []
    for backend, precision in _fp32_first(choices):
        with Embedder(
            cache_dir, backend=backend, precision=precision, model_dir=model_dir
        ) as embedder:
            label = f"embed corpus ({backend} {precision})"

            def tick(done: int, label: str = label) -> None:
                if on_progress is not None:
                    on_progress(label, done, len(texts))

            embedder.embed(texts, on_progress=tick)
            searcher = PatternSearch.from_state(state, embedder)
            scores = {}
            modes: tuple[Mode, ...] = ("semantic", "hybrid")
            for mode in modes:

                def ask(
                    query: str, k: int, mode: Mode = mode, searcher: PatternSearch = searcher
                ) -> list[str]:
                    return [hit.pattern_id for hit in searcher.search(query, mode=mode, k=k).hits]

                scores[mode] = evaluate(ask, dataset, k=10)
        rows.append(
            BackendQuality(
                backend=backend,
                precision=precision,
                semantic_ndcg=scores["semantic"].ndcg,
                hybrid_ndcg=scores["hybrid"].ndcg,
                semantic_mrr=scores["semantic"].mrr,
                hybrid_mrr=scores["hybrid"].mrr,
            )
        )
    return rows


def recommend(
    speeds: Sequence[BackendSpeed], quality: Sequence[BackendQuality] = ()
) -> BackendSpeed:
    """The fastest backend (single queries, then snippets) that keeps quality.

    Keeping quality: cosine p1 >= 0.98 to fp32 and, where nDCG was measured, both
    searches within :data:`NDCG_TOLERANCE` of the fp32 reference (the first row of
    ``quality``). The reference always qualifies.
    """
    by_choice = {(q.backend, q.precision): q for q in quality}
    base = quality[0] if quality else None

    def keeps(speed: BackendSpeed) -> bool:
        if (speed.backend, speed.precision) == REFERENCE or speed.precision == "fp32":
            return True
        if speed.cosine_p1 < MIN_COSINE_P1:
            return False
        row = by_choice.get((speed.backend, speed.precision))
        if base is None or row is None:
            return base is None
        return (
            base.semantic_ndcg - row.semantic_ndcg <= NDCG_TOLERANCE
            and base.hybrid_ndcg - row.hybrid_ndcg <= NDCG_TOLERANCE
        )

    return max((s for s in speeds if keeps(s)), key=lambda s: (s.queries_per_s, s.snippets_per_s))
