"""The pattern-library projection: folds pattern events, materialises the search indexes.

``apply`` only folds events into :class:`LibraryState` (pure, fast). On each
materialisation (end of a run, and at most every 30 s while following) the state is
turned into a search set under ``<projection dir>/search``:

* ``lance/``: the LanceDB table ``patterns`` (metadata + 384-dim vector): the durable
  store other readers can query;
* ``vectors/``: the in-memory vector index's saved form (:mod:`aqe.search.vector`);
* ``keyword/``: the tantivy BM25 index (:mod:`aqe.search.keyword`);
* ``embedder.json``: the embedder model version the vectors came from;
* ``built.json``: the checkpoints the set was built at.

Embeddings go through a persistent cache keyed by content hash and model version that
lives beside the projections (``<projections>/.embeddings``), outside any one
projection directory, so a rebuild from zero re-embeds nothing that was embedded
before.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from aqe.events import (
    Envelope,
    Event,
    PatternAdded,
    PatternDeprecated,
    PatternUpdated,
    PatternUsed,
)

if TYPE_CHECKING:
    import numpy as np

    from aqe.search.embed import Embedder

__all__ = [
    "SEARCH_DIR",
    "LibraryState",
    "PatternDoc",
    "PatternsProjection",
    "cache_dir_for",
    "embedding_text",
    "search_set_current",
    "search_set_model",
]

SEARCH_DIR = "search"
_BUILT = "built.json"
_EMBEDDER = "embedder.json"  # {"model": the embedder's model_version, "patterns": n}
_ENCODER = msgspec.json.Encoder(order="sorted")


class PatternDoc(msgspec.Struct, kw_only=True):
    """One pattern as the library knows it now."""

    name: str
    code: str
    description: str = ""
    category: str = ""
    language: str = ""
    framework: str = ""
    tags: tuple[str, ...] = ()
    deprecated: bool = False
    replaced_by: str | None = None
    added_seq: int = 0
    updated_seq: int = 0
    revisions: int = 1
    uses: int = 0
    successes: int = 0
    failures: int = 0


class LibraryState(msgspec.Struct, kw_only=True):
    """Every pattern by id."""

    patterns: dict[str, PatternDoc] = msgspec.field(default_factory=dict)


def embedding_text(doc: PatternDoc) -> str:
    """What is embedded for a pattern: name, description, tags, then code.

    MiniLM reads at most 256 word pieces, so the prose comes first.
    """
    parts = [doc.name, doc.description]
    if doc.tags:
        parts.append(" ".join(doc.tags))
    parts.append(doc.code)
    return "\n".join(p for p in parts if p)


def cache_dir_for(directory: Path) -> Path:
    """The embedding cache shared by a projection directory and its rebuilds."""
    return directory.parent / ".embeddings"


class PatternsProjection:
    """Folds ``AQE_PATTERNS`` into a :class:`LibraryState` and its search set."""

    name: str = "patterns"
    version: int = 1
    streams: tuple[str, ...] = ("AQE_PATTERNS",)

    def __init__(
        self,
        embedder_factory: Callable[[Path], Embedder] | None = None,
        *,
        on_embed: Callable[[int, int], None] | None = None,
    ) -> None:
        self._decoder = msgspec.json.Decoder(LibraryState)
        self._embedder_factory = embedder_factory
        self._on_embed = on_embed
        self._embedder: Embedder | None = None
        self._sticky: Embedder | None = None

    def initial(self) -> LibraryState:
        """An empty library."""
        return LibraryState()

    def apply(self, state: LibraryState, envelope: Envelope, event: Event) -> LibraryState:
        """Fold one pattern event (others are ignored)."""
        if isinstance(event, PatternAdded):
            previous = state.patterns.get(event.pattern_id)
            doc = PatternDoc(
                name=event.name,
                code=event.code,
                description=event.description,
                category=event.category,
                language=event.language,
                framework=event.framework,
                tags=tuple(event.tags),
                added_seq=previous.added_seq if previous else envelope.seq,
                updated_seq=envelope.seq,
                revisions=previous.revisions + 1 if previous else 1,
            )
            if previous:
                doc.uses, doc.successes, doc.failures = (
                    previous.uses,
                    previous.successes,
                    previous.failures,
                )
            state.patterns[event.pattern_id] = doc
        elif isinstance(event, PatternUpdated):
            doc = _known(state, event.pattern_id)
            for field in ("name", "code", "description", "category", "language", "framework"):
                value = getattr(event, field)
                if value is not None:
                    setattr(doc, field, value)
            if event.tags is not None:
                doc.tags = tuple(event.tags)
            doc.updated_seq = envelope.seq
            doc.revisions += 1
        elif isinstance(event, PatternDeprecated):
            doc = _known(state, event.pattern_id)
            doc.deprecated = True
            doc.replaced_by = event.replaced_by
            doc.updated_seq = envelope.seq
        elif isinstance(event, PatternUsed):
            doc = _known(state, event.pattern_id)
            doc.uses += 1
            if event.outcome == "success":
                doc.successes += 1
            elif event.outcome == "failure":
                doc.failures += 1
        return state

    def encode(self, state: LibraryState) -> bytes:
        """Canonical JSON (sorted keys)."""
        return _ENCODER.encode(state)

    def decode(self, data: bytes) -> LibraryState:
        """Parse what :meth:`encode` wrote."""
        return self._decoder.decode(data)

    def embedder(self, directory: Path) -> Embedder:
        """The embedder (one per projection instance), caching beside ``directory``."""
        if self._embedder is None:
            if self._embedder_factory is not None:
                self._embedder = self._embedder_factory(cache_dir_for(directory))
            else:
                from aqe.search.embed import Embedder

                self._embedder = Embedder(cache_dir_for(directory))
        return self._embedder

    def materialize(
        self, state: LibraryState, directory: Path, checkpoints: dict[str, int]
    ) -> None:
        """Build the search set for this state and swap it in.

        The set keeps the embedding backend it was built with while this aqe can run
        it (new patterns are embedded with it too): a backend switch re-embeds the
        whole library, which :func:`aqe.search.reembed.reembed_search_set` does with progress
        (in the background when a :class:`~aqe.search.engine.PatternSearch` finds the
        switch), never as a side effect of folding one new event. ``on_embed(done,
        total)`` (given to the constructor) follows the embedding of the patterns.
        """
        progress = None
        if self._on_embed is not None:
            report, total = self._on_embed, len(active_ids(state))

            def progress(done: int) -> None:
                report(done, total)

        embedder = self.index_embedder(directory)
        build_search_set(state, directory, checkpoints, embedder, progress)

    def index_embedder(self, directory: Path) -> Embedder:
        """The embedder whose vectors the saved search set holds, else the configured one."""
        configured = self.embedder(directory)
        saved = search_set_model(directory)
        if saved is None or saved == configured.model_version:
            return configured
        if self._sticky is None or self._sticky.model_version != saved:
            from aqe.search.embed import embedder_for

            self._sticky = embedder_for(saved, cache_dir_for(directory))
        return self._sticky or configured


def _known(state: LibraryState, pattern_id: str) -> PatternDoc:
    doc = state.patterns.get(pattern_id)
    if doc is None:
        # Validate before mutating: the runner parks the event and goes on.
        raise ValueError(f"pattern {pattern_id!r} was never added")
    return doc


def active_ids(state: LibraryState) -> list[str]:
    """Ids of the patterns searches may return (not deprecated), sorted."""
    return sorted(pid for pid, doc in state.patterns.items() if not doc.deprecated)


def embed_library(
    state: LibraryState,
    ids: list[str],
    embedder: Embedder,
    on_progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Vectors of ``ids`` in order (through the embedder's cache; progress as it says)."""
    import numpy as np

    if not ids:
        return np.zeros((0, 384), dtype=np.float32)
    texts = [embedding_text(state.patterns[pid]) for pid in ids]
    return embedder.embed(texts, on_progress=on_progress)


