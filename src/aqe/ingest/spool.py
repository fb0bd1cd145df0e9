"""Spool files: events written to disk when they could not be published yet.

A spool file is JSON lines, one aqe event per line in its wire form
(:meth:`aqe.events.Event.to_json`, the ``event`` type tag included). The pytest plugin
writes every event of a live run to one as it goes, and deletes the file once the
server has acknowledged them all; ``aqe ingest <file>`` appends a file that was left
behind. Event ids are derived from the events' contents, so ingesting a spool whose
events were partly published already stores only the missing ones.

A session that was killed (or crashed) leaves a spool without ``TestRunFinished``, the
run's commit marker, and a run without its marker never shows. :func:`finish_interrupted`
writes the missing marker from what the spool holds: the totals of the executions
recorded before the session stopped, ``interrupted=True``. It is computed from the
file's contents only, so its id is the same on every ingest of the same spool and
ingesting it again stores nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING

from aqe.errors import EventError, ReportError
from aqe.events import REGISTRY, Event, TestCaseExecuted, TestRunFinished, TestRunStarted
from aqe.ingest.files import MAX_REPORT_BYTES, read_report
from aqe.ingest.runs import finished, summarise

if TYPE_CHECKING:
    from aqe.config import Settings

__all__ = [
    "SPOOL_SUFFIX",
    "SpoolWriter",
    "default_spool_dir",
    "finish_interrupted",
    "read_spool",
]

SPOOL_SUFFIX = ".jsonl"
"""File name suffix of the spool files aqe writes."""


def default_spool_dir(settings: Settings) -> Path:
    """Where spool files go unless told otherwise: ``<data_dir>/spool``."""
    return settings.data_dir / "spool"


class SpoolWriter:
    """Appends events to a spool file, one flushed line each.

    The file is opened for appending (parent directories are created), so a writer
    reopened on the same path adds to what is there.
    """

    def __init__(self, path: Path) -> None:
        """Open ``path`` for appending.

        Raises:
            OSError: the file or its directory cannot be created.
        """
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] | None = path.open("ab")
        self.count = 0
        """Events written by this writer."""

    def write(self, event: Event) -> None:
        """Append one event and flush it to the operating system.

        Raises:
            ValueError: the writer is closed.
            OSError: the write failed (disk full, file gone).
        """
        if self._file is None:
            raise ValueError(f"spool {self.path} is closed")
        self._file.write(event.to_json() + b"\n")
        self._file.flush()
        self.count += 1

    def close(self) -> None:
        """Close the file; closing twice is harmless."""
        if self._file is not None:
            self._file.close()
            self._file = None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._file is None

    def __enter__(self) -> SpoolWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_spool(path: Path, *, max_bytes: int = MAX_REPORT_BYTES) -> list[Event]:
    """Every event of a spool file, in file order.

    Blank lines are skipped. Nothing is returned unless every line decodes, so a
    file cut short by a crash (a last line of truncated JSON) is reported, not
    half-read.

    Args:
        path: The spool file.
        max_bytes: The size cap (:func:`aqe.ingest.files.read_report`).

    Returns:
        The events.

    Raises:
        ReportError: the file cannot be read or is larger than ``max_bytes``, or a
            line is not JSON, names an unknown event type or does not match its schema
            (the error gives the line number).
    """
    data = read_report(path, max_bytes, noun="spool file")
    events: list[Event] = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            events.append(REGISTRY.decode(line))
        except EventError as exc:
            raise ReportError(str(path), _reason(exc), line=number) from exc
    return events


def _reason(exc: EventError) -> str:
    # EventDecodeError's own message names a subject and sequence, which a file has not.
    detail = getattr(exc, "detail", None)
    return f"not an aqe event: {detail}" if isinstance(detail, str) else str(exc)


def finish_interrupted(events: Sequence[Event]) -> list[TestRunFinished]:
    """The missing ``TestRunFinished`` of each run in ``events`` that has none.

    A run is any run id with a ``TestRunStarted`` or a ``TestCaseExecuted`` in
    ``events``; one with a ``TestRunFinished`` there is left alone. The marker made for
    the others counts each test by its last attempt (:func:`aqe.ingest.runs.summarise`),
    like a session that ended would have, and is ``interrupted``. Its duration runs
    from the run's start to the end of its last execution when both times are known,
    else it is the sum of the executions' durations.

    Args:
        events: A spool's events, in file order.

    Returns:
        One marker per unfinished run, in the order the runs first appear.
    """
    starts: dict[str, TestRunStarted | None] = {}
    executions: dict[str, list[TestCaseExecuted]] = {}
    finished: set[str] = set()
    for event in events:
        if isinstance(event, TestRunStarted):
            starts[event.run_id] = event
        elif isinstance(event, TestCaseExecuted):
            starts.setdefault(event.run_id, None)
            executions.setdefault(event.run_id, []).append(event)
        elif isinstance(event, TestRunFinished):
            finished.add(event.run_id)
    return [
        _interrupted_finish(run_id, start, executions.get(run_id, []))
        for run_id, start in starts.items()
        if run_id not in finished
    ]


def _interrupted_finish(
    run_id: str, start: TestRunStarted | None, executions: Sequence[TestCaseExecuted]
) -> TestRunFinished:
    summary = summarise(executions)
    last: dict[str, TestCaseExecuted] = {}
    for execution in executions:
        last[execution.test_id] = execution
    quarantined = sum(
        1 for e in last.values() if e.quarantined and e.outcome in ("failed", "error")
    )
    started_at = start.started_at if start is not None else None
    ends = [
        e.started_at + timedelta(seconds=e.duration_s)
        for e in executions
        if e.started_at is not None
    ]
    finished_at: datetime | None
    if started_at is not None and ends:
        finished_at = max(max(ends), started_at)
        duration = (finished_at - started_at).total_seconds()
    else:
        duration = sum(e.duration_s for e in executions)
        finished_at = started_at + timedelta(seconds=duration) if started_at else None
    return finished(
        run_id, summary, duration, finished_at, quarantined=quarantined, interrupted=True
    )
