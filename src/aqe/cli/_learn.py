"""``aqe learn eval|train|list``, ``aqe prioritize`` and ``aqe subset``."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from aqe.cli._context import (
    AppContext,
    apply_options,
    console,
    json_option,
    open_log,
    pass_app,
    print_json,
    run,
)
from aqe.cli._projections import catch_up, progress_bar

if TYPE_CHECKING:
    from aqe.learning.features import Cycle
    from aqe.learning.training import Ranked

_BUDGET_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%|s|m|h)?\s*$")


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
    """(cycles, source, last AQE_TESTS sequence) from a data set or the log."""
    from aqe.learning.training import history_from_log, load_cycles

    if dataset is not None:
        return load_cycles(dataset), str(dataset), 0

    async def go() -> tuple[list[Cycle], int]:
        async with open_log(app) as log:
            return await history_from_log(log)

    cycles, last = run(go())
    if not cycles:
        raise click.UsageError(
            "the log holds no test runs yet: `aqe ingest` reports first, or pass --dataset iofrol"
        )
    return cycles, "log", last


def _names(algo: str) -> list[str]:
    from aqe.learning.registry import ALGORITHMS, BASELINES, LEARNERS, ORACLES

    if algo == "all":
        return [*BASELINES, *LEARNERS, *ORACLES]
    if algo not in ALGORITHMS:
        raise click.BadParameter(
            f"{algo!r}: one of {', '.join(sorted(ALGORITHMS))} or all", param_hint="--algo"
        )
    return [algo]


@click.group()
def learn() -> None:
    """Learn test prioritisation from history: evaluate, train, list policies."""


@learn.command(name="eval")
@click.option("--algo", default="all", show_default=True, help="Algorithm name, or all.")
@_dataset_option
@click.option("--seed", default=0, show_default=True, help="Seed for every algorithm.")
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
@json_option
@pass_app
def eval_(
    app: AppContext,
    algo: str,
    dataset: Path | None,
    seed: int,
    budget: float,
    reward: str,
    quiet: bool,
    as_json: bool,
) -> None:
    """Replay the history cycle by cycle: each algorithm ranks a cycle from what came
    before, then learns from its verdicts. Prints mean APFD and NAPFD (over cycles with
    a failure) with training and inference time."""
    import msgspec

    from aqe.learning.evaluate import evaluate_online
    from aqe.learning.registry import make_policy

    cycles, source, _ = _history(app, dataset)
    reports = []
    for name in _names(algo):
        with progress_bar(len(cycles), f"eval {name}", not (quiet or as_json)) as tick:
            policy = make_policy(name, seed=seed)
            report = evaluate_online(
                policy,
                cycles,
                budget=budget,
                reward=reward,
                on_progress=lambda done, _t: tick(done),
            )
        reports.append(report)
        if not (quiet or as_json):
            console(stderr=True).print(
                f"{name}: APFD {_num(report.mean_apfd)}, NAPFD {_num(report.mean_napfd)}, "
                f"train {report.train_seconds:.1f} s"
            )
    if as_json:
        print_json(
            [{k: v for k, v in msgspec.to_builtins(r).items() if k != "per_cycle"} for r in reports]
        )
        return
    from rich.table import Table

    failing = reports[0].failing_cycles if reports else 0
    table = Table(
        title=f"{source}: {len(cycles)} cycles, {failing} with failures; NAPFD budget "
        f"{budget:.0%}; seed {seed}; reward: the algorithm's own, else {reward}",
        title_justify="left",
    )
    columns = ("algorithm", "reward", "APFD", "NAPFD", "train s", "inference s", "transitions")
    for column in columns:
        table.add_column(column, justify="left" if column == "algorithm" else "right")
    for r in sorted(reports, key=lambda r: -(r.mean_apfd or 0.0)):
        table.add_row(
            r.policy,
            r.reward,
            _num(r.mean_apfd),
            _num(r.mean_napfd),
            f"{r.train_seconds:.2f}",
            f"{r.inference_seconds:.2f}",
            str(r.transitions),
        )
    console().print(table)


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
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option
@pass_app
def train(
    app: AppContext,
    algo: str,
    dataset: Path | None,
    seed: int,
    record: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Train a policy over the whole history and save it as an artefact.

    The policy is saved under <data dir>/policies/<id> with its algorithm,
    hyperparameters, feature version and the AQE_TESTS sequence it learned up to, and a
    learning.policy.trained.v1 event is appended.
    """
    import msgspec

    from aqe.events import Event
    from aqe.learning.experience import ExperienceProjection
    from aqe.learning.policies import policies_root, save_policy
    from aqe.learning.training import train_policy, trained_event
    from aqe.log import NewEvent

    (name,) = _names(algo)
    cycles, source, last = _history(app, dataset)
    events: list[Event] = []
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
    artefact = save_policy(policies_root(app.settings.data_dir), policy, result.meta)
    events.append(trained_event(result.meta, artefact))

    async def publish() -> int:
        async with open_log(app) as log:
            appended = 0
            for start in range(0, len(events), 200):
                results = await log.append_many(
                    [NewEvent(event=e) for e in events[start : start + 200]]
                )
                appended += sum(not r.duplicate for r in results)
            await catch_up(log, app, ExperienceProjection(), quiet=True)
            return appended

    appended = run(publish())
    meta = result.meta
    if as_json:
        print_json({**msgspec.to_builtins(meta), "artefact": str(artefact), "events": appended})
        return
    console().print(
        f"trained {meta.policy_id} on {meta.cycles} cycles from {source}: APFD "
        f"{_num(meta.mean_apfd)}, NAPFD {_num(meta.mean_napfd)}, {meta.train_seconds:.1f} s; "
        f"saved to {artefact}; {appended} events appended "
        f"({len(events) - 1 if record else 0} cycles of experience)"
    )


