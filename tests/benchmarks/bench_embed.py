"""Embedding speed per backend against torch fp32 in the same run: queries and snippets.

Run with ``just bench`` (or ``python tests/benchmarks/bench_embed.py``; ``--help``).

Texts are the CoSQA dev queries and code snippets (``../shared/data/cosqa``; generated
texts when it is missing). Each backend gets a fresh in-memory embedder (no cache: the
model runs for every text): the queries are embedded one at a time, as a search does,
and the snippets in one batched call, as indexing does. Printed per backend: load
seconds, query p50 ms, queries/s and snippets/s with their ratios to torch fp32, and
the cosine of every vector to torch fp32's (min, 1st percentile). Same code as
``aqe patterns bench-embed`` (:mod:`aqe.search.embedbench`). Then indexing
(``--index N``, default 1,000): N snippets through a fresh persistent cache with the
default backend on every usable CPU, against one worker on the same chunks in the same
run. It asserts no time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import msgspec
from bench_search import load_corpus

from aqe.search.embed import Embedder, _usable_cpus
from aqe.search.embedbench import DEFAULT_CHOICES, measure, recommend


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=100, help="single queries per backend")
    parser.add_argument("--snippets", type=int, default=64, help="snippets in the batch")
    parser.add_argument(
        "--backends",
        default=",".join(f"{b}-{p}" for b, p in DEFAULT_CHOICES),
        help="comma-separated backend-precision pairs (torch-bf16 too)",
    )
    parser.add_argument(
        "--index", type=int, default=1000, help="snippets for the indexing run (0: skip)"
    )
    parser.add_argument("--json", action="store_true", help="also print a JSON summary")
    args = parser.parse_args(argv)
    snippets, queries, source = load_corpus(None)
    choices = [tuple(c.split("-", 1)) for c in args.backends.split(",") if c]
    # Spread over the corpus: the first snippets are not typical in length.
    step = max(1, len(snippets) // args.snippets)
    batch = snippets[::step][: args.snippets]
    print(
        f"texts: {source}, {min(args.queries, len(queries))} single queries, "
        f"{len(batch)} snippets in one batch"
    )
    rows = measure(choices, queries[: args.queries], batch)  # type: ignore[arg-type]
    base = rows[0]
    print(
        f"{'backend':<13}{'load s':>8}{'query p50 ms':>14}{'queries/s':>11}{'x fp32':>8}"
        f"{'snippets/s':>12}{'x fp32':>8}{'cos min':>9}{'cos p1':>9}"
    )
    for r in rows:
        print(
            f"{r.backend + '-' + r.precision:<13}{r.load_s:>8.1f}{r.query_p50_ms:>14.2f}"
            f"{r.queries_per_s:>11.1f}{r.queries_per_s / base.queries_per_s:>8.2f}"
            f"{r.snippets_per_s:>12.1f}{r.snippets_per_s / base.snippets_per_s:>8.2f}"
            f"{r.cosine_min:>9.4f}{r.cosine_p1:>9.4f}"
        )
    best = recommend(rows)
    print(f"fastest that keeps cosine p1 >= 0.98: {best.backend}-{best.precision}")
    indexing = bench_index(snippets, args.index) if args.index else None
    if args.json:
        print(json.dumps({"speed": msgspec.to_builtins(rows), "indexing": indexing}, indent=2))
    return 0


def bench_index(snippets: Sequence[str], n: int, chunk: int = 100) -> dict[str, float]:
    """Index ``n`` CoSQA snippets through a fresh persistent cache: all cores vs one.

    The default backend, as ``aqe patterns import`` embeds a library: batches of 64,
    each committed to the cache. The same chunks go through an embedder limited to
    one worker and one on every usable CPU, alternately, so both see the same load.
    """
    step = max(1, len(snippets) // n)
    texts = list(snippets[::step][:n])
    with tempfile.TemporaryDirectory(prefix="bench-index-") as tmp:
        embedders = {
            "one core": Embedder(Path(tmp) / "one", workers=1),
            "all cores": Embedder(Path(tmp) / "all"),
        }
        for embedder in embedders.values():
            embedder.embed(["load the model before timing"])
        spent = dict.fromkeys(embedders, 0.0)
        for start in range(0, len(texts), chunk):
            part = texts[start : start + chunk]
            for name, embedder in embedders.items():
                began = time.perf_counter()
                embedder.embed(part)
                spent[name] += time.perf_counter() - began
            done = start + len(part)
            print(
                f"  indexed {done:,}/{len(texts):,}: "
                + ", ".join(f"{k} {done / v:.1f}/s" for k, v in spent.items()),
                file=sys.stderr,
            )
        version = embedders["all cores"].model_version
        for embedder in embedders.values():
            embedder.close()
    rates = {k: len(texts) / v for k, v in spent.items()}
    print(
        f"indexing {len(texts):,} CoSQA snippets with {version} through a fresh cache "
        f"({_usable_cpus()} usable CPUs): all cores {rates['all cores']:.1f} snippets/s, "
        f"one core {rates['one core']:.1f} (x{rates['all cores'] / rates['one core']:.2f})"
    )
    return {"snippets": len(texts), **{f"{k} per s": v for k, v in rates.items()}}


if __name__ == "__main__":
    sys.exit(main())
