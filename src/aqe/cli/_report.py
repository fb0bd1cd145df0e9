"""``aqe report``: the projections as one self-contained HTML file."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from aqe.app import AppContext, open_log, projections_root, run
from aqe.cli._context import console, json_option, pass_app, print_json
from aqe.cli._projections import catch_up
from aqe.cli._tests import parse_since

if TYPE_CHECKING:
    from aqe.log.jetstream import JetStreamEventLog
    from aqe.projections import Projection


@click.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("aqe-report"),
    show_default=True,
    help="Directory to write report.html into (created).",
)
@click.option("--since", help="Only runs started since: 7d, 12h, 30m, 2w or an ISO date.")
@click.option(
    "--heatmap-runs",
    type=click.IntRange(min=1, max=500),
    default=40,
    show_default=True,
    help="Runs (columns) in the failure heatmap.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option
@pass_app
def report(
    app: AppContext,
    out_dir: Path,
    since: str | None,
    heatmap_runs: int,
    quiet: bool,
    as_json: bool,
) -> None:
    """Write an HTML report of the test history, learning and workflows.

    One file (report.html) with interactive Plotly charts, Plotly.js embedded: it opens
    with no network. Runs over time, flakiest and most broken tests with their verdict
    strips, durations and the slowest tests, a failure heatmap (tests x runs),
    quarantine and what it saved, APFD per policy over cycles, workflow outcomes; each
    figure names the events and sequence range it came from. Projections are folded
    up to date first.
    """
    from aqe.learning.experience import ExperienceProjection
    from aqe.projections import HistoryProjection, get_projection
    from aqe.report import gather, write_report

    since_ns = parse_since(since)
    started = time.perf_counter()

    async def go() -> Path:
        async with open_log(app) as log:
            root = projections_root(app)
            projections: list[Projection[Any]] = [HistoryProjection(), ExperienceProjection()]
            for name, stream in (("coverage", "AQE_COVERAGE"), ("perf", "AQE_PERF")):
                if await _has_events(
                    log, stream
                ):  # else their fold would read AQE_TESTS for nothing
                    projections.append(get_projection(name))
            for projection in projections:
                skipped = await catch_up(
                    log, app, projection, quiet=quiet or as_json, materialize=False
                )
                if skipped and not as_json:
                    console(stderr=True).print(
                        f"[dim]{projection.name} not refreshed: {skipped}[/dim]"
                    )
            inputs = await gather(log, root, since_ns=since_ns, heatmap_runs=heatmap_runs)
        return write_report(inputs, out_dir)

    path = run(go())
    elapsed = time.perf_counter() - started
    if as_json:
        print_json({"path": str(path), "bytes": path.stat().st_size, "seconds": round(elapsed, 3)})
        return
    size_mb = path.stat().st_size / 1e6
    console().print(f"wrote {path} ({size_mb:.1f} MB) in {elapsed:.1f} s", markup=False)


async def _has_events(log: JetStreamEventLog, stream: str) -> bool:
    from aqe.errors import AqeError

    try:
        return await log.last_seq(stream) > 0
    except AqeError:  # no such stream on this server
        return False
