"""The pattern library end to end: events in JetStream, the projection, real indexes.

Real parts only: a nats-server per test, the MiniLM model from its wheel, LanceDB and
tantivy on disk.
"""

from __future__ import annotations

from pathlib import Path

import nats
import pytest

from aqe.events import PatternDeprecated, PatternUsed
from aqe.log import NewEvent, load_stream_specs
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.projections import MemoryDeadLetters, ProjectionRunner, SnapshotStore, rebuild
from aqe.search.embed import Embedder
from aqe.search.engine import PatternSearch
from aqe.search.projection import PatternsProjection, cache_dir_for, search_set_current
from aqe.search.starter import load_starter_library

pytestmark = pytest.mark.nats

QUERIES = [
    "how do I freeze time in a test",
    "start a real nats server for tests",
    "retry with exponential backoff",
    "property based testing with hypothesis",
    "wait for a condition without sleeping",
]


async def _fold(log: JetStreamEventLog, root: Path) -> PatternsProjection:
    projection = PatternsProjection()
    await ProjectionRunner(
        projection,
        log,
        SnapshotStore(projection, root / projection.name),
        MemoryDeadLetters(),
    ).run()
    return projection


def _top(searcher: PatternSearch, query: str, mode: str = "hybrid") -> list[str]:
    return [h.pattern_id for h in searcher.search(query, mode=mode, k=5).hits]  # type: ignore[arg-type]


async def test_library_search_rebuild_and_cache(nats_url: str, tmp_path: Path) -> None:
    library = load_starter_library()
    root = tmp_path / "projections"
    nc = await nats.connect(nats_url)
    try:
        specs = load_stream_specs()
        await apply_streams(nc, specs)
        log = JetStreamEventLog(nc, specs)
        await log.append_many([NewEvent(event=p) for p in library])
        await _fold(log, root)
        directory = root / "patterns"
        store = SnapshotStore(PatternsProjection(), directory)
        assert search_set_current(directory, store.load().checkpoints)

        searcher = PatternSearch.open(directory)
        assert len(searcher) == len(library)
        before = {q: _top(searcher, q) for q in QUERIES}
        # Semantic search finds the time-freezing patterns for a question in plain words.
        time_hits = searcher.search(QUERIES[0], mode="semantic", k=3).hits
        assert any(h.category == "time" for h in time_hits), time_hits
        nats_hits = searcher.search(QUERIES[1], k=3).hits
        assert any(h.category == "messaging" for h in nats_hits), nats_hits
        for mode in ("keyword", "semantic", "hybrid"):
            result = searcher.search("fixture teardown", mode=mode, k=5)  # type: ignore[arg-type]
            assert result.hits, mode
            assert result.timings.total_ms > 0
        filtered = searcher.search("test", k=20, category="flakiness")
        assert filtered.hits
        assert {h.category for h in filtered.hits} == {"flakiness"}

        # A rebuild from sequence 1 gives the same answers and re-embeds nothing.
        embedder = Embedder(cache_dir_for(directory))
        projection = PatternsProjection(embedder_factory=lambda _dir: embedder)
        await rebuild(projection, log, root, MemoryDeadLetters())
        assert embedder.misses == 0
        assert embedder.hits == len(library)
        rebuilt = PatternSearch.open(directory)
        assert {q: _top(rebuilt, q) for q in QUERIES} == before

        # Deprecated patterns leave every mode; usage is counted.
        gone = before[QUERIES[2]][0]
        await log.append(PatternDeprecated(pattern_id=gone, reason="superseded"))
        await log.append(PatternUsed(pattern_id=before[QUERIES[3]][0], outcome="success"))
        await _fold(log, root)
        after = PatternSearch.open(directory)
        assert len(after) == len(library) - 1
        for mode in ("keyword", "semantic", "hybrid"):
            assert gone not in _top(after, QUERIES[2], mode)
        assert after.docs[before[QUERIES[3]][0]].uses == 1
    finally:
        await nc.close()


def test_a_stale_search_set_is_rebuilt_in_memory(tmp_path: Path) -> None:
    from aqe.projections import Snapshot
    from aqe.search.projection import LibraryState, PatternDoc

    directory = tmp_path / "patterns"
    state = LibraryState(
        patterns={
            "a": PatternDoc(name="freeze time", code="def test_clock(): ...", category="time"),
            "b": PatternDoc(name="nats fixture", code="def nats_server(): ...", category="x"),
        }
    )
    store = SnapshotStore(PatternsProjection(), directory)
    store.save(Snapshot(state=state, checkpoints={"AQE_PATTERNS": 2}), materialize=False)
    assert not search_set_current(directory, {"AQE_PATTERNS": 2})
    searcher = PatternSearch.open(directory)
    assert _top(searcher, "freeze time", "keyword")[0] == "a"


def test_an_index_of_another_embedding_backend_is_never_searched(tmp_path: Path) -> None:
    from aqe.projections import Snapshot
    from aqe.search.projection import LibraryState, PatternDoc

    directory = tmp_path / "patterns"
    state = LibraryState(
        patterns={
            "a": PatternDoc(name="freeze time", code="def test_clock(): ...", category="time"),
            "b": PatternDoc(name="nats fixture", code="def nats_server(): ...", category="x"),
        }
    )
    onnx = Embedder(cache_dir_for(directory), backend="onnx", precision="int8")
    projection = PatternsProjection(embedder_factory=lambda _dir: onnx)
    SnapshotStore(projection, directory).save(Snapshot(state=state, checkpoints={"P": 2}))
    assert search_set_current(directory, {"P": 2})
    assert onnx.misses == 2

    same = PatternSearch.open(directory, Embedder(cache_dir_for(directory), precision="int8"))
    assert same.vectors.params["model"] == onnx.model_version  # the saved index, as it is

    fp32 = Embedder(cache_dir_for(directory), backend="onnx", precision="fp32")
    switched = PatternSearch.open(directory, fp32, reembed="foreground")

    assert switched.vectors.params["model"] == fp32.model_version
    assert fp32.misses == 2  # re-embedded in fp32, not read from the int8 rows
    assert _top(switched, "freeze the clock", "semantic")[0] == "a"
    # The rebuilt search set was saved: the next open reads it, embedding nothing.
    progress: list[tuple[int, int]] = []
    again = Embedder(cache_dir_for(directory), backend="onnx", precision="fp32")
    reopened = PatternSearch.open(directory, again, on_reembed=lambda *p: progress.append(p))
    assert reopened.vectors.params["model"] == fp32.model_version
    assert (again.hits, again.misses, progress) == (0, 0, [])
    back = Embedder(cache_dir_for(directory), backend="onnx", precision="int8")
    PatternSearch.open(
        directory, back, reembed="foreground", on_reembed=lambda *p: progress.append(p)
    )
    assert progress[-1] == (2, 2)
    assert (back.hits, back.misses) == (2, 0)  # switching back: the int8 rows are cached
