"""The projection runtime: resume at checkpoint + 1, fold, park failures, checkpoint.

The runner reads each of a projection's streams from its checkpoint, decodes every
envelope with the registry, folds it with ``apply`` and periodically saves state and
checkpoints together (see :mod:`aqe.projections.store`). An event that cannot be
decoded or applied is parked on the dead-letter subject and the run goes on; when the
dead-letter sink can keep nothing (see :mod:`aqe.projections.deadletter`), the
reference is kept in the snapshot instead, so no message can hold a fold back. Because
state and checkpoints are saved atomically, a run killed at any point resumes
exactly where its last snapshot ends: no event is applied twice or skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Generic

import msgspec

from aqe.errors import EventDecodeError, ProjectionError
from aqe.events import REGISTRY, Envelope, EventRegistry
from aqe.log.port import EventLog
from aqe.projections.base import Projection, S
from aqe.projections.deadletter import DeadLetter, DeadLetterSink
from aqe.projections.store import MAX_UNPARKED, Snapshot, SnapshotStore

__all__ = ["Progress", "ProjectionRunner", "RunStats", "projection_lock"]


class Progress(msgspec.Struct, frozen=True, kw_only=True):
    """Where a run stands, reported every ``progress_every`` events."""

    projection: str
    stream: str
    seq: int
    applied: int
    dead_letters: int


class RunStats(msgspec.Struct, frozen=True, kw_only=True):
    """What one run did."""

    projection: str
    applied: int
    dead_letters: int
    checkpoints: dict[str, int]
    seconds: float
    resumed_from: dict[str, int]
    unparked: int = 0
    """Dead letters of this run that the sink could not keep (kept in the snapshot)."""

    @property
    def rate(self) -> float:
        """Events folded per second in this run."""
        return self.applied / self.seconds if self.seconds > 0 else 0.0


@contextlib.contextmanager
def projection_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on a projection so two runners never write it at once.

    Raises:
        ProjectionError: another process holds the lock.
    """
    directory.parent.mkdir(parents=True, exist_ok=True)
    lock_path = directory.parent / f"{directory.name}.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            raise ProjectionError(
                f"projection {directory.name} is in use by pid {holder}; stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


