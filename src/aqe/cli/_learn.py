"""``aqe learn eval|train|list``, ``aqe prioritize`` and ``aqe subset``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from aqe import queries
from aqe.app import AppContext, open_log, run
from aqe.cli._context import apply_options, console, json_option, pass_app, print_json
from aqe.cli._projections import catch_up, progress_bar
from aqe.cli._table import Column, emit_table, output_options
from aqe.errors import ConfigError, NoHistoryError

if TYPE_CHECKING:
    from aqe.learning.features import Cycle
    from aqe.learning.training import Ranked
    from aqe.queries import RankingPlan

# aqe.learning.selection.FORMATS, spelled out so `aqe --help` does not import numpy.
_FORMATS = ("pytest", "junit-classnames", "ids", "json")


def _dataset_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--dataset",
        callback=_resolve_dataset,
        metavar="NAME|PATH",
        help="Learn from a data set instead of the test history in the log: `iofrol` "
        "(the IOF/ROL CI history shipped in data/) or the path of an IOF/ROL CSV (.gz ok).",
    )(func)


def _resolve_dataset(ctx: click.Context, param: click.Parameter, value: str | None) -> Path | None:
    from aqe.datasets import resolve_dataset

    if value is None:
        return None
    path = resolve_dataset(value)
    if path is None or path.is_dir():
        raise click.BadParameter(f"{value!r}: no such data set or file", ctx, param)
    return path


def _history(app: AppContext, dataset: Path | None) -> tuple[list[Cycle], str, int]:
    """:func:`aqe.queries.learning_history`, an empty log a usage error."""
    try:
        return queries.learning_history(app, dataset)
    except NoHistoryError as exc:
        raise click.UsageError(str(exc)) from None


def _names(algo: str) -> list[str]:
    try:
        return queries.algorithm_names(algo)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--algo") from None


@click.group()
def learn() -> None:
    """Learn test prioritisation from history: evaluate, train, list policies."""


@learn.command(name="eval")
@click.option(
    "--algo", default="all", show_default=True, help="Algorithm names (comma-separated), or all."
)
@_dataset_option
@click.option(
    "--protocol",
    type=click.Choice(["aqe", "rows"]),
    default="aqe",
    show_default=True,
    help="aqe: reruns folded, means over failing cycles and over cycles where order can "
    "matter; rows: every CSV row an item, cycles with 6+ rows and a failure (TSE 2021).",
)
@click.option("--seed", default=0, show_default=True, help="First seed for every algorithm.")
@click.option(
    "--seeds",
    default=1,
    show_default=True,
    type=click.IntRange(1, 100),
    help="How many seeds (seed, seed+1, ...): means and standard deviations.",
)
@click.option(
    "--budget",
    default=0.5,
    show_default=True,
    type=click.FloatRange(0.01, 1.0),
    help="NAPFD time budget (share of each cycle's duration).",
)
@click.option(
    "--reward",
    type=click.Choice(["tcfail", "failcount", "timerank"]),
    default="tcfail",
    show_default=True,
    help="Reward function (unless an algorithm names its own).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@output_options
@pass_app
def eval_(
    app: AppContext,
    algo: str,
    dataset: Path | None,
    protocol: str,
    seed: int,
    seeds: int,
    budget: float,
    reward: str,
    quiet: bool,
    as_json: bool,
) -> None:
    """Replay the history cycle by cycle: each algorithm ranks a cycle from what came
    before, then learns from its verdicts. Prints APFD, NAPFD and the normalised score
    (random's expectation 0, the optimum 1) with training and inference time."""
    import msgspec

    from aqe.learning.evaluate import across_seeds, evaluate_online, expected_random
    from aqe.learning.registry import ORACLES, make_policy
    from aqe.learning.training import load_cycles

    if protocol == "rows" and dataset is None:
        raise click.UsageError("--protocol rows needs --dataset (the log has no CSV rows)")
    if dataset is not None:
        cycles, source = load_cycles(dataset, protocol), str(dataset)
    else:
        cycles, source, _ = _history(app, dataset)
    summaries = [across_seeds([expected_random(cycles, budget=budget, protocol=protocol)])]
    for name in _names(algo):
        runs = []
        for s in range(seed, seed + (1 if name in ORACLES else seeds)):
            with progress_bar(len(cycles), f"eval {name} seed {s}", not (quiet or as_json)) as tick:
                report = evaluate_online(
                    make_policy(name, seed=s),
                    cycles,
                    budget=budget,
                    reward=reward,
                    protocol=protocol,
                    on_progress=lambda done, _t: tick(done),
                )
            runs.append(report)
        summary = across_seeds(runs)
        summaries.append(summary)
        if not (quiet or as_json):
            console(stderr=True).print(
                f"{name}: APFD {_pm(summary, 'mean_apfd')}, "
                f"normalised {_pm(summary, 'normalised')}, "
                f"train {summary.mean['train_seconds'] or 0.0:.1f} s"
            )
    if as_json:
        print_json([msgspec.to_builtins(s) for s in summaries])
        return
    head = summaries[0]
    columns = ["algorithm", "reward", "APFD"]
    if protocol == "aqe":
        columns.append(f"APFD ({head.order_cycles} order)")
    columns += ["NAPFD", "normalised", "train s", "inference s"]
    rows = []
    for sm in sorted(summaries, key=lambda x: -(x.mean["mean_apfd"] or 0.0)):
        row = [sm.policy, sm.reward, _pm(sm, "mean_apfd")]
        if protocol == "aqe":
            row.append(_pm(sm, "mean_apfd_order"))
        row += [
            _pm(sm, "mean_napfd"),
            _pm(sm, "normalised"),
            f"{sm.mean['train_seconds'] or 0.0:.2f}",
            f"{sm.mean['inference_seconds'] or 0.0:.2f}",
        ]
        rows.append(row)
    counted = (
        f"{head.failing_cycles} with a failure ({head.order_cycles} where order can matter)"
        if protocol == "aqe"
        else f"{head.failing_cycles} with 6+ rows and a failure"
    )
    emit_table(
        [Column(name, "left" if name == "algorithm" else "right") for name in columns],
        rows,
        title=f"{source}, protocol {protocol}: {len(cycles)} cycles, {counted}; NAPFD budget "
        f"{budget:.0%}; seeds {seed}..{seed + seeds - 1} (mean ± sd); random = its "
        f"expectation; reward: the algorithm's own, else {reward}",
    )


def _pm(summary: Any, field: str) -> str:
    value, spread = summary.mean[field], summary.std[field]
    if value is None:
        return "-"
    return f"{value:.4f}" if not spread else f"{value:.4f} ± {spread:.4f}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


@learn.command()
@click.option("--algo", required=True, help="Algorithm to train (see `aqe learn eval --help`).")
@_dataset_option
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--record/--no-record",
    default=True,
    show_default=True,
    help="Append each cycle's experience to the log (learning.experience.recorded.v1).",
)
@click.option(
    "--from-experience",
    "from_experience",
    metavar="POLICY_ID",
    help="Offline learners (decision-transformer): fit on that policy's recorded "
    "experience from the experience projection instead of replaying the history.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option
@pass_app
def train(
    app: AppContext,
    algo: str,
    dataset: Path | None,
    seed: int,
    record: bool,
    from_experience: str | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Train a policy over the whole history and store it in the log.

    The parameters go to the JetStream object store (named by digest) first, then a
    learning.policy.trained.v1 event naming them (algorithm, hyperparameters, feature
    version, the AQE_TESTS sequence it learned up to) is appended; <data dir>/policies
    is only a cache.
    """
    import msgspec

    from aqe.events import Event
    from aqe.learning.experience import ExperienceProjection
    from aqe.learning.policies import policies_root, save_policy
    from aqe.learning.store import put_policy
    from aqe.learning.training import train_policy, trained_event
    from aqe.log import NewEvent

    (name,) = _names(algo)
    events: list[Event] = []
    if from_experience is not None:
        policy, meta = _train_from_experience(app, name, seed, from_experience)
        source = meta.trained_on
    else:
        cycles, source, last = _history(app, dataset)
        with progress_bar(len(cycles), f"train {name}", not (quiet or as_json)) as tick:
            policy, result = train_policy(
                name,
                cycles,
                seed=seed,
                source=source,
                until_seq=last,
                on_progress=lambda done, _t: tick(done),
                record=events.append if record else None,
            )
        meta = result.meta
    artefact = save_policy(policies_root(app.settings.data_dir), policy, meta)
    recorded = len(events)
    stored: list[str] = []

    async def publish() -> int:
        async with open_log(app) as log:
            bucket, digest = await put_policy(log, artefact)  # the object before its fact
            events.append(trained_event(meta, bucket, digest))
            stored.append(f"{bucket}/{digest}")
            appended = 0
            for start in range(0, len(events), 200):
                results = await log.append_many(
                    [NewEvent(event=e) for e in events[start : start + 200]]
                )
                appended += sum(not r.duplicate for r in results)
            await catch_up(log, app, ExperienceProjection(), quiet=True)
            return appended

    appended = run(publish())
    if as_json:
        print_json(
            {
                **msgspec.to_builtins(meta),
                "artefact": stored[0],
                "cache": str(artefact),
                "events": appended,
            }
        )
        return
    console().print(
        f"trained {meta.policy_id} on {meta.cycles} cycles from {source}: APFD "
        f"{_num(meta.mean_apfd)}, NAPFD {_num(meta.mean_napfd)}, {meta.train_seconds:.1f} s; "
        f"stored as {stored[0]} (cache {artefact}); {appended} events appended "
        f"({recorded} cycles of experience)"
    )


def _train_from_experience(app: AppContext, name: str, seed: int, source_id: str) -> Any:
    """``(policy, meta)``: ``name`` fitted offline on ``source_id``'s experience buffer,
    read from the experience projection after it caught up with the log."""
    from aqe.app import projections_root
    from aqe.errors import ConfigError
    from aqe.learning.experience import ExperienceProjection, transitions
    from aqe.learning.training import train_offline
    from aqe.projections import SnapshotStore

    projection = ExperienceProjection()

    async def go() -> None:
        async with open_log(app) as log:
            await catch_up(log, app, projection, quiet=True, materialize=False)

    run(go())
    state = SnapshotStore(projection, projections_root(app) / projection.name).load().state
    buffer = state.policies.get(source_id)
    if buffer is None or not buffer.steps:
        known = ", ".join(sorted(k for k, b in state.policies.items() if b.steps)) or "none"
        raise ConfigError(f"no recorded experience for policy {source_id!r} (known: {known})")
    return train_offline(
        name,
        transitions(state, source_id),
        seed=seed,
        source=f"experience:{source_id}",
        cycles=buffer.cycles,
    )


@learn.command(name="list")
@output_options
@pass_app
def list_(app: AppContext, as_json: bool) -> None:
    """Policies the log holds (learning.policy.trained.v1), newest first."""
    import msgspec

    from aqe.learning.store import read_policies

    async def go() -> list[Any]:
        async with open_log(app) as log:
            return list((await read_policies(log)).values())

    metas = sorted(
        run(go()), key=lambda m: (m.trained_at is not None, m.trained_at, m.policy_id), reverse=True
    )
    if as_json:
        print_json([msgspec.to_builtins(m) for m in metas])
        return
    if not metas:
        console().print("no policies yet: `aqe learn train --algo ppo`")
        return
    emit_table(
        ["policy", "algorithm", "trained on", "until seq", "cycles", "APFD", "NAPFD"],
        [
            [
                m.policy_id,
                m.algorithm,
                m.trained_on,
                m.trained_until_seq,
                m.cycles,
                _num(m.mean_apfd),
                _num(m.mean_napfd),
            ]
            for m in metas
        ],
        title="policies",
    )


def _ranking_options(func: Callable[..., Any]) -> Callable[..., Any]:
    return apply_options(
        func,
        [
            click.option("--policy", "policy_id", help="A saved policy (see `aqe learn list`)."),
            click.option(
                "--algo",
                default="failure-count",
                show_default=True,
                help="Without --policy: replay the history with this algorithm, then rank.",
            ),
            click.option(
                "--tests",
                "tests_file",
                type=click.File("r"),
                help="The pending run's tests, one per line (- for stdin): pytest node ids "
                "(`pytest --collect-only -q` as it prints them) or test ids "
                "[default: every test seen in the history].",
            ),
            click.option(
                "--changed",
                "changed_file",
                type=click.File("r"),
                help="Changed paths, one per line (`git diff --name-only main`): tests in "
                "those files go first and are always selected.",
            ),
            click.option(
                "--format",
                "fmt",
                type=click.Choice(_FORMATS),
                default=None,
                help="pytest: node ids; junit-classnames: class names (Maven/Gradle filters); "
                "ids: test ids; json [default: pytest where the history has node ids, "
                "else ids].",
            ),
            _dataset_option,
            json_option,
        ],
    )


def _plan(app: AppContext, options: dict[str, Any]) -> RankingPlan:
    """The ranking ``options`` ask for (:class:`aqe.queries.RankingPlan`); its warnings
    on stderr, a bad --algo or an empty log a usage error."""
    if not options["policy_id"]:
        _names(options["algo"])
    try:
        return queries.RankingPlan(
            app,
            policy_id=options["policy_id"],
            algo=options["algo"],
            tests=options["tests_file"],
            changed=options["changed_file"],
            fmt=options["fmt"] or ("json" if options["as_json"] else None),
            dataset=options["dataset"],
            warn=_warn,
        )
    except NoHistoryError as exc:
        raise click.UsageError(str(exc)) from None


def _warn(message: str) -> None:
    console(stderr=True).print(message, soft_wrap=True)


def _write(lines: list[str], target: Any) -> None:
    target.write("".join(line + "\n" for line in lines))


@click.command()
@_ranking_options
@pass_app
def prioritize(app: AppContext, /, **options: Any) -> None:
    """Print the tests of a pending run, most likely to fail first (one per line).

    New tests (not in the history) and tests in --changed files come first; ties keep
    the newest run's order."""
    plan = _plan(app, options)
    _write(plan.lines(plan.order), sys.stdout)
    console(stderr=True).print(f"{len(plan.order)} tests ordered by {plan.label}")


@click.command(name="subset")
@click.option(
    "--budget", help="Time budget: a share of the run's expected time (30%) or 300s, 5m, 1h."
)
@click.option(
    "--target-confidence",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    help="Stop once the subset covers this share of the expected failures (0.9).",
)
@click.option(
    "--rest",
    "rest_file",
    type=click.File("w"),
    help="Write the tests left out here, in the same format (- for stdout).",
)
@click.option(
    "--split-index",
    metavar="K/N",
    help="Print only bin K of N bins of the subset, balanced by duration (parallel jobs).",
)
@click.option(
    "--changed-since",
    metavar="REF",
    help="Test impact analysis: only tests whose coverage meets `git diff REF` (plus new, "
    "stale and changed-file tests), still ranked and cut by --budget.",
)
@click.option(
    "--stale-runs",
    default=20,
    show_default=True,
    help="With --changed-since: coverage older than this many coverage runs is stale "
    "(the test is selected).",
)
@_ranking_options
@pass_app
def subset_(
    app: AppContext,
    /,
    budget: str | None,
    target_confidence: float | None,
    rest_file: Any,
    split_index: str | None,
    changed_since: str | None,
    stale_runs: int,
    **options: Any,
) -> None:
    """Print the prioritised tests that fit a time budget or reach a confidence target.

    New and changed tests are always in. With --rest the tests left out are written to
    a file, so `pytest $(cat subset.txt)` and `pytest $(cat rest.txt)` together run the
    whole suite once.
    """
    import msgspec

    from aqe.learning.selection import (
        Selection,
        failure_weights,
        parse_budget,
        select,
        split_bins,
    )

    if budget is None and target_confidence is None and changed_since is None:
        raise click.UsageError("give --budget, --target-confidence or --changed-since")
    bins = _parse_split(split_index)
    plan = _plan(app, options)
    total = sum(r.expected_duration_s for r in plan.order)
    try:
        budget_s = None if budget is None else parse_budget(budget, total)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--budget") from None
    outside: list[Ranked] = []
    candidates, always = list(plan.order), plan.always
    if changed_since is not None:
        candidates, outside, always = _impacted(app, plan, changed_since, stale_runs)
    if budget_s is None and target_confidence is None:
        chosen = Selection(
            chosen=tuple(candidates),
            rest=(),
            always=len(always),
            used_s=sum(r.expected_duration_s for r in candidates),
            total_s=sum(r.expected_duration_s for r in candidates),
            confidence=None,
        )
    else:
        chosen = select(
            candidates,
            budget_s=budget_s,
            target_confidence=target_confidence,
            weights=failure_weights(plan.cycles),
            always=always,
        )
    if outside:
        chosen = msgspec.structs.replace(
            chosen,
            rest=(*chosen.rest, *outside),
            total_s=chosen.total_s + sum(r.expected_duration_s for r in outside),
        )
    shown = list(chosen.chosen)
    if bins is not None:
        shown = split_bins(shown, *bins)
    _write(plan.lines(shown), sys.stdout)
    if rest_file is not None:
        _write(plan.lines(list(chosen.rest)) if chosen.rest else [], rest_file)
    parts = [
        f"{len(chosen.chosen)} of {len(plan.order)} tests ({chosen.always} new or changed)",
        f"{chosen.used_s:.1f} s of {chosen.total_s:.1f} s",
    ]
    if budget_s is not None:
        parts.append(f"budget {budget_s:.1f} s")
    if chosen.confidence is not None:
        parts.append(f"confidence {chosen.confidence:.2f}")
    if bins is not None:
        parts.append(f"bin {bins[0]}/{bins[1]}: {len(shown)} tests")
    parts.append(f"ranked by {plan.label}")
    console(stderr=True).print("; ".join(parts), soft_wrap=True)


def _impacted(
    app: AppContext, plan: RankingPlan, ref: str, stale_runs: int
) -> tuple[list[Ranked], list[Ranked], set[str]]:
    """(impacted tests in plan order, the others, the always-selected) for ``ref``'s diff."""
    from aqe.cli._coverage import coverage_state
    from aqe.coverage.tia import changed_lines, git_diff, impacted_tests

    changes = changed_lines(git_diff(ref, Path.cwd()))
    impact = impacted_tests(
        coverage_state(app), changes, pending=plan.pending.test_ids, stale_runs=stale_runs or None
    )
    in_files = queries.changed_tests(list(changes), plan.pending, plan.names)
    always = plan.always | in_files
    wanted = set(impact.reasons) | always
    err = console(stderr=True)
    err.print(
        f"aqe: since {ref}: {impact.describe()}"
        + (f"; {len(in_files)} in changed test files" if in_files else ""),
        soft_wrap=True,
    )
    for path, lines in impact.uncovered.items():
        err.print(f"aqe: {path}: changed lines no test runs: {_ranges(lines)}", soft_wrap=True)
    unknown = [p for p in impact.unknown_files if not any(p == f for f in _test_files(plan))]
    if unknown:
        err.print(f"aqe: no coverage known for changed files: {', '.join(unknown)}", soft_wrap=True)
    inside = [r for r in plan.order if r.test_id in wanted]
    return inside, [r for r in plan.order if r.test_id not in wanted], always


def _test_files(plan: RankingPlan) -> set[str]:
    files = set()
    for test_id in plan.pending.test_ids:
        known = plan.names.get(test_id)
        nodeid = plan.pending.nodeids.get(test_id) or (known.nodeid if known else None) or ""
        if nodeid:
            files.add(nodeid.partition("::")[0])
    return files


def _ranges(lines: Sequence[int]) -> str:
    from aqe.coverage.queries import line_ranges

    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in line_ranges(lines))


def _parse_split(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    index, sep, count = value.partition("/")
    if not (sep and index.isdigit() and count.isdigit() and 1 <= int(index) <= int(count)):
        raise click.BadParameter(f"{value!r}: K/N with 1 <= K <= N", param_hint="--split-index")
    return int(index), int(count)
