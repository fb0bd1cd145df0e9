"""Pattern search latency at 10,000 and 100,000 patterns: embed / keyword / vector / fuse.

Run with ``just bench`` (or ``python tests/benchmarks/bench_search.py``; ``--help`` for
sizes, rounds and the cache directory).

Data. The corpus is CoSQA (``../shared/data/cosqa``): 6,267 real Python snippets and
500 real web queries, embedded by the real all-MiniLM-L6-v2 through
:class:`aqe.search.embed.Embedder` and its persistent cache (``.aqe/bench/embeddings``
by default), so only the first run pays for the model (several minutes on 2 cores).
Every size holds the 6,267 real vectors; the rest are *real-model-like*: each blends a
real vector with one of its 20 nearest real neighbours plus noise (cosine to its source
about 0.9). Keyword documents carry the source snippet as code and a generated name,
tags and category. Without CoSQA it falls back to generated pattern texts (and says so).

Per query, as :class:`aqe.search.engine.PatternSearch` does it: ``embed_query`` →
``KeywordIndex.search`` (50) → ``VectorIndex.search`` (50) → ``rrf`` (k 60, weights
0.6/0.4, 10 results). It prints p50/p99 of each stage, recall@10 of the vector path
against exact search on the 500 real queries, end-to-end QPS warm (repeated queries:
LRU) and cold (queries never seen: the model runs, on the default embedding backend,
``AQE_EMBED``, with a fresh persistent cache as a search has; the same unseen queries
through torch fp32 are timed in the same run as the baseline unless
``--no-torch-baseline``, and alternately with the cold ones through the query path as
it was before 2026-12-08, ``embed([query])``: one cache commit per query; with the
process CPU time a cold query costs, which contention does not inflate as it does wall
time), and the NumPy exact dot-product
baseline (matmul + argpartition) measured in the same loop, as a ratio. It asserts
no time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aqe.datasets import dataset_path, find_file, open_text
from aqe.search.embed import Embedder
from aqe.search.vector import TARGET_RECALL, VectorIndex

ROOT = Path(__file__).resolve().parents[2]
DEPTH = 50  # candidates each side hands to the fusion (engine.CANDIDATES)
K = 10
CATEGORIES = ("fixtures", "mocking", "time", "network", "io", "parsing", "async", "data")
FRAMEWORKS = ("pytest", "unittest", "hypothesis", "jest")


def load_corpus(limit: int | None) -> tuple[list[str], list[str], str]:
    """(snippets, queries, where they came from)."""
    cosqa = dataset_path("cosqa")
    code_map = find_file(cosqa / "code_idx_map.txt") if cosqa else None
    dev = find_file(cosqa / "cosqa-retrieval-dev-500.json") if cosqa else None
    if code_map is not None and dev is not None:
        with open_text(code_map) as fh:
            snippets = list(json.load(fh))
        with open_text(dev) as fh:
            queries = [row["doc"] for row in json.load(fh)]
        source = "CoSQA"
    else:
        rng = np.random.default_rng(0)
        verbs = ("parse", "retry", "mock", "freeze", "publish", "assert", "load", "compare")
        nouns = ("http header", "json file", "clock", "queue", "database row", "csv", "token")
        snippets = [
            f"def test_{v}_{n.replace(' ', '_')}_{i}():\n    # {v} the {n} in tests\n    ..."
            for i, (v, n) in enumerate(
                (verbs[a], nouns[b])
                for a, b in rng.integers(0, [len(verbs), len(nouns)], size=(2000, 2))
            )
        ]
        queries = [f"how to {v} a {n} in a test" for v in verbs for n in nouns]
        source = "generated (CoSQA not found)"
    if limit is not None:
        snippets = snippets[:limit]
    return snippets, queries, source


def grow(real: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` vectors: the real ones, then blends of real neighbours plus noise."""
    base = len(real)
    if n <= base:
        return real[:n], np.arange(n)
    rng = np.random.default_rng(seed)
    neighbours = np.empty((base, 20), dtype=np.intp)
    for start in range(0, base, 1024):
        sims = real[start : start + 1024] @ real.T
        neighbours[start : start + 1024] = np.argpartition(-sims, 21, axis=1)[:, 1:21]
    extra = n - base
    source = rng.integers(0, base, extra)
    partner = neighbours[source, rng.integers(0, 20, extra)]
    mix = rng.uniform(0.0, 1.0, (extra, 1)).astype(np.float32)
    noise = rng.standard_normal((extra, real.shape[1])).astype(np.float32)
    blended = real[source] + mix * real[partner] + 0.4 * noise / np.sqrt(real.shape[1])
    blended /= np.linalg.norm(blended, axis=1, keepdims=True)
    return np.concatenate([real, blended]).astype(np.float32), np.concatenate(
        [np.arange(base), source]
    )


