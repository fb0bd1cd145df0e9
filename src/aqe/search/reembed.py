"""Switching the pattern library's embedder: re-embed, then swap the search set in.

Vectors of two embedders (backend and precision) never meet: a search set holds one
embedder's vectors (``search/embedder.json``) and is queried only with that embedder.
Switching means re-embedding every pattern with the new one and building a new search
set beside the old, renamed over it when complete (:func:`reembed_search_set`).

Every vector goes through the embedder's persistent cache, which commits batch by
batch: an interrupted switch resumes where it stopped, and switching back to an
embedder used before computes nothing.

:func:`start_background` runs a switch in a daemon thread while the old set keeps
answering. One switch per search set and target runs in a process: a second searcher
that finds the same switch attaches to it (the MCP server opens a searcher per call).
At interpreter exit a running switch is cancelled at its next batch (finished batches
stay cached, no half-built set is left behind), so a short-lived command that started
one exits promptly.
"""

from __future__ import annotations

import atexit
import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from aqe.errors import ProjectionError
from aqe.search.projection import (
    SEARCH_DIR,
    LibraryState,
    PatternsProjection,
    active_ids,
    build_search_set,
    search_set_current,
    search_set_model,
)

if TYPE_CHECKING:
    from aqe.search.embed import Embedder
    from aqe.search.vector import VectorIndex

__all__ = [
    "ReembedMode",
    "ReembedReport",
    "ReembedStatus",
    "load_library",
    "reembed_search_set",
    "start_background",
]

ReembedMode = Literal["background", "foreground", "off"]
"""What a searcher does when the configured embedder is not the search set's."""

_EXIT_WAIT_S = 30.0  # at exit: how long to wait for a switch to stop at its next batch


class _CancelledError(Exception):
    """Raised from the progress callback to stop a background switch at exit."""


@dataclasses.dataclass
class ReembedStatus:
    """A background switch: from which embedder to which, how far."""

    source: str
    target: str
    done: int = 0
    total: int = 0
    state: Literal["running", "done", "failed", "cancelled"] = "running"
    error: str | None = None
    finished: threading.Event = dataclasses.field(default_factory=threading.Event, repr=False)
    _cancel: threading.Event = dataclasses.field(default_factory=threading.Event, repr=False)
    _listeners: list[Callable[[Embedder, VectorIndex], None]] = dataclasses.field(
        default_factory=list, repr=False
    )

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the switch ended (done, failed or cancelled); ``False`` on timeout."""
        return self.finished.wait(timeout)


class ReembedReport(msgspec.Struct, frozen=True, kw_only=True):
    """What :func:`reembed_search_set` did."""

    source: str | None
    """The embedder model version of the set it replaced (``None``: there was none)."""
    target: str
    patterns: int
    computed: int
    """Vectors the model computed (the rest came from the cache)."""
    cached: int
    seconds: float
    changed: bool
    """Whether a set was built (``False``: it already held ``target``'s vectors, current)."""


def load_library(directory: Path) -> Any:
    """The patterns projection's snapshot in ``directory``.

    Raises:
        ProjectionError: the projection was never run.
    """
    from aqe.projections.store import SnapshotStore

    store = SnapshotStore[LibraryState](PatternsProjection(), directory)
    if not store.exists():
        raise ProjectionError(
            f"no pattern library at {directory}; run `aqe patterns import` or "
            "`aqe consume patterns` first"
        )
    return store.load()


def reembed_search_set(
    directory: Path,
    embedder: Embedder,
    on_progress: Callable[[int, int], None] | None = None,
) -> ReembedReport:
    """Re-embed the library in ``directory`` with ``embedder`` and swap its search set in.

    The new search set (vectors, keyword index, Lance table) is built aside and
    renamed over the old one, so a reader sees one embedder's set or the other's,
    never a mix. ``on_progress(done, total)`` follows the embedding; an exception it
    raises stops the switch with the old set in place.

    Raises:
        ProjectionError: the projection was never run.
    """
    snapshot = load_library(directory)
    checkpoints = dict(sorted(snapshot.checkpoints.items()))
    source = search_set_model(directory)
    total = len(active_ids(snapshot.state))
    hits, misses = embedder.hits, embedder.misses
    started = time.perf_counter()
    changed = source != embedder.model_version or not search_set_current(directory, checkpoints)
    if changed:

        def progress(done: int) -> None:
            if on_progress is not None:
                on_progress(done, total)

        build_search_set(snapshot.state, directory, checkpoints, embedder, progress)
    return ReembedReport(
        source=source,
        target=embedder.model_version,
        patterns=total,
        computed=embedder.misses - misses,
        cached=embedder.hits - hits,
        seconds=time.perf_counter() - started,
        changed=changed,
    )


_lock = threading.Lock()
_running: dict[tuple[str, str], tuple[ReembedStatus, threading.Thread]] = {}


def start_background(
    directory: Path,
    source: str,
    target: Embedder,
    total: int,
    on_swap: Callable[[Embedder, VectorIndex], None],
) -> ReembedStatus:
    """Switch ``directory``'s search set to ``target`` in a daemon thread.

    ``on_swap(target, vectors)`` is called with the new set's vector index once it is
    in place (for every caller attached to the same switch). If this process already
    runs the same switch, the caller is attached to it and its status returned.
    """
    key = (str(directory.resolve()), target.model_version)
    with _lock:
        running = _running.get(key)
        if running is not None and not running[0].finished.is_set():
            running[0]._listeners.append(on_swap)
            return running[0]
        status = ReembedStatus(source=source, target=target.model_version, total=total)
        status._listeners.append(on_swap)
        thread = threading.Thread(
            target=_work, args=(directory, target, status), name="aqe-reembed", daemon=True
        )
        _running[key] = (status, thread)
        thread.start()
    return status


def _work(directory: Path, target: Embedder, status: ReembedStatus) -> None:
    from aqe.search.vector import VectorIndex

    def progress(done: int, total: int) -> None:
        if status._cancel.is_set():
            raise _CancelledError
        status.done, status.total = done, total

    try:
        reembed_search_set(directory, target, progress)
        vectors = VectorIndex.load(directory / SEARCH_DIR / "vectors")
        if vectors.params.get("model") != target.model_version:  # pragma: no cover - a race
            raise ProjectionError(f"the rebuilt set holds {vectors.params.get('model')}")
        with _lock:
            listeners = list(status._listeners)
        for swap in listeners:
            swap(target, vectors)
        status.state = "done"
    except _CancelledError:
        status.state = "cancelled"
    except Exception as exc:  # reported in the status; the old set keeps serving
        status.error = f"{type(exc).__name__}: {exc}"
        status.state = "failed"
    finally:
        status.finished.set()


@atexit.register
def _cancel_at_exit() -> None:
    with _lock:
        running = list(_running.values())
    for status, _ in running:
        status._cancel.set()
    deadline = time.monotonic() + _EXIT_WAIT_S
    for _, thread in running:
        thread.join(max(0.0, deadline - time.monotonic()))