class ProjectionRunner(Generic[S]):
    """Runs one projection against an EventLog into a SnapshotStore."""

    def __init__(
        self,
        projection: Projection[S],
        log: EventLog,
        store: SnapshotStore[S],
        dead_letters: DeadLetterSink,
        *,
        registry: EventRegistry = REGISTRY,
        flush_every: int = 10_000,
        flush_interval_s: float = 1.0,
        progress_every: int = 5_000,
        on_progress: Callable[[Progress], None] | None = None,
        materialize_interval_s: float = 30.0,
        materialize: bool = True,
    ) -> None:
        self.projection = projection
        self.log = log
        self.store = store
        self.dead_letters = dead_letters
        self.registry = registry
        self.flush_every = flush_every
        self.flush_interval_s = flush_interval_s
        self.progress_every = progress_every
        self.on_progress = on_progress
        self.materialize_interval_s = materialize_interval_s
        self.materialize = materialize
        """False: this run saves snapshots only, never the derived tables (they keep the
        checkpoints they were built at, so readers see them as stale)."""
        self._last_materialized = time.monotonic()
        self._snapshot: Snapshot[S] | None = None

    async def pending(self) -> dict[str, tuple[int, int]]:
        """Per stream: (checkpoint, last sequence in the log)."""
        snap = self.store.load()
        out: dict[str, tuple[int, int]] = {}
        for stream in self.projection.streams:
            out[stream] = (snap.checkpoints.get(stream, 0), await self.log.last_seq(stream))
        return out

    async def run(
        self, *, follow: bool = False, until: Mapping[str, int] | None = None
    ) -> RunStats:
        """Fold every stream from its checkpoint to its end (or ``until``), or forever.

        In follow mode the run ends only when cancelled; it saves a last snapshot
        on the way out. A cancelled run (Ctrl-C, SIGTERM) saves the snapshot and its
        checkpoints but not the derived tables, which can take seconds (LanceDB): they
        keep the checkpoints they were built at, so readers see them stale and rebuild
        them from the state, and the next run writes them.
        """
        started = time.monotonic()
        snap = self.store.load()
        resumed = {s: snap.checkpoints.get(s, 0) for s in self.projection.streams}
        self._state = snap.state
        self._checkpoints = dict(resumed)
        self._applied_total = snap.events_applied
        self._dead_total = snap.dead_letters
        self._unparked: list[DeadLetter] = list(snap.unparked)
        self._unparked_total = snap.unparked_total
        self._unparked_run = 0
        self._applied = 0
        self._dead = 0
        self._since_flush = 0
        self._last_flush = time.monotonic()
        cancelled = False
        try:
            if follow:
                flusher = asyncio.create_task(self._flush_periodically())
                try:
                    await asyncio.gather(
                        *(self._fold(s, True, None) for s in self.projection.streams)
                    )
                finally:
                    flusher.cancel()
            else:
                for stream in self.projection.streams:
                    limit = None if until is None else until.get(stream)
                    await self._fold(stream, False, limit)
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            self._save(final=True, tables=not cancelled)
        return RunStats(
            projection=self.projection.name,
            applied=self._applied,
            dead_letters=self._dead,
            checkpoints=dict(self._checkpoints),
            seconds=time.monotonic() - started,
            resumed_from=resumed,
            unparked=self._unparked_run,
        )

    @property
    def state(self) -> S:
        """The state as of the last event folded."""
        return self._state

    async def _fold(self, stream: str, follow: bool, until: int | None) -> None:
        after = self._checkpoints.get(stream, 0)
        if until is not None and until <= after:
            return
        projection = self.projection
        decode = self.registry.decode
        apply = projection.apply
        async for env in self.log.read(stream, after_seq=after, until_seq=until, follow=follow):
            try:
                event = decode(env.data, subject=env.subject, seq=env.seq)
            except EventDecodeError as exc:
                await self._park(env, str(exc))
            else:
                try:
                    self._state = apply(self._state, env, event)
                except Exception as exc:  # the supervisor: park it and go on
                    await self._park(env, f"apply failed: {type(exc).__name__}: {exc}")
                else:
                    self._applied += 1
            self._checkpoints[stream] = env.seq
            self._since_flush += 1
            if self._since_flush >= self.flush_every or (
                self._since_flush & 1023 == 0
                and time.monotonic() - self._last_flush >= self.flush_interval_s
            ):
                self._save()
            if self.on_progress is not None and env.seq % self.progress_every == 0:
                self._report(stream, env.seq)
        if self.on_progress is not None:
            self._report(stream, self._checkpoints.get(stream, after))

    async def _park(self, env: Envelope, reason: str) -> None:
        letter = await self.dead_letters.park(self.projection.name, env, reason)
        self._dead += 1
        if letter.copy == "none":
            self._unparked_run += 1
            self._unparked_total += 1
            if len(self._unparked) < MAX_UNPARKED:
                self._unparked.append(letter)

    def _report(self, stream: str, seq: int) -> None:
        assert self.on_progress is not None  # noqa: S101 - guarded by callers
        self.on_progress(
            Progress(
                projection=self.projection.name,
                stream=stream,
                seq=seq,
                applied=self._applied,
                dead_letters=self._dead,
            )
        )

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            if self._since_flush:
                self._save()

    def _save(self, *, final: bool = False, tables: bool = True) -> None:
        # Derived tables (``materialize``) can cost far more than the snapshot; they
        # are written at the end of a run and at most every materialize_interval_s
        # in between, never with ``tables=False``. Readers see stale tables as stale
        # and fall back to the state.
        now = time.monotonic()
        materialize = (
            self.materialize
            and tables
            and (final or now - self._last_materialized >= self.materialize_interval_s)
        )
        self.store.save(
            Snapshot(
                state=self._state,
                checkpoints=dict(self._checkpoints),
                events_applied=self._applied_total + self._applied,
                dead_letters=self._dead_total + self._dead,
                unparked=list(self._unparked),
                unparked_total=self._unparked_total,
            ),
            materialize=materialize,
        )
        if materialize:
            self._last_materialized = now
        self._since_flush = 0
        self._last_flush = time.monotonic()
