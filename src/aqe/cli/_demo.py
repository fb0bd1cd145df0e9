"""``aqe demo``: the main job end to end on the embedded (or configured) server."""

from __future__ import annotations

import time
from typing import Any

import click

from aqe.app import AppContext, fold_progress, open_log, pending_events, projections_root, run
from aqe.cli._context import console, pass_app
from aqe.cli._projections import progress_bar
from aqe.cli._table import Cell, emit_table


@click.command()
@click.option(
    "--runs",
    default=30,
    show_default=True,
    type=click.IntRange(min=1, max=10_000),
    help="CI runs to simulate.",
)
@click.option(
    "--seed",
    default=7,
    show_default=True,
    help="Simulation seed (same seed, same events, same ids: a second demo stores nothing new).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@pass_app
def demo(app: AppContext, runs: int, seed: int, quiet: bool) -> None:
    """Publish a realistic fleet's events, ingest its CI reports, show what aqe knows.

    Simulates agents registering and heartbeating and a pattern library being seeded,
    then RUNS CI runs of a suite with flaky and broken tests, each written as the
    Surefire-style JUnit XML report a CI job would upload and ingested like `aqe ingest`
    does (one run, atomic batches). Folds the catalog and test-history projections,
    checks both against a rebuild from the log, and prints the catalog and the flaky
    and broken tests.
    """
    from aqe.cli._render import render_catalog
    from aqe.cli._tests import render_status_table
    from aqe.demo import FleetPlan, junit_report, simulate_fleet
    from aqe.events import TestRunStarted
    from aqe.ingest.parsers import parse_report
    from aqe.ingest.runs import append_run, run_events
    from aqe.log import NewEvent
    from aqe.projections import (
        CatalogProjection,
        HistoryProjection,
        Projection,
        ProjectionRunner,
        SnapshotStore,
        projection_lock,
        verify,
    )
    from aqe.projections.deadletter import JetStreamDeadLetters
    from aqe.projections.history import load_rows
    from aqe.search.engine import PatternSearch
    from aqe.search.projection import PatternsProjection

    out = console()
    setup, sim_runs = simulate_fleet(FleetPlan(runs=runs, seed=seed))
    root = projections_root(app)
    reports_dir = app.settings.data_dir / "demo" / "reports"
    reports_dir.mkdir(parents=True, exist_ok=True)

    async def go() -> dict[str, Any]:
        async with open_log(app) as log:
            where = app.settings.nats_url or "the embedded nats-server"
            out.print(f"[bold]1.[/bold] publishing {len(setup)} fleet events to {where}")
            results = await log.append_many([NewEvent(event=e) for e in setup])
            new = sum(not r.duplicate for r in results)
            out.print(
                f"   {new} appended, {len(results) - new} already stored (deduplicated by id)"
            )

            out.print(
                f"[bold]2.[/bold] ingesting {len(sim_runs)} CI runs' JUnit reports "
                f"from {reports_dir}"
            )
            started = time.perf_counter()
            appended = dups = flaky = events = 0
            with progress_bar(len(sim_runs), "ingest", not quiet) as tick:
                for i, sim in enumerate(sim_runs, start=1):
                    path = reports_dir / f"TEST-{sim.run_id}.xml"
                    path.write_text(junit_report(sim), encoding="utf-8")
                    start = sim.events[0]
                    assert isinstance(start, TestRunStarted)  # noqa: S101 - simulate_fleet's shape
                    run_evts = run_events(
                        [parse_report(path, "junit")],
                        run_id=sim.run_id,
                        commit=start.commit,
                        branch=start.branch,
                        ci_url=start.ci_url,
                    )
                    result = await append_run(log, run_evts)
                    appended += result.appended
                    dups += result.duplicates
                    flaky += result.summary.flaky
                    events += result.events
                    tick(i)
            out.print(
                f"   {events} events ({appended} appended, {dups} already stored), "
                f"{flaky} tests passed on retry, {time.perf_counter() - started:.2f} s"
            )

            equal = True
            folds: list[tuple[int, Projection[Any]]] = [
                (3, CatalogProjection()),
                (4, HistoryProjection()),
                (5, PatternsProjection()),
            ]
            for step, projection in folds:
                out.print(
                    f"[bold]{step}.[/bold] folding the {projection.name} projection "
                    "and checking it against a rebuild from the log"
                )
                store = SnapshotStore(projection, root / projection.name)
                pending, begin = await pending_events(log, projection, root)
                with (
                    projection_lock(root / projection.name),
                    progress_bar(pending, f"consume {projection.name}", not quiet) as done,
                ):
                    stats = await ProjectionRunner(
                        projection,
                        log,
                        store,
                        JetStreamDeadLetters(log.connection),
                        on_progress=fold_progress(done, begin),
                        progress_every=1000,
                    ).run()
                report = await verify(projection, log, root)
                equal = equal and report.equal
                verdict = "[green]identical[/green]" if report.equal else "[red]DIFFERENT[/red]"
                out.print(
                    f"   applied {stats.applied} new events ({stats.rate:,.0f} events/s), "
                    f"{stats.dead_letters} dead letters; live vs rebuilt: {verdict}"
                )
            return {
                "catalog": SnapshotStore(CatalogProjection(), root / "catalog").load(),
                "equal": equal,
            }

    result = run(go())
    snap = result["catalog"]
    out.print("[bold]6.[/bold] what the catalog knows")
    render_catalog(snap.state, snap.checkpoints)
    tests, _, _ = load_rows(root / "history")
    out.print("[bold]7.[/bold] what the test history knows")
    for status in ("flaky", "broken"):
        render_status_table(status, tests)
    _remedies(tests, PatternSearch.open(root / "patterns"))
    _prioritise(app)
    _classify_flaky(app, tests, FleetPlan(runs=runs, seed=seed))
    out.print(
        "\nnext: [bold]aqe flaky[/bold] · [bold]aqe history TEST[/bold] · [bold]aqe runs[/bold]"
        " · [bold]aqe patterns search 'freeze time'[/bold]"
        " · [bold]aqe replay history --verify[/bold]"
    )
    if not result["equal"]:
        raise SystemExit(1)


def _classify_flaky(app: AppContext, tests: list[dict[str, Any]], plan: Any) -> None:
    """Runner agents rerun the history's flaky tests in sandboxes; the flaky workflow decides.

    The simulated flaky tests are written as a real pytest project (each failing at its
    simulated rate, seeded per rerun); one flaky workflow instance per test, with an id
    derived from the test and the seed, so a second demo finds them ended and runs and
    appends nothing.
    """
    import json
    import sys
    import warnings

    from aqe.coordination.nats_bus import NatsBus
    from aqe.demo import demo_project, rerun_tests
    from aqe.ingest.identity import split_pytest_nodeid, test_identity
    from aqe.projections.deadletter import JetStreamDeadLetters
    from aqe.workflows._flaky_trigger import FlakyStart, flaky_instance_id
    from aqe.workflows.flaky_watch import investigate

    out = console()
    project = app.settings.data_dir / "demo" / "project"
    for rel, text in demo_project(plan).items():
        path = project / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
    nodeids = {test_identity(*split_pytest_nodeid(n)): n for n in rerun_tests(plan)}
    # The three flakiest by the history (failure share): enough to show it, and fast.
    candidates = [r for r in tests if r["status"] == "flaky" and r["test_id"] in nodeids]
    candidates.sort(key=lambda r: (-(r["failures"] / max(1, r["runs"])), r["test_id"]))
    flaky = [r["test_id"] for r in candidates[:3]]
    base = {
        "source": str(project),
        "python": sys.executable,
        "order": json.dumps(list(nodeids.values())),
        # The simulated rates go down to 0.1: catch those, and give each test 2 reruns at once.
        "p_min": "0.1",
        "parallel": "2",
        "watch_rounds": "0",
    }
    starts = [
        FlakyStart(
            instance_id=flaky_instance_id(t, f"demo-{plan.seed}"),
            params={**base, "test": nodeids[t], "test_id": t},
            reasons=("aqe demo: the history calls it flaky",),
        )
        for t in flaky
    ]
    out.print(
        f"[bold]10.[/bold] runner agents rerun the {len(starts)} flakiest tests in process "
        "sandboxes; the flaky workflow classifies each one"
    )

    async def go() -> Any:
        # The sandboxes fork and exec at once; lancedb (loaded by the steps before) warns
        # about any fork in its process, which is harmless here.
        warnings.filterwarnings(
            "ignore", message="lancedb fork support is experimental", category=RuntimeWarning
        )
        async with open_log(app) as log:
            bus = NatsBus(log.connection)
            began = time.perf_counter()
            found, ran = await investigate(
                log,
                bus,
                starts,
                runners=2,
                dead_letters=JetStreamDeadLetters(log.connection),
                started_by="aqe demo",
            )
            took = time.perf_counter() - began
            if ran:
                # Fold what the step appended (agents, reruns, workflow events), so the
                # projections stay current and a second demo folds nothing new.
                await _fold_quietly(log, projections_root(app))
            return found, ran, took

    found, ran, took = run(go())
    rows: list[list[Cell]] = []
    for item in found:
        data = item.verdict
        rows.append(
            [
                data.get("test_id", "").rsplit(".", 1)[-1],
                data.get("verdict", item.status),
                f"{data.get('failure_rate', '')} {data.get('interval', '')}",
                data.get("runs_alone", ""),
                data.get("failing_seeds", "").split(",")[0],
                data.get("reruns", ""),
            ]
        )
    emit_table(
        ["test", "verdict", "failure rate (95% Wilson)", "alone", "a failing seed", "reruns"],
        rows,
        title="the flaky workflow's verdicts (sequential rule, p_min 0.1, beta 0.05)",
    )
    reruns = sum(int(i.verdict.get("reruns", 0)) for i in found)
    when = f"in {took:.1f} s" if ran else "(stored by an earlier demo: nothing rerun)"
    quarantine = sum(i.verdict.get("verdict") in ("flaky", "order-dependent") for i in found)
    out.print(
        f"   {reruns} reruns {when}; {quarantine} quarantine decisions recorded with their"
        " evidence (aqe workflows list · aqe workflows show ID)"
    )


async def _fold_quietly(log: Any, root: Any) -> None:
    """Bring the demo's projections up to the log's end, without output."""
    from aqe.projections import (
        CatalogProjection,
        HistoryProjection,
        Projection,
        ProjectionRunner,
        SnapshotStore,
        projection_lock,
    )
    from aqe.projections.deadletter import JetStreamDeadLetters
    from aqe.search.projection import PatternsProjection

    projections: list[Projection[Any]] = [
        CatalogProjection(),
        HistoryProjection(),
        PatternsProjection(),
    ]
    for projection in projections:
        with projection_lock(root / projection.name):
            await ProjectionRunner(
                projection,
                log,
                SnapshotStore(projection, root / projection.name),
                JetStreamDeadLetters(log.connection),
            ).run()


def _prioritise(app: AppContext) -> None:
    """The next run's order (failure-count learned online over the history) and a 50% subset."""
    from aqe.learning.evaluate import evaluate_online
    from aqe.learning.registry import make_policy
    from aqe.learning.training import history_from_log, rank_pending, subset

    async def go() -> Any:
        async with open_log(app) as log:
            return await history_from_log(log)

    cycles, _ = run(go())
    test_ids = sorted({t for c in cycles for t in c.test_ids})
    learned = {}
    for name in ("random", "failure-count", "ppo"):
        learned[name] = evaluate_online(make_policy(name, seed=7), cycles).mean_apfd
    order = rank_pending(make_policy("failure-count"), cycles, test_ids, replay=True)
    total = sum(r.expected_duration_s for r in order)
    half = subset(order, total / 2)
    emit_table(
        ["#", "test", "priority", "expected s"],
        [
            [
                item.position,
                item.test_id,
                f"{item.priority:.3f}",
                f"{item.expected_duration_s:.2f}",
            ]
            for item in order[:8]
        ],
        title="9. the next run, most likely failures first (failure-count; "
        + ", ".join(f"{k} APFD {v:.2f}" for k, v in learned.items() if v is not None)
        + f" over {len(cycles)} runs)",
    )
    console().print(
        f"   `aqe subset --budget 50%`: the first {len(half)} of {len(order)} tests fit in "
        f"half the run's expected {total:.1f} s"
    )


def _remedies(tests: list[dict[str, Any]], searcher: Any) -> None:
    """For each flaky or broken test, the library's best patterns for its failure."""
    cells: list[list[Cell]] = []
    for row in tests:
        if row["status"] not in ("flaky", "broken"):
            continue
        message = (row["last_failure_message"] or "").partition("\n")[0]
        query = f"{row['status']} test: {message}"
        hits = searcher.search(query, k=3).hits
        cells.append(
            [row["test_id"], row["status"], message, ", ".join(h.pattern_id for h in hits)]
        )
    emit_table(
        ["test", "status", "failure", "suggested patterns (hybrid search on the failure)"],
        cells,
        title="8. remedies from the pattern library",
    )
