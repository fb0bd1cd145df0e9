"""Switching the embedding backend: the old vectors serve while the library re-embeds.

Real parts only: the MiniLM model from its wheel on ONNX Runtime (int8 and fp32), the
SQLite embedding cache, LanceDB and tantivy on disk. No nats-server: the library
state is saved as the projection's snapshot directly.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from aqe.projections import Snapshot, SnapshotStore
from aqe.search.embed import Embedder
from aqe.search.engine import PatternSearch
from aqe.search.projection import (
    LibraryState,
    PatternDoc,
    PatternsProjection,
    cache_dir_for,
    search_set_model,
)
from aqe.search.reembed import reembed_search_set

PATTERNS = {
    "clock": PatternDoc(name="freeze time", code="def test_clock(frozen): ...", category="time"),
    "nats": PatternDoc(name="nats server fixture", code="def nats_server(): ...", category="io"),
    "retry": PatternDoc(name="retry with backoff", code="def retry(fn, tries): ...", category="x"),
    "csv": PatternDoc(name="parse a csv file", code="def test_csv(tmp_path): ...", category="io"),
    "mock": PatternDoc(name="mock an http call", code="def test_http(respx): ...", category="x"),
    "wait": PatternDoc(name="wait for a condition", code="def wait_until(p): ...", category="x"),
}


def _library(directory: Path) -> Embedder:
    """Save the library and its search set, embedded with ONNX int8; that embedder."""
    int8 = Embedder(cache_dir_for(directory), backend="onnx", precision="int8")
    progress: list[tuple[int, int]] = []
    projection = PatternsProjection(
        embedder_factory=lambda _dir: int8, on_embed=lambda *p: progress.append(p)
    )
    state = LibraryState(patterns={k: msgspec.structs.replace(v) for k, v in PATTERNS.items()})
    SnapshotStore(projection, directory).save(Snapshot(state=state, checkpoints={"P": 6}))
    assert search_set_model(directory) == int8.model_version
    assert progress == [(0, 6), (6, 6)]  # the cache lookup, then the one batch
    return int8


def _fp32(directory: Path, batch_size: int = 64) -> Embedder:
    return Embedder(
        cache_dir_for(directory), backend="onnx", precision="fp32", batch_size=batch_size
    )


@pytest.mark.timeout(240)
def test_the_old_vectors_serve_until_the_background_switch_swaps_in(tmp_path: Path) -> None:
    directory = tmp_path / "patterns"
    int8 = _library(directory)
    fp32 = _fp32(directory)

    searcher = PatternSearch.open(directory, fp32)  # reembed="background"

    status = searcher.reembedding
    assert status is not None
    assert (status.source, status.target) == (int8.model_version, fp32.model_version)
    answered = set()
    while True:  # queries keep being answered while the switch runs, each by one backend
        done = status.finished.is_set()
        embedder, vectors = searcher.embedder, searcher.vectors
        assert embedder.model_version == vectors.params["model"]
        result = searcher.search("freeze the clock", mode="semantic", k=1)
        assert result.hits[0].pattern_id == "clock"
        answered.add(result.model)
        if done:
            break
    assert status.state == "done", status.error
    assert (status.done, status.total) == (6, 6)
    assert answered <= {int8.model_version, fp32.model_version}
    assert searcher.search("nats fixture", mode="hybrid", k=1).model == fp32.model_version
    assert searcher.pending_model is None
    # Every pattern re-embedded in fp32, none read from the int8 rows; plus the 2 queries.
    assert fp32.misses == 6 + 2
    assert search_set_model(directory) == fp32.model_version
    # The swap is on disk too: the next open serves fp32 and embeds nothing.
    again = _fp32(directory)
    reopened = PatternSearch.open(directory, again)
    assert reopened.reembedding is None
    assert reopened.vectors.params["model"] == fp32.model_version
    assert (again.hits, again.misses) == (0, 0)


@pytest.mark.timeout(240)
def test_reembed_resumes_after_a_crash_and_folding_keeps_the_sets_backend(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "patterns"
    int8 = _library(directory)

    # "off": answered by the saved int8 vectors, the switch left to reembed_search_set.
    waiting = PatternSearch.open(directory, _fp32(directory), reembed="off")
    assert waiting.search("wait for it", mode="semantic").model == int8.model_version
    assert waiting.pending_model == _fp32(directory).model_version
    assert waiting.reembedding is None

    # A crash after the first batch of two: the set stays int8, the batch stays cached.
    crashing = _fp32(directory, batch_size=2)

    def crash(done: int, total: int) -> None:
        if done >= 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reembed_search_set(directory, crashing, crash)
    assert search_set_model(directory) == int8.model_version

    progress: list[tuple[int, int]] = []
    resumed = _fp32(directory, batch_size=2)
    report = reembed_search_set(directory, resumed, lambda *p: progress.append(p))
    assert (report.source, report.target) == (int8.model_version, resumed.model_version)
    assert (report.cached, report.computed, report.changed) == (2, 4, True)
    assert progress[0] == (2, 6)
    assert progress[-1] == (6, 6)
    assert search_set_model(directory) == resumed.model_version
    assert reembed_search_set(directory, _fp32(directory)).changed is False

    # Back to int8: every int8 vector is still cached. Then a new pattern folds in with
    # the set's backend (int8) although the projection is configured for fp32.
    back = Embedder(cache_dir_for(directory), backend="onnx", precision="int8")
    assert (reembed_search_set(directory, back).computed, back.hits) == (0, 6)
    configured = _fp32(directory)
    projection = PatternsProjection(embedder_factory=lambda _dir: configured)
    store = SnapshotStore(projection, directory)
    state = store.load().state
    state.patterns["tmp"] = PatternDoc(name="temporary directory", code="def test(tmp_path):")
    store.save(Snapshot(state=state, checkpoints={"P": 7}))
    assert search_set_model(directory) == int8.model_version
    assert configured.misses == 0


@pytest.mark.timeout(240)
def test_cli_search_says_which_embedder_answered_and_reembed_switches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from click.testing import CliRunner

    from aqe.app import AppContext
    from aqe.cli._patterns import patterns

    data = tmp_path / "data"
    int8 = _library(data / "projections" / "patterns")
    monkeypatch.setenv("AQE_EMBED", "onnx-fp32")
    fp32 = Embedder(None, backend="onnx", precision="fp32").model_version

    def cli(*args: str) -> tuple[dict[str, object], str]:
        result = CliRunner().invoke(patterns, list(args), obj=AppContext(str(data), None))
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout), result.stderr

    found, note = cli("search", "freeze the clock", "--offline", "--json", "-k", "1")
    assert found["model"] == int8.model_version
    assert f"{fp32} is configured" in " ".join(note.split())
    assert "aqe patterns reembed" in note

    report, _ = cli("reembed", "--json")
    assert report["source"] == int8.model_version
    assert report["target"] == fp32
    assert (report["patterns"], report["computed"], report["changed"]) == (6, 6, True)

    found, note = cli("search", "freeze the clock", "--offline", "--json", "-k", "1")
    assert found["model"] == fp32
    assert note == ""
    assert found["hits"][0]["pattern_id"] == "clock"  # type: ignore[index]
    again, _ = cli("reembed", "--json")
    assert (again["changed"], again["computed"]) == (False, 0)


@pytest.mark.timeout(240)
def test_one_switch_per_process_and_an_exit_stops_it_cleanly(tmp_path: Path) -> None:
    import subprocess
    import sys

    directory = tmp_path / "patterns"
    int8 = _library(directory)
    fp32 = _fp32(directory).model_version

    # A process that starts the switch and exits at once: the switch stops at its next
    # batch, the old set stays whole, and nothing half-built is left beside it.
    child = f"""
