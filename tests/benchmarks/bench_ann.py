"""Vector index at 100,000 and 1,000,000 patterns: aqe's faiss IVF against the old NumPy IVF.

Run with ``just bench`` (100k) or ``python tests/benchmarks/bench_ann.py --sizes
100000,1000000`` (1M: builds of minutes on 2 cores; each index holds its own copy of
the vectors, 1.5 GB at 1M, next to the input matrix).

Data as in ``bench_search.py``: the CoSQA snippets and the 500 dev queries embedded by
the real all-MiniLM-L6-v2 (default backend, persistent cache), extended to the size by
blending each real vector with a near real neighbour plus noise. The grown matrix and
the exact top-50 of every query (blocked matrix products) are cached under
``--data-dir`` (``~/.cache/aqe/bench``), keyed by the embedder's model version, the
corpus size, the size and the seed, so a second run computes neither.

Indexes (``--indexes``):

* ``aqe``: :class:`aqe.search.vector.VectorIndex` as the engine builds it (faiss
  ``IndexIVFFlat``, self-calibrated ``nprobe``); ``--nprobe`` adds rows for the same
  index probed with other ``nprobe`` values (the recall/latency curve).
* ``numpy-ivf``: the hand-written NumPy IVF that was ``aqe.search.vector`` before issue
  19 (kept as ``numpy_ivf.py`` beside this file only as this baseline).
* ``faiss-sq8`` (``IndexIVFScalarQuantizer`` 8-bit, exact rerank of the top 100 from the
  input matrix), ``faiss-hnsw`` (``IndexHNSWFlat`` M 32, ef_construction 40, ef 64 / 128),
  ``usearch-f32`` / ``usearch-i8`` (HNSW M 16): candidates that were measured and not
  chosen; not in the default run.

For each: build seconds, the memory the index holds (its copy of the vectors included;
``RSS +MB`` is the process's resident growth over the build, which also counts what
the allocator kept from the build's temporaries), search p50/p99 for 50 candidates (as
the engine asks) on one thread, and recall@10 against the exact top-10 over the 500
real queries. Every index answers each query in turn (round robin, the first one
rotating), so load from other work falls on all of them alike (variants of one index
share its lists in the CPU caches, which flatters the later ones: time the variant that
matters alone); the exact NumPy baseline (one matrix-vector product +
argpartition) is timed in the same loop on every ``--exact-every``-th query and every
p50 is also printed as a ratio to it. It asserts no time.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from bench_search import ROOT, grow, load_corpus, numpy_top, pct

from aqe.search.embed import Embedder, _usable_cpus
from aqe.search.vector import VectorIndex, exact_top

DEPTH = 50
K = 10
Search = Callable[[np.ndarray], np.ndarray]  # query -> row numbers, best first
Variant = tuple[str, Search]
Built = tuple[list[Variant], int, Any]  # (shape, search) variants, bytes held, the index


def dataset(
    real: np.ndarray, queries: np.ndarray, model: str, n: int, seed: int, cache: Path
) -> tuple[np.ndarray, np.ndarray, float]:
    """(the grown matrix, exact top-``DEPTH`` rows per query, seconds spent computing)."""
    key = f"{model}-{len(real)}-{n}-{seed}".replace("/", "_")
    matrix_path, truth_path = cache / f"matrix-{key}.npy", cache / f"truth-{key}.npy"
    if matrix_path.exists() and truth_path.exists():
        return np.load(matrix_path), np.load(truth_path), 0.0
    started = time.perf_counter()
    matrix, _ = grow(real, n, seed)
    truth = exact_top(matrix, queries, DEPTH)
    cache.mkdir(parents=True, exist_ok=True)
    for path, array in ((matrix_path, matrix), (truth_path, truth)):
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, array)
        os.replace(tmp, path)
    return matrix, truth, time.perf_counter() - started


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _aqe(matrix: np.ndarray, seed: int, nlist: int | None, extra_probes: list[int]) -> Built:
    ids = [str(i) for i in range(matrix.shape[0])]
    index = VectorIndex.build(ids, matrix, seed=seed, nlist=nlist)
    p = index.params
    faiss_index = index._index

    def searcher(nprobe: int) -> Search:
        def search(q: np.ndarray) -> np.ndarray:
            return np.array([int(i) for i, _ in index._search(q.reshape(1, -1), DEPTH, nprobe)])

        return search

    probes = [index.nprobe] + [x for x in extra_probes if x != index.nprobe]
    variants = [
        (
            f"nlist {p['nlist']} nprobe {x}{' (calibrated)' if x == index.nprobe else ''}",
            searcher(x),
        )
        for x in probes
    ]
    held = faiss_index.ntotal * (faiss_index.code_size + 8) + p["nlist"] * p["dim"] * 4
    return variants, held, index


def _numpy_ivf(matrix: np.ndarray, seed: int) -> Built:
    from numpy_ivf import VectorIndex as NumpyIVF

    ids = [str(i) for i in range(matrix.shape[0])]
    index = NumpyIVF.build(ids, matrix, seed=seed)
    p = index.params

    def search(q: np.ndarray) -> np.ndarray:
        return np.array([int(i) for i, _ in index.search(q, DEPTH)])

    # Its own copy of the vectors in list order, the permutation, the centroids.
    held = index._data.nbytes + index._perm.nbytes + p.get("nlist", 0) * matrix.shape[1] * 4
    return [(f"nlist {p.get('nlist')} nprobe {p.get('nprobe')}", search)], held, index


def _faiss_sq8(matrix: np.ndarray, seed: int, nlist: int | None, probes: list[int]) -> Built:
    import faiss

    n, dim = matrix.shape
    lists = nlist or max(2, round(2 * math.sqrt(n)))
    index = faiss.IndexIVFScalarQuantizer(
        faiss.IndexFlatIP(dim),
        dim,
        lists,
        faiss.ScalarQuantizer.QT_8bit,
        faiss.METRIC_INNER_PRODUCT,
    )
    index.cp.spherical = True
    index.cp.seed = seed
    index.cp.max_points_per_centroid = 64
    faiss.omp_set_num_threads(_usable_cpus())
    index.train(matrix)
    index.add(matrix)
    faiss.omp_set_num_threads(1)

    def searcher(nprobe: int) -> Search:
        def search(q: np.ndarray) -> np.ndarray:
            index.nprobe = nprobe
            _, rows = index.search(q.reshape(1, -1), 2 * DEPTH)
            found = rows[0][rows[0] >= 0]
            exact = matrix[found] @ q  # rerank on the float vectors (the caller's copy)
            return found[np.argsort(-exact, kind="stable")[:DEPTH]]

        return search

    held = index.ntotal * (index.code_size + 8) + lists * dim * 4
    return [(f"nlist {lists} nprobe {x} rerank 100", searcher(x)) for x in probes], held, index


def _faiss_hnsw(matrix: np.ndarray, efs: list[int]) -> Built:
    import faiss

    index = faiss.IndexHNSWFlat(matrix.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 40
    faiss.omp_set_num_threads(_usable_cpus())
    index.add(matrix)
    faiss.omp_set_num_threads(1)

    def searcher(ef: int) -> Search:
        def search(q: np.ndarray) -> np.ndarray:
            index.hnsw.efSearch = ef
            _, rows = index.search(q.reshape(1, -1), DEPTH)
            return rows[0]

        return search

    held = index.hnsw.neighbors.size() * 4 + matrix.nbytes  # IndexHNSWFlat stores a copy
    return [(f"M 32 efc 40 ef {ef}", searcher(ef)) for ef in efs], int(held), index


def _usearch(matrix: np.ndarray, dtype: str, efs: list[int]) -> Built:
    from usearch.index import Index

    index = Index(
        ndim=matrix.shape[1], metric="ip", dtype=dtype, connectivity=16, expansion_add=128
    )
    index.add(np.arange(matrix.shape[0], dtype=np.uint64), matrix, threads=_usable_cpus())

    def searcher(ef: int) -> Search:
        def search(q: np.ndarray) -> np.ndarray:
            index.expansion_search = ef
            return np.asarray(index.search(q, DEPTH, threads=1).keys, dtype=np.int64)

        return search

    variants = [(f"M 16 efc 128 ef {ef} {dtype}", searcher(ef)) for ef in efs]
    return variants, int(index.memory_usage), index


def measure(
    builders: list[tuple[str, Callable[[], Built]]],
    matrix: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    rounds: int,
    exact_every: int,
) -> list[dict[str, Any]]:
    """Build every index, then time them round robin per query; one row per variant."""
    rows: list[dict[str, Any]] = []
    searches: list[Search] = []
    keep = []
    for name, build in builders:
        gc.collect()
        before = _rss()
        started = time.perf_counter()
        variants, held, index = build()
        build_s = time.perf_counter() - started
        rss = _rss() - before
        keep.append(index)
        print(f"  built {name} in {build_s:.1f} s", flush=True)
        for shape, search in variants:
            rows.append(
                {
                    "index": name,
                    "shape": shape,
                    "build_s": build_s,
                    "held_mb": held / 2**20,
                    "rss_mb": rss / 2**20,
                }
            )
            searches.append(search)
    times: list[list[float]] = [[] for _ in searches]
    found = [0] * len(searches)
    exact_s: list[float] = []
    for round_no in range(rounds):
        for qi, q in enumerate(queries):
            wanted = set(truth[qi, :K].tolist())
            for turn in range(len(searches)):
                si = (qi + turn) % len(searches)  # who goes first (cold caches) rotates
                search = searches[si]
                t0 = time.perf_counter()
                got = search(q)
                times[si].append(time.perf_counter() - t0)
                if round_no == 0:
                    found[si] += len(wanted & set(got[:K].tolist()))
            if qi % exact_every == 0:
                t0 = time.perf_counter()
                numpy_top(matrix, q, DEPTH)
                exact_s.append(time.perf_counter() - t0)
    exact_p50 = pct(exact_s, 50)
    print(
        f"{'index':<12}{'shape':<34}{'build s':>9}{'held MB':>9}{'RSS +MB':>9}{'p50 ms':>9}"
        f"{'p99 ms':>9}{'x exact':>9}{'recall':>9}"
    )
    for row, index_s, hits in zip(rows, times, found, strict=True):
        row.update(
            p50_ms=pct(index_s, 50),
            p99_ms=pct(index_s, 99),
            exact_p50_ms=exact_p50,
            ratio=pct(index_s, 50) / exact_p50,
            recall_at_10=hits / (K * len(queries)),
        )
        print(
            f"{row['index']:<12}{row['shape']:<34}{row['build_s']:>9.1f}{row['held_mb']:>9.0f}"
            f"{row['rss_mb']:>9.0f}{row['p50_ms']:>9.3f}{row['p99_ms']:>9.3f}{row['ratio']:>9.4f}"
            f"{row['recall_at_10']:>9.3f}",
            flush=True,
        )
    print(f"exact numpy p50 {exact_p50:.3f} ms ({len(exact_s)} queries)")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000", help="comma-separated pattern counts")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the 500 queries")
    parser.add_argument(
        "--indexes",
        default="aqe,numpy-ivf",
        help="comma-separated: aqe, numpy-ivf, faiss-sq8, faiss-hnsw, usearch-f32, usearch-i8",
    )
    parser.add_argument("--nlist", type=int, default=None, help="lists (default: the index's)")
    parser.add_argument("--nprobe", default="", help="extra nprobe values to time for aqe/sq8")
    parser.add_argument("--ef", default="64,128", help="HNSW search depths to try")
    parser.add_argument("--exact-every", type=int, default=5, help="time exact on every Nth query")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, default=ROOT / ".aqe" / "bench" / "embeddings")
    parser.add_argument("--data-dir", type=Path, default=Path.home() / ".cache" / "aqe" / "bench")
    parser.add_argument("--json", action="store_true", help="also print a JSON summary")
    args = parser.parse_args(argv)
    wanted = [s for s in args.indexes.split(",") if s]
    efs = [int(e) for e in args.ef.split(",") if e]
    probes = [int(x) for x in args.nprobe.split(",") if x]

    snippets, query_texts, source = load_corpus(None)
    with Embedder(args.cache_dir) as embedder:
        started = time.perf_counter()
        real = embedder.embed(snippets)
        queries = embedder.embed(query_texts)
        model = embedder.model_version
        print(
            f"corpus: {source}, {len(real):,} snippets + {len(queries)} queries by "
            f"{model} in {time.perf_counter() - started:.1f} s ({embedder.misses:,} computed)"
        )
    with open("/proc/loadavg") as fh:
        print(f"load average: {fh.read().strip()}; nice {os.nice(0)}; {_usable_cpus()} cpus")
    summary = []
    for n in [int(s) for s in args.sizes.split(",") if s]:
        matrix, truth, data_s = dataset(real, queries, model, n, args.seed, args.data_dir)
        print(
            f"\n== {n:,} vectors ({matrix.nbytes / 2**20:,.0f} MB float32; data and truth "
            f"{'from ' + str(args.data_dir) if data_s == 0 else f'computed in {data_s:.1f} s'}"
            f"); search for {DEPTH} on one thread, recall@10 vs exact on {len(queries)} real "
            "queries"
        )
        builders: list[tuple[str, Callable[[], Built]]] = []
        if "aqe" in wanted:
            builders.append(("aqe", lambda m=matrix: _aqe(m, args.seed, args.nlist, probes)))
        if "numpy-ivf" in wanted:
            builders.append(("numpy-ivf", lambda m=matrix: _numpy_ivf(m, args.seed)))
        if "faiss-sq8" in wanted:
            builders.append(
                ("faiss-sq8", lambda m=matrix: _faiss_sq8(m, args.seed, args.nlist, probes or [16]))
            )
        if "faiss-hnsw" in wanted:
            builders.append(("faiss-hnsw", lambda m=matrix: _faiss_hnsw(m, efs)))
        for dtype in ("f32", "i8"):
            if f"usearch-{dtype}" in wanted:
                builders.append((f"usearch-{dtype}", lambda m=matrix, d=dtype: _usearch(m, d, efs)))
        for row in measure(builders, matrix, queries, truth, args.rounds, args.exact_every):
            row["size"] = n
            summary.append(row)
        del matrix
        gc.collect()
    if args.json:
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
