"""Rebuild a projection from the log, and verify a live one against a rebuild.

``rebuild`` folds from sequence 1 into a fresh directory beside the live one and
swaps it in only when the fold finished, so readers never see a half-built
projection. ``verify`` compares a live projection with the log: a checkpoint behind
its stream's end is reported as lag (not equal), and the state is compared byte for
byte with a fold aside up to the live checkpoints, listing the differences, so a
lagging projection is still checked for what it did fold.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Generic

import msgspec

from aqe.errors import ProjectionError
from aqe.log.port import EventLog
from aqe.projections.base import Projection, S
from aqe.projections.deadletter import DeadLetterSink, MemoryDeadLetters
from aqe.projections.runner import Progress, ProjectionRunner, RunStats, projection_lock
from aqe.projections.store import SnapshotStore
from aqe.projections.tables import swap_in

__all__ = ["VerifyReport", "diff_states", "rebuild", "sequence_at", "verify"]


class VerifyReport(msgspec.Struct, Generic[S], frozen=True, kw_only=True):
    """Live projection vs a rebuild from the log.

    ``equal`` only when the live state equals a rebuild up to the live checkpoints
    *and* those checkpoints are the streams' ends: a projection that has not folded
    everything the log holds does not answer what the log says.
    """

    projection: str
    checkpoints: dict[str, int]
    """The live projection's checkpoints."""
    equal: bool
    differences: list[str]
    live_bytes: int
    rebuilt_bytes: int
    stream_ends: dict[str, int] = msgspec.field(default_factory=dict)
    """Each stream's last sequence when the verify began."""
    lag: int = 0
    """Events in the streams that the live projection has not folded."""


async def rebuild(
    projection: Projection[S],
    log: EventLog,
    root: Path,
    dead_letters: DeadLetterSink,
    *,
    until: Mapping[str, int] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> RunStats:
    """Fold from the start into a fresh directory, then swap it in for the live one."""
    live = root / projection.name
    with projection_lock(live):
        root.mkdir(parents=True, exist_ok=True)
        fresh = Path(tempfile.mkdtemp(prefix=f".{projection.name}.rebuild-", dir=root))
        try:
            runner = ProjectionRunner(
                projection,
                log,
                SnapshotStore(projection, fresh),
                dead_letters,
                flush_every=1 << 62,
                flush_interval_s=float("inf"),
                on_progress=on_progress,
            )
            stats = await runner.run(until=until)
        except BaseException:
            shutil.rmtree(fresh, ignore_errors=True)
            raise
        swap_in(fresh, live)
        return stats


async def verify(
    projection: Projection[S],
    log: EventLog,
    root: Path,
    *,
    on_progress: Callable[[Progress], None] | None = None,
) -> VerifyReport[S]:
    """Compare the live projection with a rebuild aside and with the streams' ends.

    The rebuild folds up to the live checkpoints and the states are compared there;
    events past the checkpoints (the streams' ends are read first) are reported as
    lag, a difference of their own: a lagging projection is never "equal".
    Dead letters met on the way are not parked again (the live run parked them).

    Raises:
        ProjectionError: there is no live projection to compare with.
    """
    live_store = SnapshotStore(projection, root / projection.name)
    if not live_store.exists():
        raise ProjectionError(f"projection {projection.name} has no live state; run it first")
    live = live_store.load()
    checkpoints = {s: live.checkpoints.get(s, 0) for s in projection.streams}
    ends = {s: await log.last_seq(s) for s in projection.streams}
    with tempfile.TemporaryDirectory(prefix=f".{projection.name}.verify-", dir=root) as tmp:
        runner = ProjectionRunner(
            projection,
            log,
            SnapshotStore(projection, Path(tmp)),
            MemoryDeadLetters(),
            flush_every=1 << 62,
            flush_interval_s=float("inf"),
            on_progress=on_progress,
        )
        await runner.run(until={s: min(checkpoints[s], ends[s]) for s in projection.streams})
        rebuilt_bytes = projection.encode(runner.state)
    live_bytes = projection.encode(live.state)
    differences = _lag_lines(projection.name, checkpoints, ends)
    if live_bytes != rebuilt_bytes:
        found = diff_states(msgspec.json.decode(live_bytes), msgspec.json.decode(rebuilt_bytes))
        # Same values in different bytes are still a failure to report.
        differences += found or ["encodings differ although the values are equal"]
    return VerifyReport(
        projection=projection.name,
        checkpoints=checkpoints,
        equal=not differences,
        differences=differences,
        live_bytes=len(live_bytes),
        rebuilt_bytes=len(rebuilt_bytes),
        stream_ends=ends,
        lag=sum(max(0, ends[s] - checkpoints[s]) for s in projection.streams),
    )


async def sequence_at(log: EventLog, stream: str, time_ns: int) -> int:
    """The last sequence of ``stream`` stored at or before ``time_ns`` (0: none).

    Store times grow with sequences, so this is a binary search; each probe reads the
    first message at or after a sequence, which steps over deleted ones.
    """
    lo, hi, found = 1, await log.last_seq(stream), 0
    while lo <= hi:
        mid = (lo + hi) // 2
        it = log.read(stream, after_seq=mid - 1, until_seq=hi)
        try:
            first = await anext(it, None)
        finally:
            close = getattr(it, "aclose", None)  # end the read (unsubscribe) now
            if close is not None:
                await close()
        if first is None:
            hi = mid - 1
        elif first.recorded_at_ns <= time_ns:
            found, lo = first.seq, first.seq + 1
        else:
            hi = mid - 1
    return found


def _lag_lines(name: str, checkpoints: Mapping[str, int], ends: Mapping[str, int]) -> list[str]:
    """One line per stream whose live checkpoint is not the stream's end."""
    out = []
    for stream, end in ends.items():
        at = checkpoints[stream]
        if at < end:
            out.append(
                f"{stream}: live checkpoint {at} lags the stream's end {end} by "
                f"{end - at} events (run `aqe consume {name}`)"
            )
        elif at > end:
            out.append(
                f"{stream}: live checkpoint {at} is past the stream's end {end} "
                f"(the stream lost messages; run `aqe replay {name}`)"
            )
    return out


def diff_states(live: Any, rebuilt: Any, path: str = "$", limit: int = 50) -> list[str]:
    """Paths where two JSON-like values differ, as ``path: live=… rebuilt=…`` lines."""
    out: list[str] = []

    def walk(a: Any, b: Any, where: str) -> None:
        if len(out) >= limit:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b), key=str):
                if key not in a:
                    out.append(f"{where}.{key}: missing in live, rebuilt={_short(b[key])}")
                elif key not in b:
                    out.append(f"{where}.{key}: live={_short(a[key])}, missing in rebuilt")
                else:
                    walk(a[key], b[key], f"{where}.{key}")
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                walk(x, y, f"{where}[{i}]")
        elif a != b:
            out.append(f"{where}: live={_short(a)}, rebuilt={_short(b)}")

    walk(live, rebuilt, path)
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
