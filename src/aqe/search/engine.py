"""Querying the pattern library: keyword (BM25), semantic (MiniLM), or hybrid (RRF).

The hot path is in memory: the vector index and the tantivy index are loaded once
from the projection's search set (:mod:`aqe.search.projection`); a query embeds the
text (cached), asks each side for its best candidates, and fuses them with weighted
Reciprocal Rank Fusion. Every result carries its time split into embed / keyword /
vector / fuse.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import msgspec

from aqe.errors import ProjectionError
from aqe.search.projection import (
    SEARCH_DIR,
    LibraryState,
    PatternDoc,
    PatternsProjection,
    active_ids,
    build_search_set,
    embed_library,
    keyword_doc,
    search_set_current,
)

if TYPE_CHECKING:
    import numpy as np

    from aqe.search.embed import Embedder
    from aqe.search.keyword import KeywordIndex
    from aqe.search.vector import VectorIndex

__all__ = [
    "DEFAULT_RRF_K",
    "DEFAULT_WEIGHTS",
    "Mode",
    "PatternSearch",
    "SearchHit",
    "SearchResult",
    "Timings",
]

Mode = Literal["keyword", "semantic", "hybrid"]

DEFAULT_RRF_K = 5
"""RRF's rank constant, chosen by measurement on CoSQA (README, "Pattern search"): the
fleet plan's k=60 with 0.6/0.4 scored 0.51 nDCG@10, below semantic search alone."""
DEFAULT_WEIGHTS = (0.2, 0.8)
"""Hybrid weights (keyword, semantic); with k=5 the only setting measured that beats
both single modes on nDCG@10, MRR and Recall@10 at once."""
CANDIDATES = 50
"""Candidates each side contributes to the fusion (at least ``k``)."""


class Timings(msgspec.Struct, kw_only=True):
    """Milliseconds spent in each stage of one query."""

    embed_ms: float = 0.0
    keyword_ms: float = 0.0
    vector_ms: float = 0.0
    fuse_ms: float = 0.0

    @property
    def total_ms(self) -> float:
        """All stages together."""
        return self.embed_ms + self.keyword_ms + self.vector_ms + self.fuse_ms


class SearchHit(msgspec.Struct, frozen=True, kw_only=True):
    """One pattern found."""

    pattern_id: str
    score: float
    name: str
    category: str
    framework: str
    language: str
    description: str
    code: str
    tags: tuple[str, ...] = ()
    keyword_rank: int | None = None
    semantic_rank: int | None = None


class SearchResult(msgspec.Struct, frozen=True, kw_only=True):
    """The hits of one query, best first, and where the time went."""

    query: str
    mode: str
    hits: tuple[SearchHit, ...]
    timings: Timings


