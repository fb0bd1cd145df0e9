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

from aqe.search.projection import (
    SEARCH_DIR,
    LibraryState,
    PatternDoc,
    PatternsProjection,
    active_ids,
    embed_library,
    keyword_doc,
    search_set_current,
    search_set_model,
)
from aqe.search.reembed import ReembedMode, ReembedStatus, load_library, reembed_search_set

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
    model: str = ""
    """The embedder model version of the query vector and of the vectors it met."""


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
        self._active = (embedder, vectors)
        self.keyword = keyword
        self.pending_model: str | None = None
        """The configured embedder's model version while the vectors are another's."""
        self.reembedding: ReembedStatus | None = None
        """The background re-embedding started by :meth:`open`, if any."""
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
        reembed: ReembedMode = "background",
        on_reembed: Callable[[int, int], None] | None = None,
    ) -> PatternSearch:
        """Load the projection in ``directory`` (its search set, or build from its state).

        When the saved search set was embedded by another backend or precision than
        ``embedder`` (the configured one by default), its vectors never meet this
        embedder's queries. While this aqe can still run the set's own embedder, the
        searcher answers from the saved vectors with it and, by ``reembed``:

        * ``"background"``: re-embeds the library with ``embedder`` in a daemon
          thread (progress in :attr:`reembedding`, finished batches kept in the
          cache) and swaps the new search set in, on disk and here, when it is done;
        * ``"foreground"``: re-embeds before returning;
        * ``"off"``: leaves the switch to :func:`reembed` (``aqe patterns reembed``);
          :attr:`pending_model` names the embedder waiting.

        When it cannot run the set's embedder (another model or wheel version), it
        re-embeds before returning whatever ``reembed`` says. ``on_reembed(done,
        total)`` reports a re-embedding done before returning.

        Raises:
            ProjectionError: the projection was never run.
        """
        from aqe.search.embed import embedder_for
        from aqe.search.keyword import KeywordIndex
        from aqe.search.vector import VectorIndex

        snapshot = load_library(directory)
        embedder = embedder or PatternsProjection().embedder(directory)
        checkpoints = dict(sorted(snapshot.checkpoints.items()))
        saved = search_set_model(directory)
        current = search_set_current(directory, checkpoints)
        serving = embedder
        if saved is not None and saved != embedder.model_version:
            old = None if reembed == "foreground" else embedder_for(saved, embedder.cache_dir)
            if old is None:  # the saved vectors cannot be queried: switch now
                reembed_search_set(directory, embedder, on_reembed)
                current = True
            else:
                serving = old
        if current:
            root = directory / SEARCH_DIR
            searcher = cls(
                snapshot.state.patterns,
                active_ids(snapshot.state),
                VectorIndex.load(root / "vectors"),
                KeywordIndex.open(root / "keyword"),
                serving,
            )
        else:  # behind the log: built in memory, with the embedder of the saved vectors
            searcher = cls.from_state(snapshot.state, serving)
        if serving is not embedder:
            searcher._pending_switch(directory, embedder, reembed)
        return searcher

    def _pending_switch(self, directory: Path, target: Embedder, mode: ReembedMode) -> None:
        from aqe.search.reembed import start_background

        self.pending_model = target.model_version
        if mode == "background":
            self.reembedding = start_background(
                directory, self.embedder.model_version, target, len(self.ids), self._swap
            )

    def _swap(self, embedder: Embedder, vectors: VectorIndex) -> None:
        # One assignment: a query reads the embedder and the vectors together.
        self._active = (embedder, vectors)
        self.pending_model = None

    @property
    def embedder(self) -> Embedder:
        """The embedder that answers queries now (the vectors' own)."""
        return self._active[0]

    @property
    def vectors(self) -> VectorIndex:
        """The vector index that answers queries now."""
        return self._active[1]

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
        embedder, vectors = self._active  # one pair: never one backend's query on another's
        if mode in ("semantic", "hybrid") and len(self.ids):
            started = time.perf_counter()
            vector = embedder.embed_query(query)
            timings.embed_ms = (time.perf_counter() - started) * 1000
            started = time.perf_counter()
            mask = self._mask(category, framework, language)
            vector_hits = vectors.search(vector, depth, mask=mask)
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
        return SearchResult(
            query=query, mode=mode, hits=hits, timings=timings, model=embedder.model_version
        )

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
