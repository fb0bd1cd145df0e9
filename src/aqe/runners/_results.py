"""A run's artefacts become test-run events through the same path as ``aqe ingest``.

Each artefact that is a report (JUnit XML, CTRF, pytest-json: told from its content by
:func:`aqe.ingest.parsers.detect_format`) is parsed by :func:`aqe.ingest.parsers.parse_report`
and the reports become one run with :func:`aqe.ingest.runs.run_events`, appended by
:func:`aqe.ingest.runs.append_run` (atomic batches, the run's marker last). Artefacts that
are no report (benchmark JSON) are left to their own consumers, except coverage.py JSON
reports (``coverage json --show-contexts``): they become the run's coverage chunks
(:mod:`aqe.coverage`), appended after the run, counted once its marker is in.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import msgspec

from aqe.errors import ReportError
from aqe.events import TestCaseExecuted
from aqe.ingest.parsers import detect_format, parse_report
from aqe.ingest.runs import RunSummary, append_run, run_events, summarise
from aqe.log.port import EventLog

__all__ = ["Tested", "ingest_artefacts"]

_REPORT_SUFFIXES = (".xml", ".json")


class Tested(msgspec.Struct, frozen=True, kw_only=True):
    """The run appended from a task's reports: totals and each test's final outcome."""

    run_id: str
    summary: RunSummary
    outcomes: dict[str, str]
    """Test (pytest node id where known, else test id) -> outcome of its last attempt."""


async def ingest_artefacts(
    log: EventLog,
    artefacts: Mapping[str, bytes],
    *,
    run_id: str,
    commit: str | None = None,
    branch: str | None = None,
) -> Tested | None:
    """Append the reports among ``artefacts`` as run ``run_id``; None when there are none.

    Raises:
        ReportError: a file that is a report by its content could not be parsed.
    """
    reports = []
    covered = _coverage_reports(artefacts)
    with tempfile.TemporaryDirectory(prefix="aqe-runner-") as tmp:
        root = Path(tmp)
        for name in sorted(artefacts):
            if not name.endswith(_REPORT_SUFFIXES):
                continue
            # Artefact names are relative paths from the sandbox: keep only their parts
            # that stay inside the temporary folder.
            parts = [p for p in PurePosixPath(name).parts if p not in ("", ".", "..", "/")]
            if not parts:
                continue
            path = root.joinpath(*parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(artefacts[name])
            if name in covered:
                continue
            try:
                fmt = detect_format(path)
            except ReportError:
                continue  # not a report
            report = parse_report(path, fmt)
            reports.append(msgspec.structs.replace(report, path=name))
    if not reports:
        return None
    events = run_events(reports, run_id=run_id, commit=commit, branch=branch)
    await append_run(log, events)
    if covered:
        await _append_coverage(log, list(covered.values()), run_id=run_id, commit=commit)
    outcomes: dict[str, str] = {}
    for event in events:
        if isinstance(event, TestCaseExecuted):
            outcomes[event.nodeid or event.test_id] = event.outcome
    return Tested(run_id=run_id, summary=summarise(events), outcomes=outcomes)


def _coverage_reports(artefacts: Mapping[str, bytes]) -> dict[str, dict[str, Any]]:
    """The artefacts that are coverage.py JSON reports (``coverage json --show-contexts``)."""
    from aqe.coverage.collect import looks_like_coverage_json

    found: dict[str, dict[str, Any]] = {}
    for name in sorted(artefacts):
        if not name.endswith(".json"):
            continue
        try:
            doc = json.loads(artefacts[name])
        except (ValueError, RecursionError):
            continue
        if isinstance(doc, dict) and looks_like_coverage_json(doc):
            found[name] = doc
    return found


async def _append_coverage(
    log: EventLog, docs: list[dict[str, Any]], *, run_id: str, commit: str | None
) -> None:
    """The run's coverage as chunks; shown once the run's marker (appended first) is in."""
    from aqe.coverage.collect import measured_from_json
    from aqe.coverage.measured import MeasuredFile, coverage_events
    from aqe.log.port import NewEvent

    merged: dict[str, MeasuredFile] = {}
    for doc in docs:
        for item in measured_from_json(doc):
            if item.path in merged:
                merged[item.path].merge(item)
            else:
                merged[item.path] = item
    chunks = coverage_events(list(merged.values()), run_id=run_id, commit=commit)
    await log.append_many([NewEvent(event=e) for e in chunks])