def keyword_docs(snippets: Sequence[str], source: np.ndarray) -> list[Any]:
    from aqe.search.keyword import KeywordDoc

    docs = []
    for i, s in enumerate(source.tolist()):
        code = snippets[s]
        first = code.split("(", 1)[0].removeprefix("def ").strip()[:60]
        docs.append(
            KeywordDoc(
                id=f"p{i:06d}",
                name=f"{first} {i}",
                description=code.split("\n", 1)[0][:120],
                code=code,
                tags=(CATEGORIES[i % len(CATEGORIES)], FRAMEWORKS[i % len(FRAMEWORKS)]),
                category=CATEGORIES[i % len(CATEGORIES)],
                framework=FRAMEWORKS[i % len(FRAMEWORKS)],
                language="python",
            )
        )
    return docs


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) * 1000


def numpy_top(matrix: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    scores = matrix @ query
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part])]


def run_queries(
    texts: Sequence[str],
    embed: Callable[[str], np.ndarray],
    keyword: Any,
    vectors: VectorIndex,
    rrf: Callable[..., list[tuple[str, float]]] | None,
    times: dict[str, list[float]],
) -> float:
    """One pass through the pipeline; per-stage seconds appended to ``times``."""
    clock = time.perf_counter
    began = clock()
    for text in texts:
        t0 = clock()
        query = embed(text)
        t1 = clock()
        kw = keyword.search(text, DEPTH) if keyword is not None else []
        t2 = clock()
        vec = vectors.search(query, DEPTH)
        t3 = clock()
        if rrf is not None:
            rrf([[p for p, _ in kw], [p for p, _ in vec]], k=60, weights=(0.6, 0.4), limit=K)
        t4 = clock()
        times["embed"].append(t1 - t0)
        times["keyword"].append(t2 - t1)
        times["vector"].append(t3 - t2)
        times["fuse"].append(t4 - t3)
        times["total"].append(t4 - t0)
    return clock() - began


def profile_cold(
    texts: Sequence[str],
    keyword: Any,
    vectors: VectorIndex,
    rrf: Callable[..., list[tuple[str, float]]] | None,
) -> None:
    """One cold query at a time: the pipeline's stages, the embedding alone, its parts.

    Per query: the pipeline as :func:`run_queries` runs it; then another unseen text
    embedded alone; then a third taken apart by hand (the cache lookup, the tokenizer,
    the ONNX run, and the one-row cache commit the query path made before 2026-12-08).
    Reaches into the embedder's internals (ONNX backend only): a profile, not an API.
    """
    from aqe.search.embed import _digest

    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        piped, alone = Embedder(Path(tmp) / "piped"), Embedder(Path(tmp) / "alone")
        for embedder in (piped, alone):
            embedder.embed(["load the model before timing"])
        if piped.backend != "onnx":
            print("profile: ONNX backends only")
            return
        encoder, store = piped._model, piped._store
        tokenizer, session = encoder._tokenizer, encoder._session(1)
        stages: dict[str, list[float]] = {}
        clock = time.perf_counter
        for i, text in enumerate(texts):
            one = {s: [] for s in ("embed", "keyword", "vector", "fuse", "total")}
            run_queries([text], piped.embed_query, keyword, vectors, rrf, one)
            for stage, values in one.items():
                stages.setdefault(f"pipeline: {stage}", []).extend(values)
            t0 = clock()
            alone.embed_query(f"{text} #{i}")
            stages.setdefault("embed alone, back to back", []).append(clock() - t0)
            probe = f"{text} ~{i}"
            t0 = clock()
            digest = _digest(probe)
            store.get_many(piped.model_version, [digest])
            t1 = clock()
            ids = np.array([tokenizer.encode(probe).ids], dtype=np.int64)
            t2 = clock()
            feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
            (out,) = session.run(None, {**feed, "token_type_ids": np.zeros_like(ids)})
            t3 = clock()
            store.put_many(piped.model_version, [(digest, out[0])])
            t4 = clock()
            for stage, spent in (
                ("embed part: cache lookup", t1 - t0),
                ("embed part: tokenize", t2 - t1),
                ("embed part: ONNX run", t3 - t2),
                ("embed part: one commit", t4 - t3),
            ):
                stages.setdefault(stage, []).append(spent)
        piped.close()
        alone.close()
    print(
        f"{'profile (cold, ' + str(len(texts)) + ')':<30}{'p50 ms':>9}{'mean ms':>9}{'p90 ms':>9}"
    )
    for stage, values in stages.items():
        mean = statistics.fmean(values) * 1000
        print(f"{stage:<30}{pct(values, 50):>9.3f}{mean:>9.3f}{pct(values, 90):>9.3f}")