@learn.command(name="list")
@json_option
@pass_app
def list_(app: AppContext, as_json: bool) -> None:
    """Saved policies, newest first."""
    import msgspec

    from aqe.learning.policies import list_policies, policies_root

    metas = list_policies(policies_root(app.settings.data_dir))
    if as_json:
        print_json([msgspec.to_builtins(m) for m in metas])
        return
    if not metas:
        console().print("no policies yet: `aqe learn train --algo ppo`")
        return
    from rich.table import Table

    table = Table(title="policies", title_justify="left")
    for column in ("policy", "algorithm", "trained on", "until seq", "cycles", "APFD", "NAPFD"):
        table.add_column(column)
    for m in metas:
        table.add_row(
            m.policy_id,
            m.algorithm,
            m.trained_on,
            str(m.trained_until_seq),
            str(m.cycles),
            _num(m.mean_apfd),
            _num(m.mean_napfd),
        )
    console().print(table)


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
                help="Test ids of the pending run, one per line (- for stdin) "
                "[default: every test seen in the history].",
            ),
            _dataset_option,
            json_option,
        ],
    )


def _ranked(
    app: AppContext, policy_id: str | None, algo: str, tests_file: Any, dataset: Path | None
) -> list[Ranked]:
    from aqe.learning.policies import load_policy, policies_root
    from aqe.learning.registry import make_policy
    from aqe.learning.training import rank_pending

    cycles, _, _ = _history(app, dataset)
    if tests_file is not None:
        test_ids = [line.strip() for line in tests_file if line.strip()]
    else:
        test_ids = sorted({t for c in cycles for t in c.test_ids})
    if policy_id:
        policy, _ = load_policy(policies_root(app.settings.data_dir), policy_id)
        return rank_pending(policy, cycles, test_ids, replay=False)
    (name,) = _names(algo)
    return rank_pending(make_policy(name), cycles, test_ids, replay=True)


def _print_order(order: list[Ranked], as_json: bool, note: str) -> None:
    import msgspec

    if as_json:
        print_json([msgspec.to_builtins(r) for r in order])
        return
    for item in order:
        sys.stdout.write(item.test_id + "\n")
    console(stderr=True).print(note)


@click.command()
@_ranking_options
@pass_app
def prioritize(
    app: AppContext,
    policy_id: str | None,
    algo: str,
    tests_file: Any,
    dataset: Path | None,
    as_json: bool,
) -> None:
    """Print the tests of a pending run, most likely to fail first (one id per line)."""
    order = _ranked(app, policy_id, algo, tests_file, dataset)
    source = f"policy {policy_id}" if policy_id else algo
    _print_order(order, as_json, f"{len(order)} tests ordered by {source}")


def parse_budget(value: str, total_s: float) -> float:
    """``50%`` of ``total_s``, or a duration: ``300``/``300s``, ``5m``, ``1.5h``."""
    match = _BUDGET_RE.match(value)
    if not match:
        raise click.BadParameter(
            f"{value!r}: a share like 50% or a duration like 300s, 5m, 1h", param_hint="--budget"
        )
    number, unit = float(match[1]), match[2] or "s"
    if unit == "%":
        if not 0 < number <= 100:
            raise click.BadParameter("a share must be in (0, 100]%", param_hint="--budget")
        return total_s * number / 100
    return number * {"s": 1, "m": 60, "h": 3600}[unit]


@click.command(name="subset")
@click.option("--budget", required=True, help="50% of the run's expected time, or 300s, 5m, 1h.")
@_ranking_options
@pass_app
def subset_(
    app: AppContext,
    budget: str,
    policy_id: str | None,
    algo: str,
    tests_file: Any,
    dataset: Path | None,
    as_json: bool,
) -> None:
    """Print the prioritised tests that fit in a time budget (expected durations)."""
    from aqe.learning.training import subset

    order = _ranked(app, policy_id, algo, tests_file, dataset)
    total = sum(r.expected_duration_s for r in order)
    budget_s = parse_budget(budget, total)
    chosen = subset(order, budget_s)
    used = sum(r.expected_duration_s for r in chosen)
    _print_order(
        chosen,
        as_json,
        f"{len(chosen)} of {len(order)} tests, {used:.1f} s of a {budget_s:.1f} s budget "
        f"({total:.1f} s for all)",
    )
