"""Embedding speed per backend against torch fp32 in the same run: queries and snippets.

Run with ``just bench`` (or ``python tests/benchmarks/bench_embed.py``; ``--help``).

Texts are the CoSQA dev queries and code snippets (``../shared/data/cosqa``; generated
texts when it is missing). Each backend gets a fresh in-memory embedder (no cache: the
model runs for every text): the queries are embedded one at a time, as a search does,
and the snippets in one batched call, as indexing does. Printed per backend: load
seconds, query p50 ms, queries/s and snippets/s with their ratios to torch fp32, and
the cosine of every vector to torch fp32's (min, 1st percentile). Same code as
``aqe patterns bench-embed`` (:mod:`aqe.search.embedbench`). It asserts no time.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import msgspec
from bench_search import load_corpus

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
    if args.json:
        print(json.dumps(msgspec.to_builtins(rows), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
