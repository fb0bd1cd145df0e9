"""Rebuild a projection from the log, and verify a live one against a rebuild.

``rebuild`` folds from sequence 1 into a fresh directory beside the live one and
swaps it in only when the fold finished, so readers never see a half-built
projection. ``verify`` folds aside up to the live checkpoints and compares the two
states byte for byte, listing the differences.
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

__all__ = ["VerifyReport", "diff_states", "rebuild", "verify"]


class VerifyReport(msgspec.Struct, Generic[S], frozen=True, kw_only=True):
    """Live projection vs a rebuild up to the same checkpoints."""

    projection: str
    checkpoints: dict[str, int]
    equal: bool
    differences: list[str]
    live_bytes: int
    rebuilt_bytes: int


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
    """Rebuild aside up to the live checkpoints and compare the states.

    Dead letters met on the way are not parked again (the live run parked them).

    Raises:
        ProjectionError: there is no live projection to compare with.
    """
    live_store = SnapshotStore(projection, root / projection.name)
    if not live_store.exists():
        raise ProjectionError(f"projection {projection.name} has no live state; run it first")
    live = live_store.load()
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
        until = {s: live.checkpoints.get(s, 0) for s in projection.streams}
        await runner.run(until=until)
        rebuilt_state = runner.state
    live_bytes = projection.encode(live.state)
    rebuilt_bytes = projection.encode(rebuilt_state)
    differences: list[str] = []
    if live_bytes != rebuilt_bytes:
        differences = diff_states(
            msgspec.json.decode(live_bytes), msgspec.json.decode(rebuilt_bytes)
        )
        if not differences:  # same values, different bytes: still a failure to report
            differences = ["encodings differ although the values are equal"]
    return VerifyReport(
        projection=projection.name,
        checkpoints=until,
        equal=live_bytes == rebuilt_bytes,
        differences=differences,
        live_bytes=len(live_bytes),
        rebuilt_bytes=len(rebuilt_bytes),
    )


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
