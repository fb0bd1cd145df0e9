"""Gathering what the report shows (projection snapshots plus a few log reads) and writing it.

The history and experience views read the projections' snapshots (the caller folds
them up to date first, as every question command does); the heatmap and the
quarantine savings read the newest runs' events and every run marker from
``AQE_TESTS``; workflow instances are folded from ``AQE_WORKFLOWS``. The coverage
and perf sections come from those projections' snapshots when they exist. Other
capabilities can add sections: a module in :data:`OPTIONAL_SECTIONS` that can be
imported and offers ``report_sections(projections_root) -> list[Section]``.
"""

from __future__ import annotations

import datetime as dt
import importlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from aqe.events import TestCaseExecuted, TestRunFinished
from aqe.report.fleet_views import learning_section, workflows_section
from aqe.report.html import render_html
from aqe.report.model import Section
from aqe.report.tests_views import RunWindow, fold_window, history_sections, window_runs

if TYPE_CHECKING:
    from aqe.log.port import EventLog
    from aqe.projections.history import HistoryState

__all__ = [
    "OPTIONAL_SECTIONS",
    "ReportInputs",
    "build_sections",
    "gather",
    "read_window",
    "write_report",
]

OPTIONAL_SECTIONS: tuple[str, ...] = ()
"""Modules asked for ``report_sections(projections_root)`` when they can be imported."""

HEATMAP_RUNS = 40
"""Runs (columns) in the failure heatmap."""

_EXECUTED_SUBJECTS = "aqe.tests.case.*.executed"
_FINISHED_SUBJECTS = "aqe.tests.run.*.finished"


class ReportInputs(msgspec.Struct, kw_only=True):
    """Everything one report is computed from."""

    history: Any
    """The history projection's :class:`~aqe.projections.history.HistoryState`."""
    history_seq: int
    window: RunWindow | None = None
    experience: Any = None
    """The experience projection's state, None when it has never been folded."""
    experience_seq: int = 0
    workflows: dict[str, Any] = msgspec.field(default_factory=dict)
    workflows_seqs: tuple[int, int] = (0, 0)
    coverage: Any = None
    """The coverage projection's state, None when it has never been folded."""
    coverage_seqs: dict[str, int] = msgspec.field(default_factory=dict)
    perf: Any = None
    """The perf projection's state, None when it has never been folded."""
    perf_seq: int = 0
    extra: list[Section] = msgspec.field(default_factory=list)
    since_ns: int | None = None


async def read_window(
    log: EventLog, state: HistoryState, *, runs: int, since_ns: int | None
) -> RunWindow:
    """Fold the newest ``runs`` runs' executions and every run marker from ``AQE_TESTS``."""
    chosen = window_runs(state, runs, since_ns)
    run_ids = [r.run_id for r in chosen]
    executed: list[tuple[int, TestCaseExecuted]] = []
    if chosen:
        start = min(r.first_seq for r in chosen)
        async for env in log.read(
            "AQE_TESTS", after_seq=max(0, start - 1), subjects=_EXECUTED_SUBJECTS
        ):
            event = _decoded(env)
            if isinstance(event, TestCaseExecuted):
                executed.append((env.seq, event))
    finished: list[tuple[int, TestRunFinished]] = []
    async for env in log.read("AQE_TESTS", subjects=_FINISHED_SUBJECTS):
        event = _decoded(env)
        if isinstance(event, TestRunFinished):
            finished.append((env.seq, event))
    return fold_window(run_ids, executed, finished)


def _decoded(env: Any) -> Any:
    from aqe.errors import EventDecodeError

    try:
        return env.decode()
    except EventDecodeError:
        return None  # parked by the projections' runner; the report shows what decodes


async def gather(
    log: EventLog,
    projections_root: Path,
    *,
    since_ns: int | None = None,
    heatmap_runs: int = HEATMAP_RUNS,
) -> ReportInputs:
    """Load the projections' snapshots and read what the heatmap and workflows need."""
    from aqe.projections import HistoryProjection, SnapshotStore, get_projection
    from aqe.workflows._store import read_instances

    snap = SnapshotStore(HistoryProjection(), projections_root / "history").load()
    history_seq = snap.checkpoints.get("AQE_TESTS", 0)
    inputs = ReportInputs(history=snap.state, history_seq=history_seq, since_ns=since_ns)
    inputs.window = await read_window(log, snap.state, runs=heatmap_runs, since_ns=since_ns)
    if (projections_root / "experience").exists():
        from aqe.learning.experience import ExperienceProjection

        exp = SnapshotStore(ExperienceProjection(), projections_root / "experience").load()
        inputs.experience = exp.state
        inputs.experience_seq = exp.checkpoints.get("AQE_LEARNING", 0)
    for name in ("coverage", "perf"):
        if (projections_root / name).exists():
            snap_ = SnapshotStore(get_projection(name), projections_root / name).load()
            if name == "coverage":
                inputs.coverage, inputs.coverage_seqs = snap_.state, dict(snap_.checkpoints)
            else:
                inputs.perf, inputs.perf_seq = snap_.state, snap_.checkpoints.get("AQE_PERF", 0)
    inputs.workflows = await read_instances(log)
    if inputs.workflows:
        seqs = [i.last_seq for i in inputs.workflows.values()]
        inputs.workflows_seqs = (1, max(seqs))
    inputs.extra = optional_sections(projections_root)
    return inputs


def optional_sections(projections_root: Path) -> list[Section]:
    """Sections of the capabilities that offer them (see :data:`OPTIONAL_SECTIONS`)."""
    out: list[Section] = []
    for name in OPTIONAL_SECTIONS:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        make = getattr(module, "report_sections", None)
        if callable(make):
            out.extend(make(projections_root))
    return out


def build_sections(inputs: ReportInputs) -> list[Section]:
    """Every section, in report order, from the gathered inputs."""
    sections = history_sections(
        inputs.history, inputs.history_seq, inputs.window, since_ns=inputs.since_ns
    )
    if inputs.experience is not None:
        learning = learning_section(inputs.experience, inputs.experience_seq)
        if learning is not None:
            sections.append(learning)
    flows = workflows_section(inputs.workflows, *inputs.workflows_seqs)
    if flows is not None:
        sections.append(flows)
    if inputs.coverage is not None:
        from aqe.report.quality_views import coverage_section

        covered = coverage_section(inputs.coverage, inputs.coverage_seqs)
        if covered is not None:
            sections.append(covered)
    if inputs.perf is not None:
        from aqe.report.quality_views import perf_section

        perf = perf_section(inputs.perf, inputs.perf_seq)
        if perf is not None:
            sections.append(perf)
    sections.extend(inputs.extra)
    return sections


def write_report(
    inputs: ReportInputs, out_dir: Path, *, name: str = "report.html", now: float | None = None
) -> Path:
    """Render the report into ``out_dir/name`` (written aside, then renamed) and return its path."""
    sections = build_sections(inputs)
    stamp = dt.datetime.fromtimestamp(time.time() if now is None else now, tz=dt.UTC)
    runs = len(inputs.history.runs)
    subtitle = (
        f"{len(inputs.history.tests):,} tests, {runs:,} runs · AQE_TESTS up to seq "
        f"{inputs.history_seq:,} · generated {stamp:%Y-%m-%d %H:%M} UTC"
    )
    document = render_html("aqe report", subtitle, sections)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(document, encoding="utf-8")
    tmp.replace(path)
    return path
