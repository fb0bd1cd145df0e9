"""The composition root both faces share: the ``aqe`` CLI and the MCP server.

:class:`AppContext` holds one invocation's settings; :func:`open_log` connects to the
log (starting the embedded server if needed); :func:`projections_root` is where the
projection folders live and :func:`catch_up` folds into one what the log has that it
lacks; :func:`workflow_registry` names every workflow aqe ships. The CLI
(:mod:`aqe.cli`) and the MCP server (:mod:`aqe.mcp_server`) build on this module and
on :mod:`aqe.queries`; neither imports the other. Nothing here imports click, so the
faces decide how progress and errors look.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from aqe.config import Discovered, Settings
    from aqe.log.jetstream import JetStreamEventLog
    from aqe.projections import Progress, Projection
    from aqe.workflows.engine import Workflow

__all__ = [
    "AppContext",
    "ProgressBar",
    "catch_up",
    "caught_up_state",
    "fold_progress",
    "open_log",
    "pending_events",
    "projections_root",
    "run",
    "workflow_registry",
]

T = TypeVar("T")
S = TypeVar("S")

ProgressBar = Callable[[int, str], contextlib.AbstractContextManager[Callable[[int], None]]]
"""``bar(total, label)``: a context that yields ``set_completed(n)`` (a face's progress bar)."""


class AppContext:
    """Built once per invocation from the root options."""

    def __init__(self, data_dir: str | None, nats_url: str | None) -> None:
        self._data_dir = data_dir
        self._nats_url = nats_url
        self._discovered: Discovered | None = None

    @property
    def discovered(self) -> Discovered:
        """Settings from the project's file, the environment and the options, by origin."""
        if self._discovered is None:
            from aqe.config import discover

            self._discovered = discover(
                option_names={"data_dir": "--data-dir", "nats_url": "--nats-url"},
                data_dir=Path(self._data_dir) if self._data_dir else None,
                nats_url=self._nats_url,
            )
        return self._discovered

    @property
    def settings(self) -> Settings:
        """The settings in force (see :func:`aqe.config.discover` for the order)."""
        return self.discovered.settings


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine to completion."""
    return asyncio.run(coro)


@contextlib.asynccontextmanager
async def open_log(
    app: AppContext, *, ensure_streams: bool = True
) -> AsyncIterator[JetStreamEventLog]:
    """Connect (starting the embedded server if needed) and create missing streams.

    Missing streams are created from ``streams/*.json`` so a first command on a fresh
    machine just works; changing an existing stream is left to ``aqe streams apply``.
    That check rides out a leader election (a killed node of a cluster): it is retried
    while the log is unavailable, for :data:`~aqe.log.retry.DEFAULT_UNAVAILABLE_S`.
    """
    from aqe.log.admin import create_missing_streams
    from aqe.log.jetstream import JetStreamEventLog
    from aqe.log.retry import while_unavailable

    log = await JetStreamEventLog.connect(app.settings)
    try:
        if ensure_streams:
            await while_unavailable(lambda: create_missing_streams(log.connection, log.specs))
        yield log
    finally:
        await log.close()


def projections_root(app: AppContext) -> Path:
    """Where projection directories live: ``<data dir>/projections``."""
    return app.settings.data_dir / "projections"


def fold_progress(
    set_completed: Callable[[int], None], start: dict[str, int]
) -> Callable[[Progress], None]:
    """Turn runner progress (stream, seq) into events done since ``start``."""
    done: dict[str, int] = {}

    def update(p: Progress) -> None:
        done[p.stream] = p.seq - start.get(p.stream, 0)
        set_completed(sum(done.values()))

    return update


async def pending_events(
    log: JetStreamEventLog, projection: Projection[Any], root: Path
) -> tuple[int, dict[str, int]]:
    """(events not yet folded, the checkpoints they start after)."""
    from aqe.projections import SnapshotStore

    snap = SnapshotStore(projection, root / projection.name).load()
    start = {s: snap.checkpoints.get(s, 0) for s in projection.streams}
    total = 0
    for stream in projection.streams:
        total += max(0, await log.last_seq(stream) - start[stream])
    return total, start


@contextlib.contextmanager
def _no_bar(_total: int, _label: str) -> Iterator[Callable[[int], None]]:
    yield lambda _n: None


async def catch_up(
    log: JetStreamEventLog,
    app: AppContext,
    projection: Projection[Any],
    *,
    bar: ProgressBar | None = None,
    materialize: bool = True,
) -> str | None:
    """Fold what the log has that ``projection`` lacks; None, or why it was skipped.

    ``materialize=False`` saves the snapshot only, not the projection's derived tables;
    ``bar`` shows the fold's progress (none by default).

    Skipped (not an error) when another process holds the projection, e.g. an
    ``aqe consume NAME --follow`` that keeps it current anyway. A fold cut by a leader
    election is run again from the checkpoint it saved, while the log is unavailable.
    """
    from aqe.errors import ProjectionError
    from aqe.log.retry import while_unavailable
    from aqe.projections import ProjectionRunner, SnapshotStore, projection_lock
    from aqe.projections.deadletter import JetStreamDeadLetters

    root = projections_root(app)
    total, start = await while_unavailable(lambda: pending_events(log, projection, root))
    if total == 0:
        return None
    try:
        with (
            projection_lock(root / projection.name),
            (bar or _no_bar)(total, f"fold {projection.name}") as set_done,
        ):
            runner = ProjectionRunner(
                projection,
                log,
                SnapshotStore(projection, root / projection.name),
                JetStreamDeadLetters(log.connection),
                on_progress=fold_progress(set_done, start),
                progress_every=1000,
                materialize=materialize,
            )
            await while_unavailable(runner.run)  # each run resumes at the checkpoint
    except ProjectionError as exc:
        return str(exc)
    return None


async def caught_up_state(log: JetStreamEventLog, app: AppContext, projection: Projection[S]) -> S:
    """``projection``'s state, resumed from its stored checkpoint and caught up.

    Only what the log added since the last save is read (not the streams from sequence
    1), and the snapshot is saved again, so the next call, in this process or the next,
    starts there too: ``aqe perf watch`` reads its state this way every round. When
    another process holds the projection (``aqe consume NAME --follow``, which keeps it
    current), its last saved snapshot is returned as it stands.
    """
    from aqe.errors import ProjectionError
    from aqe.log.retry import while_unavailable
    from aqe.projections import ProjectionRunner, SnapshotStore, projection_lock
    from aqe.projections.deadletter import JetStreamDeadLetters

    directory = projections_root(app) / projection.name
    store = SnapshotStore(projection, directory)
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(projection_lock(directory))
        except ProjectionError:
            return store.load().state
        runner = ProjectionRunner(
            projection, log, store, JetStreamDeadLetters(log.connection), materialize=False
        )
        await while_unavailable(runner.run)  # each run resumes at the checkpoint
        return runner.state


def workflow_registry() -> dict[str, Workflow[Any]]:
    """Every workflow aqe ships, by name (the composition root names them)."""
    from aqe.workflows.flaky import FlakyWorkflow
    from aqe.workflows.perf import PerfConfirmWorkflow
    from aqe.workflows.rerun import RerunWorkflow
    from aqe.workflows.testgen import TestgenWorkflow

    found: list[Workflow[Any]] = [RerunWorkflow(), FlakyWorkflow(), TestgenWorkflow()]
    found.append(PerfConfirmWorkflow())
    return {w.name: w for w in found}
