"""``aqe flaky-model eval|train|predict|predict-pytest|list`` and ``aqe flaky --predicted``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from aqe.app import AppContext, open_log, projections_root, run
from aqe.cli._context import ExistingPath, console, pass_app, print_json
from aqe.cli._projections import catch_up, progress_bar
from aqe.cli._table import Cell, Column, emit_table, output_options
from aqe.errors import AqeError

if TYPE_CHECKING:
    from aqe.flakemodel.data import TestCode
    from aqe.flakemodel.evaluate import EvalReport, Protocol
    from aqe.flakemodel.projection import PredictionsState
    from aqe.flakemodel.service import Prediction
    from aqe.search.embed import Embedder

_METHODS = ("keyword", "logreg", "minilm", "signals")  # aqe.flakemodel.evaluate.METHODS
REMEDY_CATEGORY = "flakiness"
"""The pattern-library category whose patterns are remedies for flaky tests."""


def embeddings_dir(app: AppContext) -> Path:
    """The persistent embedding cache of the flakiness model."""
    return app.settings.data_dir / "flakemodel" / "embeddings"


def _embedder(app: AppContext, version: str | None = None) -> Embedder:
    from aqe.flakemodel.service import embedder_for

    return embedder_for(embeddings_dir(app), version)


def _data_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--data",
        "data",
        required=True,
        type=ExistingPath(dir_okay=False, path_type=Path),
        help="Labelled test code, JSON lines (.gz ok): project, test, code, flaky.",
    )(func)


def _load(path: Path, labelled: bool) -> list[TestCode]:
    from aqe.flakemodel.data import load_tests

    return load_tests(path, labelled=labelled)


@click.group(name="flaky-model")
def flaky_model() -> None:
    """Predict flaky tests from their code: evaluate, train, predict, list models."""


@flaky_model.command(name="eval")
@_data_option
@click.option(
    "--protocol",
    type=click.Choice(["per-project", "cv"]),
    default="per-project",
    show_default=True,
    help="Leave one project out, or stratified k-fold over all tests.",
)
@click.option(
    "--methods",
    default=",".join(_METHODS),
    show_default=True,
    help="Comma-separated: keyword (rule), logreg (tokens), minilm (the model), signals "
    "(the model's head on code signals only).",
)
@click.option("--folds", default=10, show_default=True, type=click.IntRange(2, 50))
@click.option("--seed", default=0, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), help="Training epochs of the heads [12].")
@click.option("--no-tail", is_flag=True, help="Embed long codes by their head only.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@output_options
@pass_app
def eval_(
    app: AppContext,
    data: Path,
    protocol: str,
    methods: str,
    folds: int,
    seed: int,
    epochs: int | None,
    no_tail: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Precision, recall, F1 and PR-AUC per project and overall (pooled and macro),
    for the model and the baselines on the same folds, next to Flakify's F1."""
    from aqe.flakemodel.evaluate import evaluate
    from aqe.flakemodel.inputs import Blocks, embed_codes, input_matrix
    from aqe.flakemodel.model import HeadConfig
    from aqe.search.embed import DIM

    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in _METHODS]
    if unknown or not chosen:
        raise click.BadParameter(f"{', '.join(unknown) or methods!r}: use {', '.join(_METHODS)}")
    tests = _load(data, labelled=True)
    codes = [t.code for t in tests]
    show = not (quiet or as_json)
    inputs = {}
    if "minilm" in chosen:
        blocks = Blocks(embedding=True, signals=True)
        with _embedder(app) as embedder, progress_bar(len(codes), "embed tests", show) as tick:
            emb = embed_codes(
                embedder,
                codes,
                tail=not no_tail,
                on_progress=lambda n, t: tick(n * len(codes) // t),
            )
        inputs["minilm"] = (input_matrix(blocks, codes, emb), blocks.names(DIM))
    if "signals" in chosen:
        blocks = Blocks(embedding=False, signals=True)
        inputs["signals"] = (input_matrix(blocks, codes, None), blocks.names(DIM))
    config = HeadConfig(seed=seed) if epochs is None else HeadConfig(seed=seed, epochs=epochs)
    bars: dict[str, Any] = {}
    with progress_bar(len(chosen), f"{protocol} folds", show) as tick:

        def on_fold(method: str, done: int, total: int) -> None:
            bars[method] = done
            tick(sum(1 for m in bars if bars[m] == total))

        report = evaluate(
            tests,
            cast("Protocol", protocol),
            methods=chosen,
            inputs=inputs,
            config=config,
            folds=folds,
            seed=seed,
            on_fold=on_fold,
        )
    if as_json:
        print_json(report)
        return
    render_eval(report)


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def render_eval(report: EvalReport) -> None:
    """The overall table (pooled and macro) and the per-project F1 table."""
    title = (
        f"{report.protocol}: {report.tests} tests ({report.flaky} flaky), {report.projects} "
        f"projects, {report.folds} folds; anchor {report.anchor}: F1 {report.anchor_f1:.2f}"
    )
    names = (
        "method",
        "P",
        "R",
        "F1",
        "PR-AUC",
        "macro P",
        "macro R",
        "macro F1",
        "macro PR-AUC",
        "s",
    )
    rows: list[list[Cell]] = [
        [
            m.method,
            _f(m.pooled.precision),
            _f(m.pooled.recall),
            _f(m.pooled.f1),
            _f(m.pooled.pr_auc),
            _f(m.macro_precision),
            _f(m.macro_recall),
            _f(m.macro_f1),
            _f(m.macro_pr_auc),
            f"{m.train_seconds:.0f}",
        ]
        for m in report.methods
    ]
    emit_table([Column(n, "left" if n == "method" else "right") for n in names], rows, title=title)
    projects = sorted(report.methods[0].per_project)
    head = ["project", "tests", "flaky"] + [f"{m.method} F1" for m in report.methods]
    head += [f"{m.method} PR-AUC" for m in report.methods]
    cells: list[list[Cell]] = []
    for name in projects:
        first = report.methods[0].per_project[name]
        row: list[Cell] = [name, first.tests, first.flaky]
        row += [_f(m.per_project[name].f1) for m in report.methods]
        row += [_f(m.per_project[name].pr_auc) for m in report.methods]
        cells.append(row)
    emit_table(
        [Column(n, "left" if n == "project" else "right") for n in head],
        cells,
        title="per project (each project's held-out predictions)",
    )


@flaky_model.command()
@_data_option
@click.option("--seed", default=0, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), help="Training epochs [12].")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@output_options
@pass_app
def train(
    app: AppContext, data: Path, seed: int, epochs: int | None, quiet: bool, as_json: bool
) -> None:
    """Train on every test of --data; store the weights in the object store by digest
    and record a model-trained event naming them."""
    from aqe.flakemodel.model import HeadConfig
    from aqe.flakemodel.service import file_digest, train_model

    tests = _load(data, labelled=True)
    config = HeadConfig(seed=seed) if epochs is None else HeadConfig(seed=seed, epochs=epochs)
    show = not (quiet or as_json)

    async def go() -> Any:
        async with open_log(app) as log:
            with _embedder(app) as embedder, progress_bar(len(tests), "embed tests", show) as tick:
                return await train_model(
                    log,
                    tests,
                    embedder=embedder,
                    trained_on=str(data),
                    data_digest=file_digest(data),
                    config=config,
                    on_progress=lambda n, total: tick(n * len(tests) // total),
                )

    _model, event = run(go())
    if as_json:
        print_json(event)
        return
    console().print(
        f"model {event.model_id}: {event.tests} tests ({event.flaky} flaky), threshold "
        f"{event.threshold:.3f}, {event.size_bytes / 1024:.0f} KiB in object store "
        f"{event.bucket} as {event.digest}; trained in {event.train_seconds:.1f} s"
    )


def _state(app: AppContext, refresh: bool = True) -> PredictionsState:
    from aqe.flakemodel.projection import PredictionsProjection
    from aqe.projections import SnapshotStore

    projection = PredictionsProjection()
    if refresh:

        async def go() -> str | None:
            async with open_log(app) as log:
                return await catch_up(log, app, projection, quiet=True)

        skipped = run(go())
        if skipped:
            console(stderr=True).print(f"[dim]not refreshed: {skipped}[/dim]")
    state: PredictionsState = (
        SnapshotStore(projection, projections_root(app) / projection.name).load().state
    )
    return state


def _predict(
    app: AppContext, tests: Sequence[TestCode], model_id: str, record: bool, source: str, show: bool
) -> tuple[list[Prediction], str, int]:
    from aqe.flakemodel.service import fetch_model, record_predictions, resolve_model, score

    trained = resolve_model(_state(app), model_id)

    async def go() -> tuple[list[Prediction], int]:
        async with open_log(app) as log:
            model = await fetch_model(log, trained)
            with (
                _embedder(app, model.embedder) as embedder,
                progress_bar(len(tests), "score", show) as tick,
            ):
                preds = score(
                    model, tests, embedder, on_progress=lambda n, t: tick(n * len(tests) // t)
                )
            new = await record_predictions(log, model, preds, source=source) if record else 0
            return preds, new

    preds, new = run(go())
    if record:
        _state(app)  # fold the new predictions
    return preds, trained.model_id, new


def _render_predictions(preds: Sequence[Prediction], model_id: str, as_json: bool) -> None:
    if as_json:
        print_json(
            [
                {
                    "project": p.project,
                    "test": p.test,
                    "probability": p.probability,
                    "flaky": p.flaky,
                }
                for p in preds
            ]
        )
        return
    rows: list[list[Cell]] = [
        [p.project, p.test, f"{p.probability:.3f}", "flaky" if p.flaky else ""]
        for p in sorted(preds, key=lambda p: -p.probability)
    ]
    emit_table(
        [Column("project"), Column("test"), Column("probability", "right"), Column("verdict")],
        rows,
        title=f"model {model_id}: {sum(p.flaky for p in preds)} of {len(preds)} predicted flaky",
    )


@flaky_model.command()
@click.argument("file", type=ExistingPath(dir_okay=False, path_type=Path))
@click.option(
    "--model", "model_id", default="latest", show_default=True, help="Model id or digest."
)
@click.option("--record", is_flag=True, help="Also append the predictions to the log.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@output_options
@pass_app
def predict(
    app: AppContext, file: Path, model_id: str, record: bool, quiet: bool, as_json: bool
) -> None:
    """Score every test of FILE (JSON lines, .gz ok: project, test, code): one row each,
    {project, test, probability, flaky}."""
    tests = _load(file, labelled=False)
    preds, used, _ = _predict(app, tests, model_id, record, str(file), not (quiet or as_json))
    _render_predictions(preds, used, as_json)


@flaky_model.command(name="predict-pytest")
@click.argument("node_ids", nargs=-1, required=True, metavar="NODE_ID...")
@click.option(
    "--root",
    default=".",
    show_default=True,
    type=ExistingPath(file_okay=False, path_type=Path),
    help="The directory node ids are relative to.",
)
@click.option("--project", default="", help="Project name on the predictions [the root's name].")
@click.option(
    "--model", "model_id", default="latest", show_default=True, help="Model id or digest."
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@output_options
@pass_app
def predict_pytest(
    app: AppContext,
    node_ids: tuple[str, ...],
    root: Path,
    project: str,
    model_id: str,
    quiet: bool,
    as_json: bool,
) -> None:
    """Score this project's pytest tests (source read from each node id) and record the
    predictions in the log, where `aqe flaky --predicted` shows them."""
    from aqe.flakemodel.data import TestCode
    from aqe.flakemodel.pysource import pytest_source

    name = project or root.resolve().name
    tests = [TestCode(project=name, test=n, code=pytest_source(n, root)) for n in node_ids]
    preds, used, new = _predict(app, tests, model_id, True, str(root), not (quiet or as_json))
    _render_predictions(preds, used, as_json)
    if not as_json:
        console(stderr=True).print(f"[dim]{new} new prediction events[/dim]")


@flaky_model.command(name="list")
@output_options
@pass_app
def list_(app: AppContext, as_json: bool) -> None:
    """Trained flakiness models, newest last."""
    import msgspec

    state = _state(app)
    models = sorted(state.models.values(), key=lambda m: m.seq)
    if as_json:
        print_json([msgspec.to_builtins(m) for m in models])
        return
    names = ("model", "digest", "tests", "flaky", "threshold", "trained on")
    emit_table(
        [Column(n) for n in names],
        [
            [m.model_id, m.digest[:16], m.tests, m.flaky, f"{m.threshold:.3f}", m.trained_on]
            for m in models
        ],
        title=f"{len(models)} flakiness models",
    )


def show_predicted(
    app: AppContext, tests: list[dict[str, Any]], as_json: bool, refresh: bool
) -> None:
    """``aqe flaky --predicted``: predicted-flaky tests beside the observed verdicts,
    each with the top remedies from the pattern library."""
    state = _state(app, refresh)
    observed = {r["test_id"]: r for r in tests}
    chosen = sorted(
        (
            (test_id, p)
            for test_id, p in state.predictions.items()
            if p.flaky or observed.get(test_id, {}).get("status") == "flaky"
        ),
        key=lambda item: -item[1].probability,
    )
    remedies = _remedies(app, [(t, p.source) for t, p in chosen])
    rows: list[dict[str, Any]] = []
    for test_id, p in chosen:
        row = observed.get(test_id)
        rows.append(
            {
                "test_id": test_id,
                "probability": p.probability,
                "predicted_flaky": p.flaky,
                "model_id": p.model_id,
                "observed_status": row["status"] if row else None,
                "flip_rate": row["flip_rate"] if row else None,
                "remedies": remedies.get(test_id, []),
            }
        )
    if as_json:
        print_json(rows)
        return
    if not rows:
        console().print(
            f"no predicted or observed flaky tests ({len(state.predictions)} predictions; "
            "`aqe flaky-model predict-pytest` records them)"
        )
        return
    emit_table(
        [
            Column("test"),
            Column("predicted", "right"),
            Column("observed"),
            Column("flip", "right"),
            Column("top remedies"),
        ],
        [
            [
                r["test_id"],
                f"{r['probability']:.2f}" + (" flaky" if r["predicted_flaky"] else ""),
                r["observed_status"] or "-",
                "-" if r["flip_rate"] is None else f"{r['flip_rate'] * 100:.0f}%",
                "; ".join(r["remedies"]) or "-",
            ]
            for r in rows
        ],
        title=f"flaky tests, predicted ({sum(r['predicted_flaky'] for r in rows)}) and observed",
    )


def _remedies(app: AppContext, tests: list[tuple[str, str]], k: int = 2) -> dict[str, list[str]]:
    """Top ``k`` pattern names per test: the pattern search asked with the test's source
    signals (nothing when the library is empty)."""
    if not tests:
        return {}
    from aqe.flakemodel.features import signal_counts
    from aqe.flakemodel.pysource import pytest_source
    from aqe.search.engine import PatternSearch

    directory = projections_root(app) / "patterns"
    if not directory.exists():
        return {}
    searcher = PatternSearch.open(directory)
    if not len(searcher):
        return {}
    out: dict[str, list[str]] = {}
    for test_id, source in tests:
        try:
            code = pytest_source(test_id, Path(source or "."))
        except AqeError:  # a test whose source is gone still gets a query
            code = test_id
        signals = [n for n, c in signal_counts(code).items() if c and n not in ("lines", "assert")]
        query = "flaky test " + " ".join(signals) + "\n" + code[:400]
        # Remedies first: the library's flakiness patterns, then anything that matches.
        result = searcher.search(query, mode="hybrid", k=k, category=REMEDY_CATEGORY)
        if not result.hits:
            result = searcher.search(query, mode="hybrid", k=k)
        out[test_id] = [hit.name for hit in result.hits]
    return out