from pathlib import Path
from aqe.search.embed import Embedder
from aqe.search.engine import PatternSearch
from aqe.search.projection import cache_dir_for
directory = Path({str(directory)!r})
fp32 = Embedder(cache_dir_for(directory), backend="onnx", precision="fp32", batch_size=1)
searcher = PatternSearch.open(directory, fp32)
assert searcher.reembedding is not None
print(searcher.search("freeze the clock", k=1).model)
"""
    done = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=200, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == int8.model_version
    assert search_set_model(directory) in {int8.model_version, fp32}
    assert [p.name for p in directory.iterdir() if p.name.startswith(".search.new")] == []

    # Two searchers finding the same switch share it; both swap when it is done.
    first = PatternSearch.open(directory, _fp32(directory))
    second = PatternSearch.open(directory, _fp32(directory))
    if first.reembedding is not None:
        assert second.reembedding in (first.reembedding, None)
        assert first.reembedding.wait(200)
        assert first.reembedding.state == "done", first.reembedding.error
    for searcher in (first, second):
        assert searcher.search("nats fixture", k=1).model == fp32
        assert searcher.pending_model is None


@pytest.mark.timeout(240)
def test_an_index_build_interrupted_while_embedding_resumes_from_the_cache(
    tmp_path: Path,
) -> None:
    from aqe.search.projection import search_set_current

    directory = tmp_path / "patterns"
    embedder = Embedder(cache_dir_for(directory), backend="onnx", precision="int8", batch_size=2)

    def crash(done: int, total: int) -> None:
        if done >= 2:
            raise KeyboardInterrupt

    projection = PatternsProjection(embedder_factory=lambda _dir: embedder, on_embed=crash)
    state = LibraryState(patterns={k: msgspec.structs.replace(v) for k, v in PATTERNS.items()})
    with pytest.raises(KeyboardInterrupt):  # the snapshot is saved, then the fold dies
        SnapshotStore(projection, directory).save(Snapshot(state=state, checkpoints={"P": 6}))
    assert not search_set_current(directory, {"P": 6})
    assert search_set_model(directory) is None

    resumed = Embedder(cache_dir_for(directory), backend="onnx", precision="int8")
    report = reembed_search_set(directory, resumed)
    assert (report.source, report.cached, report.computed) == (None, 2, 4)
    assert search_set_current(directory, {"P": 6})
    assert PatternSearch.open(directory, resumed).search("freeze time", k=1).hits[0].pattern_id == (
        "clock"
    )