def build_search_set(
    state: LibraryState,
    directory: Path,
    checkpoints: dict[str, int],
    embedder: Embedder,
    on_progress: Callable[[int], None] | None = None,
) -> Path:
    """Write ``directory/search`` for ``state``: Lance table, vector and keyword indexes.

    ``on_progress`` gets the number of patterns embedded so far (see
    :meth:`aqe.search.embed.Embedder.embed`).
    """
    import lancedb
    import pyarrow as pa

    from aqe.projections.tables import build_derived
    from aqe.search.keyword import KeywordIndex
    from aqe.search.vector import VectorIndex

    ids = active_ids(state)
    vectors = embed_library(state, ids, embedder, on_progress)

    def fill(fresh: Path) -> None:
        rows = [_row(pid, state.patterns[pid], vectors[i]) for i, pid in enumerate(ids)]
        table = pa.Table.from_pylist(rows, schema=_schema(vectors.shape[1] or 384))
        lancedb.connect(str(fresh / "lance")).create_table("patterns", table)
        VectorIndex.build(ids, vectors, model=embedder.model_version).save(fresh / "vectors")
        meta = {"model": embedder.model_version, "patterns": len(ids)}
        (fresh / _EMBEDDER).write_bytes(_ENCODER.encode(meta))
        docs = (keyword_doc(pid, state.patterns[pid]) for pid in ids)
        KeywordIndex.build(docs, fresh / "keyword")

    return build_derived(directory, SEARCH_DIR, fill, checkpoints)