def bench_size(
    n: int,
    real: np.ndarray,
    snippets: list[str],
    queries: list[str],
    query_vectors: np.ndarray,
    args: argparse.Namespace,
    cold: Embedder,
    warm: Embedder,
    baseline: Embedder | None,
    before: Embedder,
) -> dict[str, Any]:
    matrix, source = grow(real, n, args.seed)
    ids = [f"p{i:06d}" for i in range(n)]
    real_count = min(n, len(real))
    print(
        f"\n== {n:,} patterns: {real_count:,} real MiniLM vectors + "
        f"{n - real_count:,} real-model-like blends"
    )
    started = time.perf_counter()
    vectors = VectorIndex.build(ids, matrix, seed=args.seed)
    build_s = time.perf_counter() - started
    p = vectors.params
    shape = f"ivf nlist={p['nlist']} nprobe={p['nprobe']}" if vectors.kind == "ivf" else "exact"
    calib = p.get("calibration_recall")
    print(
        f"vector index: {shape}, built in {build_s:.1f} s"
        + (f" (calibration recall@10 {calib:.3f})" if calib is not None else "")
    )

    keyword = rrf = None
    try:
        from aqe.search.fusion import rrf as _rrf
        from aqe.search.keyword import KeywordIndex
    except ImportError as exc:
        print(f"note: keyword/fuse columns skipped ({exc})")
    else:
        started = time.perf_counter()
        keyword = KeywordIndex.build(keyword_docs(snippets, source))
        print(f"keyword index: built in {time.perf_counter() - started:.1f} s")
        rrf = _rrf

    found = 0
    for q in query_vectors:
        got = {pid for pid, _ in vectors.search(q, K)}
        found += len(got & {pid for pid, _ in vectors.exact(q, K)})
    recall = found / (K * len(query_vectors))

    # The NumPy baseline and the index, interleaved per query on the same vectors.
    index_s: list[float] = []
    numpy_s: list[float] = []
    for _ in range(args.rounds):
        for q in query_vectors:
            t0 = time.perf_counter()
            vectors.search(q, DEPTH)
            t1 = time.perf_counter()
            numpy_top(matrix, q, DEPTH)
            numpy_s.append(time.perf_counter() - t1)
            index_s.append(t1 - t0)
    mask = np.arange(n) % len(CATEGORIES) == 0  # one category of eight
    masked_s: list[float] = []
    for q in query_vectors:
        t0 = time.perf_counter()
        vectors.search(q, DEPTH, mask=mask)
        masked_s.append(time.perf_counter() - t0)

    warm_times: dict[str, list[float]] = {
        s: [] for s in ("embed", "keyword", "vector", "fuse", "total")
    }
    warm_query = warm.embed_query
    run_queries(queries, warm_query, keyword, vectors, rrf, {s: [] for s in warm_times})  # LRU
    warm_s = sum(
        run_queries(queries, warm_query, keyword, vectors, rrf, warm_times)
        for _ in range(args.rounds)
    )
    fresh = [f"{q} ({n})" for q in queries[: args.cold]]  # never embedded before
    cold_times: dict[str, list[float]] = {s: [] for s in warm_times}
    before_times: dict[str, list[float]] = {s: [] for s in warm_times}
    cold_s = before_s = cold_cpu = 0.0
    # Now and before, alternately in halves so both see the same load: the query path
    # as it is, and as it was (embed() per query: its bookkeeping and one cache commit).
    half = max(1, len(fresh) // 2)
    for part in (fresh[:half], fresh[half:]):
        cpu = time.process_time()
        cold_s += run_queries(part, cold.embed_query, keyword, vectors, rrf, cold_times)
        cold_cpu += time.process_time() - cpu
        old = [f"{q} <{n}>" for q in part]
        before_s += run_queries(
            old, lambda t: before.embed([t])[0], keyword, vectors, rrf, before_times
        )
    base_times: dict[str, list[float]] = {s: [] for s in warm_times}
    base_s = (
        run_queries(
            [f"{q} [{n}]" for q in fresh], baseline.embed_query, keyword, vectors, rrf, base_times
        )
        if baseline is not None
        else None
    )

    if args.profile:
        profile_cold([f"{q} {{{n}}}" for q in queries[: args.profile]], keyword, vectors, rrf)
    print(f"{'stage (warm)':<22}{'p50 ms':>10}{'p99 ms':>10}")
    for stage in ("embed", "keyword", "vector", "fuse", "total"):
        if stage in ("keyword", "fuse") and keyword is None:
            continue
        ts = warm_times[stage]
        print(f"{stage:<22}{pct(ts, 50):>10.3f}{pct(ts, 99):>10.3f}")
    cold_embed = cold_times["embed"]
    print(f"{'cold embed (model)':<22}{pct(cold_embed, 50):>10.3f}{pct(cold_embed, 99):>10.3f}")
    ts = before_times["embed"]
    print(f"{'cold embed, old path':<22}{pct(ts, 50):>10.3f}{pct(ts, 99):>10.3f}")
    ts = cold_times["total"]
    print(f"{'cold total':<22}{pct(ts, 50):>10.3f}{pct(ts, 99):>10.3f}")
    if base_times["embed"]:
        ts = base_times["embed"]
        print(f"{'cold embed torch fp32':<22}{pct(ts, 50):>10.3f}{pct(ts, 99):>10.3f}")
    print(f"{'vector, filter 1/8':<22}{pct(masked_s, 50):>10.3f}{pct(masked_s, 99):>10.3f}")
    print(f"{'numpy exact baseline':<22}{pct(numpy_s, 50):>10.3f}{pct(numpy_s, 99):>10.3f}")
    ratio = statistics.median(index_s) / statistics.median(numpy_s)
    verdict = "ok" if recall >= TARGET_RECALL else "BELOW TARGET"
    print(
        f"vector/numpy p50 ratio {ratio:.2f} ({statistics.median(index_s) * 1000:.3f} ms vs "
        f"{statistics.median(numpy_s) * 1000:.3f} ms)"
    )
    print(
        f"recall@10 vector vs exact: {recall:.3f} on {len(query_vectors)} real queries ({verdict})"
    )
    warm_qps = len(warm_times["total"]) / warm_s
    cold_qps = len(fresh) / cold_s
    before_qps = len(fresh) / before_s
    base_qps = len(fresh) / base_s if base_s else None
    print(
        f"QPS end to end: warm {warm_qps:,.0f}, cold {cold_qps:,.1f} with {cold.model_version}"
        f" (old query path {before_qps:,.1f}, x{cold_qps / before_qps:.2f};"
        f" CPU {cold_cpu / len(fresh) * 1000:.2f} ms a query = {len(fresh) / cold_cpu:,.0f}"
        " a second per core)"
        + (
            f", cold {base_qps:,.1f} with torch fp32 (x{cold_qps / base_qps:.2f})"
            if base_qps
            else ""
        )
        + f" ({len(fresh)} unseen queries)"
    )
    return {
        "size": n,
        "index": shape,
        "build_s": build_s,
        "recall_at_10": recall,
        "vector_p50_ms": statistics.median(index_s) * 1000,
        "numpy_p50_ms": statistics.median(numpy_s) * 1000,
        "ratio": ratio,
        "warm_total_p50_ms": pct(warm_times["total"], 50),
        "warm_qps": warm_qps,
        "cold_qps": cold_qps,
        "cold_cpu_ms_per_query": cold_cpu / len(fresh) * 1000,
        "cold_qps_old_path": before_qps,
        "cold_qps_torch_fp32": base_qps,
        "embedder": cold.model_version,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated pattern counts")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the queries")
    parser.add_argument("--cold", type=int, default=40, help="unseen queries for cold QPS")
    parser.add_argument("--limit", type=int, default=None, help="use only N real snippets")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, default=ROOT / ".aqe" / "bench" / "embeddings")
    parser.add_argument("--json", action="store_true", help="also print a JSON summary")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="also profile N cold queries stage by stage, the embedding in its parts",
    )
    parser.add_argument(
        "--no-torch-baseline", action="store_true", help="skip cold QPS with torch fp32"
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]

    snippets, queries, source = load_corpus(args.limit)
    with Embedder(args.cache_dir) as corpus_embedder:
        started = time.perf_counter()
        real = corpus_embedder.embed(snippets)
        query_vectors = corpus_embedder.embed(queries)
        print(
            f"corpus: {source}, {len(snippets):,} snippets and {len(queries)} queries embedded "
            f"by {corpus_embedder.model_version} in {time.perf_counter() - started:.1f} s "
            f"({corpus_embedder.hits:,} cached, {corpus_embedder.misses:,} computed; "
            f"cache {args.cache_dir})"
        )

    # Cold: a fresh persistent cache, as a search's embedder has one; every new text
    # runs the model (the default backend). "before": the same, through embed().
    scratch = tempfile.TemporaryDirectory(prefix="bench-search-")
    cold = Embedder(Path(scratch.name) / "cold")
    before = Embedder(Path(scratch.name) / "before")
    for embedder in (cold, before):
        embedder.embed(["load the model before timing"])
    baseline = None
    if not args.no_torch_baseline and cold.model_version != Embedder(backend="torch").model_version:
        baseline = Embedder(backend="torch", precision="fp32")
        baseline.embed_query("load the model before timing")
    warm = Embedder(args.cache_dir)
    summary = [
        bench_size(n, real, snippets, queries, query_vectors, args, cold, warm, baseline, before)
        for n in sizes
    ]
    for embedder in (warm, cold, before):
        embedder.close()
    scratch.cleanup()
    if args.json:
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
