"""``aqe patterns``: add, import, search and evaluate the pattern library."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from aqe.app import AppContext, open_log, projections_root, run
from aqe.cli._context import ExistingPath, console, json_option, pass_app, print_json
from aqe.cli._projections import catch_up, progress_bar
from aqe.cli._table import Column, emit_table, output_options

if TYPE_CHECKING:
    from aqe.events import PatternAdded
    from aqe.search.engine import Mode, SearchResult

_MODES = ["keyword", "semantic", "hybrid"]


def _weights(value: str | None) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        keyword, semantic = (float(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: give two numbers, keyword,semantic (e.g. 0.6,0.4)", param_hint="--weights"
        ) from None
    if keyword < 0 or semantic < 0 or keyword + semantic == 0:
        raise click.BadParameter("weights must be >= 0 and not both 0", param_hint="--weights")
    return keyword, semantic


def _embed_lines(enabled: bool, every_s: float = 2.0) -> Callable[[int, int], None] | None:
    """Progress lines for the embedding a fold does (printed above the fold's bar)."""
    if not enabled:
        return None
    err = console(stderr=True)
    state = {"start": 0.0, "first": -1.0, "last": 0.0}

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if state["first"] < 0:  # the cache lookup: what was already there
            state.update(start=now, first=done, last=now)
            if done < total:
                err.print(f"embedding {total - done:,} of {total:,} patterns ({done:,} cached)")
            return
        if done < total and now - state["last"] < every_s:
            return
        state["last"] = now
        rate = (done - state["first"]) / max(now - state["start"], 1e-9)
        err.print(f"embedded {done:,}/{total:,} patterns ({rate:,.1f} a second)")

    return report


async def _publish(app: AppContext, patterns: list[PatternAdded], quiet: bool) -> tuple[int, int]:
    from aqe.log import NewEvent
    from aqe.search.projection import PatternsProjection

    async with open_log(app) as log:
        with progress_bar(len(patterns), "publish", not quiet) as tick:
            new = 0
            for start in range(0, len(patterns), 500):
                chunk = patterns[start : start + 500]
                results = await log.append_many([NewEvent(event=p) for p in chunk])
                new += sum(not r.duplicate for r in results)
                tick(start + len(chunk))
        projection = PatternsProjection(on_embed=_embed_lines(not quiet))
        skipped = await catch_up(log, app, projection, quiet=quiet)
    if skipped:
        console(stderr=True).print(f"search indexes not refreshed: {skipped}")
    return new, len(patterns) - new


@click.group()
def patterns() -> None:
    """The pattern library: reusable test patterns with hybrid search."""


@patterns.command(name="import")
@click.argument("paths", nargs=-1, type=ExistingPath(path_type=Path))
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@json_option
@pass_app
def import_(app: AppContext, paths: tuple[Path, ...], quiet: bool, as_json: bool) -> None:
    """Import patterns from TOML/JSON/JSONL files or directories (default: the starter library).

    Each pattern becomes a `patterns.pattern.added.v1` event with a content-derived id,
    so importing the same files again adds nothing; then the search indexes are
    rebuilt (embeddings come from a cache, so unchanged text is never re-embedded).
    """
    from aqe.search.starter import load_pattern_files, load_starter_library, pattern_files

    if paths:
        files: list[Path] = []
        for path in paths:
            files.extend(pattern_files(path) if path.is_dir() else [path])
        if not files:
            raise click.BadParameter(
                "no .toml/.json/.jsonl pattern files found", param_hint="PATHS"
            )
        library = load_pattern_files(files)
        source = f"{len(files)} file(s)"
    else:
        library = load_starter_library()
        source = "the starter library"
    started = time.monotonic()
    new, dups = run(_publish(app, library, quiet or as_json))
    if as_json:
        print_json({"patterns": len(library), "appended": new, "duplicates": dups})
        return
    console().print(
        f"imported {len(library)} patterns from {source}: {new} new, {dups} already in the "
        f"library ({time.monotonic() - started:.1f} s)"
    )


@patterns.command()
@click.option("--id", "pattern_id", required=True, help="Stable id (kebab-case).")
@click.option("--name", required=True, help="Short title.")
@click.option("--code", required=True, help="The snippet, or @FILE to read it from a file.")
@click.option("--description", default="", help="When to use it and why it works.")
@click.option("--category", default="", help="e.g. fixtures, flakiness, async.")
@click.option("--language", default="python", show_default=True)
@click.option("--framework", default="", help="e.g. pytest, hypothesis, junit5.")
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@json_option
@pass_app
def add(
    app: AppContext,
    pattern_id: str,
    name: str,
    code: str,
    description: str,
    category: str,
    language: str,
    framework: str,
    tags: tuple[str, ...],
    as_json: bool,
) -> None:
    """Add (or replace) one pattern."""
    from aqe.events import PatternAdded

    if code.startswith("@"):
        source = Path(code[1:])
        try:
            code = source.read_text(encoding="utf-8")
        except OSError as exc:
            raise click.BadParameter(f"{source}: {exc.strerror}", param_hint="--code") from None
    pattern = PatternAdded(
        pattern_id=pattern_id,
        name=name,
        code=code,
        description=description,
        category=category,
        language=language,
        framework=framework,
        tags=tags,
    )
    new, _ = run(_publish(app, [pattern], True))
    if as_json:
        print_json({"pattern_id": pattern_id, "added": bool(new)})
        return
    console().print(f"{pattern_id}: {'added' if new else 'already in the library, unchanged'}")


@patterns.command()
@click.argument("query")
@click.option("--mode", type=click.Choice(_MODES), default="hybrid", show_default=True)
@click.option("-k", "--limit", "k", default=5, show_default=True, type=click.IntRange(1, 1000))
@click.option("--category", help="Only this category.")
@click.option("--framework", help="Only this framework.")
@click.option("--language", help="Only this language.")
@click.option("--rrf-k", type=click.IntRange(min=1), help="RRF rank constant [default 5].")
@click.option("--weights", metavar="KW,SEM", help="Hybrid weights [default 0.2,0.8].")
@click.option("--code/--no-code", "show_code", default=False, help="Print each hit's code.")
@click.option("--offline", is_flag=True, help="Do not fold new pattern events first.")
@output_options
@pass_app
def search(
    app: AppContext,
    query: str,
    mode: Mode,
    k: int,
    category: str | None,
    framework: str | None,
    language: str | None,
    rrf_k: int | None,
    weights: str | None,
    show_code: bool,
    offline: bool,
    as_json: bool,
) -> None:
    """Find patterns for QUERY by keyword (BM25), meaning (MiniLM) or both (RRF)."""
    from aqe.search.engine import DEFAULT_RRF_K, DEFAULT_WEIGHTS, PatternSearch
    from aqe.search.projection import PatternsProjection

    chosen = _weights(weights) or DEFAULT_WEIGHTS
    if not offline:

        async def refresh() -> str | None:
            async with open_log(app) as log:
                return await catch_up(log, app, PatternsProjection(), quiet=True)

        skipped = run(refresh())
        if skipped:
            console(stderr=True).print(f"[dim]not refreshed: {skipped}[/dim]")
    with contextlib.ExitStack() as stack:
        bars: list[Callable[[int], None]] = []

        def reembed(done: int, total: int) -> None:
            # Only when the index was built by another embedding backend or precision.
            if not bars:
                label = "re-embed (embedding backend changed)"
                bars.append(stack.enter_context(progress_bar(total, label, not as_json)))
            bars[0](done)

        searcher = PatternSearch.open(
            projections_root(app) / "patterns", reembed="off", on_reembed=reembed
        )
    if searcher.pending_model is not None:
        console(stderr=True).print(
            f"[dim]answered with {searcher.embedder.model_version}, the search set's "
            f"embedder; {searcher.pending_model} is configured: `aqe patterns reembed` "
            "switches (progress; resumes after an interruption)[/dim]"
        )
    result = searcher.search(
        query,
        mode=mode,
        k=k,
        category=category,
        framework=framework,
        language=language,
        rrf_k=rrf_k or DEFAULT_RRF_K,
        weights=chosen,
    )
    if as_json:
        import msgspec

        data = msgspec.to_builtins(result)
        data["timings"]["total_ms"] = round(result.timings.total_ms, 3)
        print_json(data)
        return
    _render(result, len(searcher), show_code)


def _render(result: SearchResult, size: int, show_code: bool) -> None:
    from rich.syntax import Syntax

    out = console()
    t = result.timings
    title = (
        f"{result.mode} search over {size} patterns: {len(result.hits)} hits in "
        f"{t.total_ms:.1f} ms (embed {t.embed_ms:.1f}, keyword {t.keyword_ms:.1f}, "
        f"vector {t.vector_ms:.1f}, fuse {t.fuse_ms:.1f})"
    )
    names = ("#", "pattern", "name", "category", "framework", "score", "kw", "sem")
    emit_table(
        [Column(name, "right" if name in ("#", "score") else "left") for name in names],
        [
            [
                i,
                hit.pattern_id,
                hit.name,
                hit.category,
                hit.framework,
                f"{hit.score:.4f}",
                hit.keyword_rank,
                hit.semantic_rank,
            ]
            for i, hit in enumerate(result.hits, start=1)
        ],
        title=title,
    )
    if show_code:
        for hit in result.hits:
            out.print(f"[bold]{hit.pattern_id}[/bold]: {hit.description}")
            out.print(Syntax(hit.code, hit.language or "python", theme="ansi_dark"))


def _dataset_dir(ctx: click.Context, param: click.Parameter, value: str) -> Path:
    from aqe.datasets import resolve_dataset

    path = resolve_dataset(value)
    if path is None or not path.is_dir():
        raise click.BadParameter(f"{value!r}: no such data set or directory", ctx, param)
    return path


@patterns.command(name="eval")
@click.argument("dataset", metavar="NAME|DIR", callback=_dataset_dir)
@click.option(
    "--mode",
    "modes",
    type=click.Choice([*_MODES, "all"]),
    default="all",
    show_default=True,
    help="Which search mode(s) to evaluate.",
)
@click.option("--max-queries", type=click.IntRange(min=1), help="Evaluate the first N queries.")
@click.option("--rrf-k", type=click.IntRange(min=1), help="RRF rank constant [default 5].")
@click.option("--weights", metavar="KW,SEM", help="Hybrid weights [default 0.2,0.8].")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@output_options
@pass_app
def eval_(
    app: AppContext,
    dataset: Path,
    modes: str,
    max_queries: int | None,
    rrf_k: int | None,
    weights: str | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Relevance of each search mode on DATASET: nDCG@10, MRR and Recall@10.

    DATASET is `cosqa` (the CoSQA dev split shipped in data/), a BEIR-style directory
    (corpus.jsonl, queries.jsonl, qrels/test.tsv) or the CoSQA layout (code_idx_map.txt +
    cosqa-retrieval-dev-500.json, gzipped or not). The corpus is
    indexed in memory; its embeddings go through the persistent cache, so a second
    evaluation embeds nothing.
    """
    from aqe.search.engine import DEFAULT_RRF_K, DEFAULT_WEIGHTS, PatternSearch
    from aqe.search.metrics import dataset_library, evaluate, load_dataset
    from aqe.search.projection import active_ids, cache_dir_for, embedding_text

    chosen = _weights(weights) or DEFAULT_WEIGHTS
    data = load_dataset(dataset)
    if max_queries:
        import msgspec

        keep = data.judged()[:max_queries]
        data = msgspec.structs.replace(data, queries={q: data.queries[q] for q in keep})
    state = dataset_library(data)
    from aqe.search.embed import Embedder

    embedder = Embedder(cache_dir_for(projections_root(app) / "patterns"))
    show = not (quiet or as_json)
    started = time.monotonic()
    with progress_bar(len(state.patterns), "embed corpus", show) as tick:
        # Warm the cache with progress; building the index then finds every vector.
        ids = active_ids(state)
        embedder.embed([embedding_text(state.patterns[i]) for i in ids], on_progress=tick)
    searcher = PatternSearch.from_state(state, embedder)
    index_s = time.monotonic() - started
    rows = []
    chosen_modes: list[Mode] = ["keyword", "semantic", "hybrid"]
    if modes != "all":
        chosen_modes = [m for m in chosen_modes if m == modes]
    for mode in chosen_modes:

        def ask(query: str, k: int, mode: Mode = mode) -> list[str]:
            result = searcher.search(
                query, mode=mode, k=k, rrf_k=rrf_k or DEFAULT_RRF_K, weights=chosen
            )
            return [hit.pattern_id for hit in result.hits]

        with progress_bar(len(data.judged()), f"eval {mode}", show) as tick:
            result = evaluate(ask, data, k=10, on_progress=tick)
        rows.append(
            {
                "mode": mode,
                "ndcg_at_10": result.ndcg,
                "mrr": result.mrr,
                "recall_at_10": result.recall,
                "p50_ms": result.latency_p50_ms,
                "p95_ms": result.latency_p95_ms,
            }
        )
    summary = {
        "dataset": data.name,
        "corpus": len(data.corpus),
        "queries": len(data.judged()),
        "index_s": round(index_s, 2),
        "embedding_cache": {"hits": embedder.hits, "misses": embedder.misses},
        "rrf_k": rrf_k or DEFAULT_RRF_K,
        "weights": list(chosen),
        "results": rows,
    }
    if as_json:
        print_json(summary)
        return
    names = ("mode", "nDCG@10", "MRR", "Recall@10", "p50 ms", "p95 ms")
    emit_table(
        [Column(name, "left" if name == "mode" else "right") for name in names],
        [
            [
                str(row["mode"]),
                f"{row['ndcg_at_10']:.4f}",
                f"{row['mrr']:.4f}",
                f"{row['recall_at_10']:.4f}",
                f"{row['p50_ms']:.2f}",
                f"{row['p95_ms']:.2f}",
            ]
            for row in rows
        ],
        title=f"{data.name}: {len(data.corpus)} docs, {len(data.judged())} queries "
        f"(indexed in {index_s:.1f} s; embedding cache {embedder.hits} hits, "
        f"{embedder.misses} misses)",
    )


@patterns.command()
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@output_options
@pass_app
def reembed(app: AppContext, quiet: bool, as_json: bool) -> None:
    """Re-embed the library with the configured embedder (AQE_EMBED) and swap it in.

    Searches keep answering from the old vectors (with their own embedder) until the
    new search set is complete; it then replaces the old one in one rename. Finished
    batches stay in the embedding cache: an interrupted run resumes where it stopped,
    and switching back to an embedder used before computes nothing.
    """
    from aqe.search.projection import PatternsProjection
    from aqe.search.reembed import reembed_search_set

    directory = projections_root(app) / "patterns"
    embedder = PatternsProjection().embedder(directory)
    show = not (quiet or as_json)
    with contextlib.ExitStack() as stack:
        bars: list[Callable[[int], None]] = []

        def tick(done: int, total: int) -> None:
            if not bars:
                label = f"re-embed with {embedder.model_version.rsplit('/', 1)[-1]}"
                bars.append(stack.enter_context(progress_bar(total, label, show)))
            bars[0](done)

        report = reembed_search_set(directory, embedder, tick)
    embedder.close()
    if as_json:
        import msgspec

        print_json(msgspec.to_builtins(report))
        return
    if not report.changed:
        console().print(f"{report.patterns} patterns already embedded with {report.target}")
        return
    console().print(
        f"re-embedded {report.patterns} patterns: {report.source or 'no search set'} -> "
        f"{report.target} ({report.computed} computed, {report.cached} from the cache, "
        f"{report.seconds:.1f} s)"
    )


_EMBED_CHOICES = ["torch-fp32", "torch-bf16", "onnx-fp32", "onnx-int8"]


@patterns.command(name="bench-embed")
@click.option(
    "--backend",
    "choices",
    type=click.Choice(_EMBED_CHOICES),
    multiple=True,
    help="A backend-precision to measure (repeatable) [default: torch-fp32, onnx-fp32, "
    "onnx-int8]; torch-fp32 is always measured as the reference.",
)
@click.option(
    "--dataset",
    default="cosqa",
    show_default=True,
    callback=_dataset_dir,
    help="Where the queries and snippets come from (NAME|DIR).",
)
@click.option(
    "--queries",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Queries embedded one at a time per backend.",
)
@click.option(
    "--snippets",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Code snippets embedded in one batch per backend.",
)
@click.option(
    "--ndcg",
    is_flag=True,
    help="Also evaluate nDCG@10 on the whole data set per backend (embeds its corpus "
    "once per backend through the cache: minutes the first time).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress.")
@output_options
@pass_app
def bench_embed(
    app: AppContext,
    choices: tuple[str, ...],
    dataset: Path,
    queries: int,
    snippets: int,
    ndcg: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Measure the embedding backends on this machine and print the table.

    Single queries (each alone, as a search embeds it) and batched code snippets per
    backend and precision, against torch fp32 in the same run; cosine of each vector to
    fp32 (min and 1st percentile); with --ndcg, nDCG@10 of semantic and hybrid search.
    Ends with the recommended default (set it with AQE_EMBED=<backend>-<precision>).
    """
    from aqe.search.embedbench import DEFAULT_CHOICES, measure, ndcg_by_backend, recommend
    from aqe.search.metrics import load_dataset
    from aqe.search.projection import cache_dir_for

    data = load_dataset(dataset)
    query_texts = [data.queries[q] for q in data.judged()[:queries]]
    corpus = [doc.code or doc.description for doc in data.corpus.values()]
    # Spread over the corpus: a data set's first documents are rarely typical in length.
    snippet_texts = corpus[:: max(1, len(corpus) // snippets)][:snippets]
    picked = [tuple(c.split("-", 1)) for c in choices] or list(DEFAULT_CHOICES)
    show = not (quiet or as_json)
    err = console(stderr=True)

    def say(label: str) -> None:
        if show:
            err.print(f"measuring {label} ...")

    speeds = measure(picked, query_texts, snippet_texts, on_progress=say)  # type: ignore[arg-type]
    quality = []
    if ndcg:
        bars: dict[str, Callable[[int], None]] = {}
        with contextlib.ExitStack() as stack:

            def tick(label: str, done: int, total: int) -> None:
                if label not in bars:
                    bars[label] = stack.enter_context(progress_bar(total, label, show))
                bars[label](done)

            quality = ndcg_by_backend(
                data,
                picked,  # type: ignore[arg-type]
                cache_dir_for(projections_root(app) / "patterns"),
                on_progress=tick,
            )
    best = recommend(speeds, quality)
    if as_json:
        import msgspec

        print_json(
            {
                "dataset": data.name,
                "speed": msgspec.to_builtins(speeds),
                "ndcg": msgspec.to_builtins(quality),
                "recommended": f"{best.backend}-{best.precision}",
            }
        )
        return
    base = speeds[0]
    names = ("backend", "load s", "query p50 ms", "queries/s", "x fp32", "snippets/s", "x fp32")
    emit_table(
        [Column(n, "left" if n == "backend" else "right") for n in names]
        + [Column("cos min", "right"), Column("cos p1", "right")],
        [
            [
                f"{s.backend}-{s.precision}",
                f"{s.load_s:.1f}",
                f"{s.query_p50_ms:.2f}",
                f"{s.queries_per_s:.1f}",
                f"{s.queries_per_s / base.queries_per_s:.2f}",
                f"{s.snippets_per_s:.1f}",
                f"{s.snippets_per_s / base.snippets_per_s:.2f}",
                f"{s.cosine_min:.4f}",
                f"{s.cosine_p1:.4f}",
            ]
            for s in speeds
        ],
        title=f"{len(query_texts)} single queries, {len(snippet_texts)} snippets in one "
        f"batch ({data.name}); x fp32 = against torch fp32 in this run",
    )
    if quality:
        ref = quality[0]
        emit_table(
            [Column("backend", "left")]
            + [Column(n, "right") for n in ("semantic nDCG@10", "Δ", "hybrid nDCG@10", "Δ")],
            [
                [
                    f"{q.backend}-{q.precision}",
                    f"{q.semantic_ndcg:.4f}",
                    f"{q.semantic_ndcg - ref.semantic_ndcg:+.4f}",
                    f"{q.hybrid_ndcg:.4f}",
                    f"{q.hybrid_ndcg - ref.hybrid_ndcg:+.4f}",
                ]
                for q in quality
            ],
            title=f"{data.name}: {len(data.corpus)} docs, {len(data.judged())} queries",
        )
    console().print(
        f"recommended on this machine: AQE_EMBED={best.backend}-{best.precision} "
        f"({best.queries_per_s:.0f} queries/s, {best.snippets_per_s:.0f} snippets/s)"
    )