class PatternSearch:
    """An in-memory searcher over one library state."""

    def __init__(
        self,
        docs: dict[str, PatternDoc],
        ids: Sequence[str],
        vectors: VectorIndex,
        keyword: KeywordIndex,
        embedder: Embedder,
    ) -> None:
        import numpy as np

        self.docs = docs
        self.ids = list(ids)
        self.vectors = vectors
        self.keyword = keyword
        self.embedder = embedder
        self._columns = {
            field: np.array([getattr(docs[i], field) for i in self.ids], dtype=object)
            for field in ("category", "framework", "language")
        }

    @classmethod
    def from_state(cls, state: LibraryState, embedder: Embedder) -> PatternSearch:
        """Build both indexes in memory from a library state."""
        from aqe.search.keyword import KeywordIndex
        from aqe.search.vector import VectorIndex

        ids = active_ids(state)
        vectors = VectorIndex.build(
            ids, embed_library(state, ids, embedder), model=embedder.model_version
        )
        keyword = KeywordIndex.build(keyword_doc(i, state.patterns[i]) for i in ids)
        return cls(state.patterns, ids, vectors, keyword, embedder)

    @classmethod
    def open(
        cls,
        directory: Path,
        embedder: Embedder | None = None,
        *,
        on_reembed: Callable[[int, int], None] | None = None,
    ) -> PatternSearch:
        """Load the projection in ``directory`` (its search set, or build from its state).

        A search set built by another embedding backend or precision is rebuilt with
        this embedder and saved (its vectors never meet this embedder's queries);
        ``on_reembed(done, total)`` reports the re-embedding (finished batches stay in
        the cache, so an interrupted switch resumes where it stopped).

        Raises:
            ProjectionError: the projection was never run.
        """
        from aqe.projections.store import SnapshotStore
        from aqe.search.keyword import KeywordIndex
        from aqe.search.vector import VectorIndex

        projection = PatternsProjection()
        store = SnapshotStore[LibraryState](projection, directory)
        if not store.exists():
            raise ProjectionError(
                f"no pattern library at {directory}; run `aqe patterns import` or "
                "`aqe consume patterns` first"
            )
        snapshot = store.load()
        embedder = embedder or projection.embedder(directory)
        checkpoints = dict(sorted(snapshot.checkpoints.items()))
        if not search_set_current(directory, checkpoints):
            return cls.from_state(snapshot.state, embedder)
        root = directory / SEARCH_DIR
        vectors = VectorIndex.load(root / "vectors")
        if vectors.params.get("model") != embedder.model_version:
            total = len(active_ids(snapshot.state))

            def progress(done: int) -> None:
                if on_reembed is not None:
                    on_reembed(done, total)

            build_search_set(snapshot.state, directory, checkpoints, embedder, progress)
            vectors = VectorIndex.load(root / "vectors")
        return cls(
            snapshot.state.patterns,
            active_ids(snapshot.state),
            vectors,
            KeywordIndex.open(root / "keyword"),
            embedder,
        )

    def __len__(self) -> int:
        return len(self.ids)

    def _mask(
        self, category: str | None, framework: str | None, language: str | None
    ) -> np.ndarray | None:
        import numpy as np

        wanted = {"category": category, "framework": framework, "language": language}
        if not any(wanted.values()):
            return None
        mask = np.ones(len(self.ids), dtype=bool)
        for field, value in wanted.items():
            if value:
                mask &= self._columns[field] == value
        return mask

    def search(
        self,
        query: str,
        *,
        mode: Mode = "hybrid",
        k: int = 10,
        category: str | None = None,
        framework: str | None = None,
        language: str | None = None,
        rrf_k: int = DEFAULT_RRF_K,
        weights: tuple[float, float] = DEFAULT_WEIGHTS,
    ) -> SearchResult:
        """The best ``k`` patterns for ``query`` (deprecated ones never appear)."""
        from aqe.search.fusion import rrf

        if k < 1:
            raise ValueError("k must be at least 1")
        timings = Timings()
        depth = max(k, CANDIDATES) if mode == "hybrid" else k
        keyword_hits: list[tuple[str, float]] = []
        vector_hits: list[tuple[str, float]] = []
        if mode in ("keyword", "hybrid") and query.strip():
            started = time.perf_counter()
            filters = {
                name: value
                for name, value in (
                    ("category", category),
                    ("framework", framework),
                    ("language", language),
                )
                if value
            }
            keyword_hits = self.keyword.search(query, depth, filters=filters or None)
            timings.keyword_ms = (time.perf_counter() - started) * 1000
        if mode in ("semantic", "hybrid") and len(self.ids):
            started = time.perf_counter()
            vector = self.embedder.embed_query(query)
            timings.embed_ms = (time.perf_counter() - started) * 1000
            started = time.perf_counter()
            mask = self._mask(category, framework, language)
            vector_hits = self.vectors.search(vector, depth, mask=mask)
            timings.vector_ms = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        keyword_rank = {pid: i for i, (pid, _) in enumerate(keyword_hits, start=1)}
        vector_rank = {pid: i for i, (pid, _) in enumerate(vector_hits, start=1)}
        if mode == "keyword":
            ranked = keyword_hits[:k]
        elif mode == "semantic":
            ranked = vector_hits[:k]
        else:
            ranked = rrf(
                [[p for p, _ in keyword_hits], [p for p, _ in vector_hits]],
                k=rrf_k,
                weights=list(weights),
                limit=k,
            )
        hits = tuple(
            self._hit(pid, score, keyword_rank.get(pid), vector_rank.get(pid))
            for pid, score in ranked
        )
        timings.fuse_ms = (time.perf_counter() - started) * 1000
        return SearchResult(query=query, mode=mode, hits=hits, timings=timings)

    def _hit(
        self, pattern_id: str, score: float, keyword_rank: int | None, semantic_rank: int | None
    ) -> SearchHit:
        doc = self.docs[pattern_id]
        return SearchHit(
            pattern_id=pattern_id,
            score=round(float(score), 6),
            name=doc.name,
            category=doc.category,
            framework=doc.framework,
            language=doc.language,
            description=doc.description,
            code=doc.code,
            tags=tuple(doc.tags),
            keyword_rank=keyword_rank,
            semantic_rank=semantic_rank,
        )