def search_set_model(directory: Path) -> str | None:
    """The embedder model version of the saved search set (``None``: no search set).

    Read from ``search/embedder.json``; a set written before that file existed is
    asked through its vector index's metadata.
    """
    root = directory / SEARCH_DIR
    try:
        meta = msgspec.json.decode((root / _EMBEDDER).read_bytes())
    except (OSError, msgspec.DecodeError):
        meta = None
    if isinstance(meta, dict) and isinstance(meta.get("model"), str):
        return str(meta["model"])
    if not (root / "vectors").is_dir():
        return None
    from aqe.search.vector import VectorIndex

    try:
        model = VectorIndex.load(root / "vectors").params.get("model")
    except (OSError, ValueError):
        return None
    return model if isinstance(model, str) else None


def search_set_current(directory: Path, checkpoints: dict[str, int]) -> bool:
    """Whether ``directory/search`` was built at exactly these checkpoints."""
    from aqe.projections.tables import derived_current

    return derived_current(directory, SEARCH_DIR, checkpoints)


def keyword_doc(pattern_id: str, doc: PatternDoc) -> Any:
    """The keyword index's view of a pattern."""
    from aqe.search.keyword import KeywordDoc

    return KeywordDoc(
        id=pattern_id,
        name=doc.name,
        description=doc.description,
        code=doc.code,
        tags=tuple(doc.tags),
        category=doc.category,
        framework=doc.framework,
        language=doc.language,
    )


def _row(pattern_id: str, doc: PatternDoc, vector: Any) -> dict[str, Any]:
    return {
        "pattern_id": pattern_id,
        "name": doc.name,
        "description": doc.description,
        "category": doc.category,
        "language": doc.language,
        "framework": doc.framework,
        "tags": list(doc.tags),
        "code": doc.code,
        "revisions": doc.revisions,
        "uses": doc.uses,
        "successes": doc.successes,
        "failures": doc.failures,
        "vector": vector.tolist(),
    }


def _schema(dim: int) -> Any:
    import pyarrow as pa

    text = pa.string()
    return pa.schema(
        [
            ("pattern_id", text),
            ("name", text),
            ("description", text),
            ("category", text),
            ("language", text),
            ("framework", text),
            ("tags", pa.list_(text)),
            ("code", text),
            ("revisions", pa.int64()),
            ("uses", pa.int64()),
            ("successes", pa.int64()),
            ("failures", pa.int64()),
            ("vector", pa.list_(pa.float32(), dim)),
        ]
    )
