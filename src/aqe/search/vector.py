"""In-memory vector index over the pattern embeddings: exact below a size, IVF above.

Scores are dot products, which are cosines because the embedder returns unit vectors.

* Up to :data:`EXACT_MAX` vectors the index is a float32 matrix and a query is one
  matrix-vector product plus ``argpartition`` (exact, recall 1.0).
* Above it, an inverted file in NumPy: seeded spherical k-means cuts the vectors into
  ``nlist ~ 2·sqrt(n)`` lists, the rows are stored contiguously list by list, and a
  query scores the centroids, then scores exactly the rows of the ``nprobe`` best
  lists. ``nprobe`` is chosen at build time by *measuring* recall@10 against exact
  search on calibration queries drawn from the data (two stored vectors blended with
  noise: they sit between clusters, harder than real queries); the smallest ``nprobe``
  that reaches :data:`CALIBRATION_RECALL` wins. If the data has no cluster structure
  (the probe would touch most rows anyway) the index stays exact.

Measured on the 2-core development machine (``tests/benchmarks/bench_search.py``), on
real-model-like data (the 6,267 CoSQA snippets embedded by MiniLM, extended by blending
each with a near neighbour plus noise) and the 500 real CoSQA query embeddings; search
for 50 candidates, the query embedding excluded:

========= ================================ =========== ========== ==================
size      structure                        recall@10   p50 / p99  NumPy exact p50
========= ================================ =========== ========== ==================
10,000    exact matmul                     1.000       0.4 / 0.9  0.4 ms
100,000   IVF nlist 632, nprobe 23 (3.6%)  0.986       0.8 / 1.2  7.3 ms
========= ================================ =========== ========== ==================

nprobe 9 would be enough for 0.96 at 0.4 ms; the calibration asks for 0.99 on queries
harder than real ones because the latency budget (5 ms) leaves room. Build at 100k:
5-7 s (k-means on a sample of 64 rows a list, 12 rounds, then one assignment pass).

Filters (``mask``) walk the lists in centroid order, skipping lists with no allowed
row, until they have read 1.5 times as many allowed rows as an unfiltered probe reads;
a scattered filter that would need most lists falls back to scoring the allowed rows
alone. At 100k: random 1/2, 1/8, 1/32 filters 2.9 / 3.3 / 2.5 ms p50, recall >= 0.996;
content-following filters (a region holding 12-38% of rows) 3.2-3.6 ms, recall
0.97-0.99. Probing ``nprobe / share`` lists instead reached only 0.94 on those.

Every matrix-vector product on the query path runs in blocks of 1,024 rows
(:func:`_dot`): one big product is split across OpenBLAS threads, and when another
process or torch's OpenMP workers hold a core those threads wait out scheduler slices
(10k exact: 12 ms p50 instead of 0.6; in blocks: 0.9 ms).

Rejected: LanceDB's IVF_HNSW_SQ (FACTS.md: 3-4 ms a query plus 3-4 ms per-query
overhead, recall 0.90-0.93 at defaults) and exact NumPy at 100k (7-8 ms).

Against maintained libraries (``tests/benchmarks/bench_ann.py``, same data, same run,
one query thread, 2 cores shared with other work at load 13-18): at 100k this IVF
built in 35.7 s, held 2 MB beyond the vectors, searched in 1.16 ms p50 at recall@10
0.986; faiss ``IndexIVFFlat`` (same nlist, nprobe calibrated the same way) 52.4 s,
+148 MB (its own copy of the vectors), 1.42 ms p50, recall 0.999. HNSW builds are far
slower on 2 cores: 20k vectors took usearch (M 16, f32) 76 s, usearch i8 21 s (recall
0.942), faiss HNSW (M 32) 34 s, against 15.5 s for this IVF; a 100k usearch f32 build
did not finish in 9 minutes. At 1M (same run) this IVF built in 381 s, searched in
19.6 ms p50 at recall 0.992; faiss IVF 220 s, 8.6 ms, 0.994, +1.5 GB. faiss wins at
1M: replacing this module's IVF with it is the open step of issue 19.

:meth:`VectorIndex.save` writes a LanceDB table ``vectors`` (``id``, ``vector``,
``list``) as the durable store, ``centroids.npy`` and ``params.json`` (written last,
atomically: a directory without it holds no index); :meth:`VectorIndex.load` reads
them back into memory without re-clustering.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["CALIBRATION_RECALL", "EXACT_MAX", "TARGET_RECALL", "VectorIndex"]

EXACT_MAX = 20_000
"""Largest index kept exact (a full matmul: 0.3 ms at 10k, 0.9-1 ms at 20k on 2 cores)."""
TARGET_RECALL = 0.95
"""The recall@10 an IVF index must keep against exact search."""
CALIBRATION_RECALL = 0.99
"""Recall@10 demanded on the calibration queries: a margin above :data:`TARGET_RECALL`."""

_FORMAT = 1
_TABLE = "vectors"
_PARAMS = "params.json"
_CENTROIDS = "centroids.npy"
_CALIBRATION_QUERIES = 256
_CALIBRATION_K = 10
_CALIBRATION_NOISE = 1.5
_KMEANS_ITERATIONS = 12
_SAMPLE_PER_LIST = 64
_MAX_PROBE_FRACTION = 0.35  # above this share of rows an IVF probe costs as much as exact
_ASSIGN_CHUNK = 8192
_BLOCK = 1024  # rows per matrix-vector product on the query path (see _dot)
_GATHER_COST = 3  # a gathered row costs about this many contiguous ones (measured)
_FILTER_BUDGET = 1.5  # allowed rows read under a filter, in unfiltered probes' rows

Kind = Literal["exact", "ivf"]
Hits = list[tuple[str, float]]


def _top(scores: NDArray[np.float32], k: int) -> NDArray[np.intp]:
    """Positions of the ``k`` largest scores, best first (ties by position)."""
    if k >= scores.shape[0]:
        return np.argsort(-scores, kind="stable")
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")]


def _dot(rows: NDArray[np.float32], q: NDArray[np.float32]) -> NDArray[np.float32]:
    """``rows @ q`` in blocks OpenBLAS runs on one thread.

    A large matrix-vector product is split across OpenBLAS threads that wait for each
    other; when another process (or torch's OpenMP workers) holds a core, every wait
    costs a scheduler slice: 10k x 384 took 12 ms p50 instead of 0.6 with one core
    busy, and 0.9 ms in blocks of 1,024 rows (measured on 2 cores).
    """
    if rows.shape[0] <= _BLOCK:
        out: NDArray[np.float32] = rows @ q
        return out
    out = np.empty(rows.shape[0], dtype=np.float32)
    for start in range(0, rows.shape[0], _BLOCK):
        np.dot(rows[start : start + _BLOCK], q, out=out[start : start + _BLOCK])
    return out


def _gather_dot(
    data: NDArray[np.float32], positions: NDArray[np.intp], q: NDArray[np.float32]
) -> NDArray[np.float32]:
    """``data[positions] @ q`` without copying more than a block of rows at a time."""
    out = np.empty(positions.shape[0], dtype=np.float32)
    for start in range(0, positions.shape[0], _BLOCK):
        block = positions[start : start + _BLOCK]
        np.dot(data[block], q, out=out[start : start + _BLOCK])
    return out


def _assign(vectors: NDArray[np.float32], centroids: NDArray[np.float32]) -> NDArray[np.intp]:
    labels = np.empty(vectors.shape[0], dtype=np.intp)
    for start in range(0, vectors.shape[0], _ASSIGN_CHUNK):
        block = vectors[start : start + _ASSIGN_CHUNK] @ centroids.T
        labels[start : start + _ASSIGN_CHUNK] = np.argmax(block, axis=1)
    return labels


def _normalise_rows(matrix: NDArray[np.float32]) -> NDArray[np.float32]:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    np.maximum(norms, 1e-12, out=norms)
    out: NDArray[np.float32] = (matrix / norms).astype(np.float32)
    return out


def _spherical_kmeans(
    vectors: NDArray[np.float32], nlist: int, rng: np.random.Generator
) -> NDArray[np.float32]:
    """Unit-length centroids of ``nlist`` clusters (Lloyd on the sphere, seeded)."""
    sample_size = min(vectors.shape[0], nlist * _SAMPLE_PER_LIST)
    sample = vectors[np.sort(rng.choice(vectors.shape[0], sample_size, replace=False))]
    centroids: NDArray[np.float32] = sample[rng.choice(sample_size, nlist, replace=False)].copy()
    for _ in range(_KMEANS_ITERATIONS):
        labels = _assign(sample, centroids)
        sums = np.zeros_like(centroids)
        np.add.at(sums, labels, sample)
        counts = np.bincount(labels, minlength=nlist)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            # Reseed empty lists with the rows their centroids fit worst.
            fit = np.einsum("ij,ij->i", sample, centroids[labels])
            sums[empty] = sample[np.argsort(fit, kind="stable")[: empty.size]]
        centroids = _normalise_rows(sums)
    return centroids


class VectorIndex:
    """Top-k cosine search over unit vectors, exact or IVF (see the module docstring).

    Build one with :meth:`build` or :meth:`load`; the constructor is internal.
    """

    def __init__(
        self,
        ids: list[str],
        data: NDArray[np.float32],
        *,
        perm: NDArray[np.intp],
        starts: NDArray[np.intp],
        centroids: NDArray[np.float32] | None,
        nprobe: int,
        params: dict[str, Any],
    ) -> None:
        self._ids = ids  # original order
        self._data = data  # rows in list order (== original order when exact)
        self._perm = perm  # row position -> original index
        self._ids_by_pos = [ids[i] for i in perm.tolist()]
        self._starts = starts  # list l holds rows starts[l]:starts[l + 1]
        self._centroids = centroids
        self.nprobe = nprobe
        self.params = params

    # -- construction -------------------------------------------------------------

    @classmethod
    def build(
        cls,
        ids: Sequence[str],
        vectors: NDArray[np.floating[Any]],
        *,
        seed: int = 0,
        exact_max: int = EXACT_MAX,
        nlist: int | None = None,
        model: str | None = None,
    ) -> VectorIndex:
        """Index ``vectors`` (row ``i`` belongs to ``ids[i]``).

        Args:
            ids: Unique ids, one per row.
            vectors: ``(n, dim)`` unit vectors.
            seed: Seed of k-means and of the calibration queries (builds are
                deterministic for a given seed and input).
            exact_max: Largest ``n`` kept exact.
            nlist: IVF lists; default ``2·sqrt(n)``.
            model: The embedder's ``model_version`` the vectors came from, kept in
                :attr:`params` (``"model"``) so vectors of another backend or
                precision are never searched with this one's queries.

        Returns:
            The index.

        Raises:
            ValueError: Shapes disagree, ids repeat, or the values are not finite.
        """
        matrix = np.ascontiguousarray(vectors, dtype=np.float32)
        if matrix.ndim != 2:
            raise ValueError(f"vectors must be 2-d (n, dim), got shape {matrix.shape}")
        n, dim = matrix.shape
        id_list = list(ids)
        if len(id_list) != n:
            raise ValueError(f"{len(id_list)} ids for {n} vectors")
        if len(set(id_list)) != n:
            raise ValueError("ids must be unique")
        if not np.isfinite(matrix).all():
            raise ValueError("vectors contain NaN or infinity")
        params: dict[str, Any] = {
            "format": _FORMAT,
            "kind": "exact",
            "count": n,
            "dim": dim,
            "seed": seed,
            "exact_max": exact_max,
            "model": model,
        }
        identity = np.arange(n, dtype=np.intp)
        exact = cls(
            id_list,
            matrix,
            perm=identity,
            starts=np.array([0, n], dtype=np.intp),
            centroids=None,
            nprobe=1,
            params=params,
        )
        if n <= exact_max or n < 4 * _CALIBRATION_K:
            return exact
        lists = nlist or max(2, round(2 * math.sqrt(n)))
        lists = min(lists, n // 4)
        rng = np.random.default_rng(seed)
        centroids = _spherical_kmeans(matrix, lists, rng)
        labels = _assign(matrix, centroids)
        perm = np.argsort(labels, kind="stable")
        starts = np.searchsorted(labels[perm], np.arange(lists + 1)).astype(np.intp)
        nprobe, recall = _calibrate(matrix, labels, centroids, starts, rng)
        probed = _probe_share(starts, nprobe)
        if probed > _MAX_PROBE_FRACTION:
            params["ivf_rejected"] = {"nlist": lists, "nprobe": nprobe, "probed_share": probed}
            return exact
        params.update(
            kind="ivf",
            nlist=lists,
            nprobe=nprobe,
            calibration_recall=recall,
            probed_share=probed,
        )
        return cls(
            id_list,
            np.ascontiguousarray(matrix[perm]),
            perm=perm,
            starts=starts,
            centroids=centroids,
            nprobe=nprobe,
            params=params,
        )

    # -- queries ------------------------------------------------------------------

    @property
    def kind(self) -> Kind:
        """``"exact"`` or ``"ivf"``."""
        return "ivf" if self._centroids is not None else "exact"

    def __len__(self) -> int:
        return len(self._ids)

    def search(
        self, query: NDArray[np.floating[Any]], k: int, *, mask: NDArray[np.bool_] | None = None
    ) -> Hits:
        """The ``k`` best ids for ``query``, best first, as ``(id, cosine)``.

        Args:
            query: A ``(dim,)`` unit vector.
            k: How many results.
            mask: Optional booleans aligned with the build's ids; only ``True`` rows
                may be returned, and ``k`` are returned whenever ``k`` rows are allowed.

        Returns:
            Up to ``k`` ``(id, score)`` pairs.
        """
        q = self._query(query)
        if mask is not None:
            mask = self._mask(mask)
        if k <= 0 or not self._ids:
            return []
        centroids = self._centroids
        if centroids is None:
            return self._exact(q, k, mask)
        if mask is None:
            return self._ivf(centroids, q, k)
        allowed = int(np.count_nonzero(mask))
        if allowed <= k:
            return self._exact(q, k, mask)
        hits = self._ivf_filtered(centroids, q, k, mask, allowed)
        return hits if len(hits) >= k else self._exact(q, k, mask)

    def exact(
        self, query: NDArray[np.floating[Any]], k: int, *, mask: NDArray[np.bool_] | None = None
    ) -> Hits:
        """Brute-force :meth:`search`: every (allowed) row scored, recall 1.0."""
        q = self._query(query)
        if mask is not None:
            mask = self._mask(mask)
        if k <= 0 or not self._ids:
            return []
        return self._exact(q, k, mask)

    def _query(self, query: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        if q.shape[0] != self._data.shape[1] and self._ids:
            raise ValueError(f"query has {q.shape[0]} dimensions, the index {self._data.shape[1]}")
        return q

    def _mask(self, mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
        m = np.asarray(mask, dtype=bool)
        if m.shape != (len(self._ids),):
            raise ValueError(f"mask has shape {m.shape}, the index {len(self._ids)} rows")
        return m

    def _exact(self, q: NDArray[np.float32], k: int, mask: NDArray[np.bool_] | None) -> Hits:
        if mask is None:
            scores = _dot(self._data, q)
            return [(self._ids_by_pos[p], float(scores[p])) for p in _top(scores, k).tolist()]
        positions = np.flatnonzero(mask[self._perm])  # ascending: memory order
        if positions.size == 0:
            return []
        if positions.size * _GATHER_COST < mask.shape[0]:
            scores = _gather_dot(self._data, positions, q)
        else:
            scores = _dot(self._data, q)[positions]
        best = _top(scores, k)
        return [
            (self._ids_by_pos[p], float(scores[i]))
            for i, p in zip(best.tolist(), positions[best].tolist(), strict=True)
        ]

    def _ivf(self, centroids: NDArray[np.float32], q: NDArray[np.float32], k: int) -> Hits:
        lists = _top(centroids @ q, self.nprobe)
        lists.sort()  # memory order: the slices are read front to back
        starts = self._starts[lists]
        ends = self._starts[lists + 1]
        data = self._data
        scores = np.concatenate(
            [_dot(data[s:e], q) for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]
        )
        sizes = ends - starts
        offsets = np.cumsum(sizes) - sizes  # where each list begins in ``scores``
        best = _top(scores, k)
        which = np.searchsorted(offsets, best, side="right") - 1
        rows = starts[which] + best - offsets[which]
        return [
            (self._ids_by_pos[p], float(scores[i]))
            for i, p in zip(best.tolist(), rows.tolist(), strict=True)
        ]

    def _ivf_filtered(
        self,
        centroids: NDArray[np.float32],
        q: NDArray[np.float32],
        k: int,
        mask: NDArray[np.bool_],
        allowed: int,
    ) -> Hits:
        """IVF under a filter: probe until as many *allowed* rows are read as unfiltered.

        Lists are walked in centroid order, skipping lists with no allowed row, until
        they hold :data:`_FILTER_BUDGET` times the rows an unfiltered probe reads. A
        filter that follows the content (a category) concentrates in few lists and
        stays cheap; a scattered one needs many lists, and then scoring the allowed
        rows alone (a gather) or every row is cheaper.
        """
        n = len(self._ids)
        bounds = self._starts
        lists = bounds.shape[0] - 1
        allowed_at = mask[self._perm]  # by stored position
        running = np.concatenate(([0], np.cumsum(allowed_at)))
        per_list = running[bounds[1:]] - running[bounds[:-1]]
        order = np.argsort(-(centroids @ q), kind="stable")
        budget = _FILTER_BUDGET * self.nprobe * n / lists
        reach = int(np.searchsorted(np.cumsum(per_list[order]), budget)) + 1
        chosen = order[:reach]
        chosen = np.sort(chosen[per_list[chosen] > 0])
        starts = bounds[chosen]
        ends = bounds[chosen + 1]
        spans = list(zip(starts.tolist(), ends.tolist(), strict=True))
        read = int((ends - starts).sum())
        wanted = int(per_list[chosen].sum())
        if min(read, _GATHER_COST * wanted) >= min(n, _GATHER_COST * allowed):
            return self._exact(q, k, mask)
        if _GATHER_COST * wanted < read:
            probed = np.zeros(lists, dtype=bool)
            probed[chosen] = True
            positions = np.flatnonzero(allowed_at & np.repeat(probed, np.diff(bounds)))
            scores = _gather_dot(self._data, positions, q)
        else:
            scores = np.concatenate([_dot(self._data[s:e], q) for s, e in spans])
            keep = np.concatenate([allowed_at[s:e] for s, e in spans])
            positions = np.concatenate([np.arange(s, e) for s, e in spans])[keep]
            scores = scores[keep]
        best = _top(scores, k)
        return [
            (self._ids_by_pos[p], float(scores[i]))
            for i, p in zip(best.tolist(), positions[best].tolist(), strict=True)
        ]

    # -- persistence --------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """Write the index under ``directory``: LanceDB table, centroids, params last.

        Args:
            directory: Created if missing; an index already there is replaced.
        """
        import lancedb
        import pyarrow as pa

        directory.mkdir(parents=True, exist_ok=True)
        params_path = directory / _PARAMS
        params_path.unlink(missing_ok=True)  # the directory holds no index until the end
        n, dim = len(self._ids), self._data.shape[1]
        labels = np.zeros(n, dtype=np.int32)
        if self._centroids is not None:
            sizes = np.diff(self._starts)
            labels[self._perm] = np.repeat(np.arange(sizes.shape[0], dtype=np.int32), sizes)
        original = np.empty_like(self._data)
        original[self._perm] = self._data
        table = pa.table(
            {
                "id": pa.array(self._ids, type=pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(
                    pa.array(original.reshape(-1), type=pa.float32()), dim
                ),
                "list": pa.array(labels, type=pa.int32()),
            }
        )
        db = lancedb.connect(str(directory))
        # "overwrite" of a table that is not there makes lance log a warning on stderr.
        exists = (directory / f"{_TABLE}.lance").exists()
        db.create_table(_TABLE, data=table, mode="overwrite" if exists else "create")
        (directory / _CENTROIDS).unlink(missing_ok=True)
        if self._centroids is not None:
            with (directory / _CENTROIDS).open("wb") as fh:
                np.save(fh, self._centroids)
                fh.flush()
                os.fsync(fh.fileno())
        _write_atomic(params_path, json.dumps(self.params, sort_keys=True, indent=2))

    @classmethod
    def load(cls, directory: Path) -> VectorIndex:
        """Read an index written by :meth:`save`.

        Args:
            directory: The directory given to :meth:`save`.

        Returns:
            The index, in memory.

        Raises:
            FileNotFoundError: No complete index there.
            ValueError: The files disagree with each other.
        """
        import lancedb

        params_path = directory / _PARAMS
        if not params_path.is_file():
            raise FileNotFoundError(f"no vector index in {directory} (missing {_PARAMS})")
        params: dict[str, Any] = json.loads(params_path.read_text(encoding="utf-8"))
        if params.get("format") != _FORMAT:
            raise ValueError(f"vector index format {params.get('format')!r} is not {_FORMAT}")
        table = lancedb.connect(str(directory)).open_table(_TABLE).to_arrow()
        n, dim = int(params["count"]), int(params["dim"])
        if table.num_rows != n:
            raise ValueError(f"vector table holds {table.num_rows} rows, params say {n}")
        ids = [str(x) for x in table.column("id").to_pylist()]
        vector_col = table.column("vector").combine_chunks()
        flat = vector_col.values.to_numpy(zero_copy_only=False)
        matrix = np.ascontiguousarray(flat, dtype=np.float32).reshape(n, dim)
        if params["kind"] == "exact":
            return cls(
                ids,
                matrix,
                perm=np.arange(n, dtype=np.intp),
                starts=np.array([0, n], dtype=np.intp),
                centroids=None,
                nprobe=1,
                params=params,
            )
        centroids = np.load(directory / _CENTROIDS).astype(np.float32)
        lists = int(params["nlist"])
        if centroids.shape != (lists, dim):
            raise ValueError(f"centroids have shape {centroids.shape}, params say ({lists}, {dim})")
        labels = table.column("list").to_numpy().astype(np.intp)
        perm = np.argsort(labels, kind="stable")
        starts = np.searchsorted(labels[perm], np.arange(lists + 1)).astype(np.intp)
        return cls(
            ids,
            np.ascontiguousarray(matrix[perm]),
            perm=perm,
            starts=starts,
            centroids=centroids,
            nprobe=int(params["nprobe"]),
            params=params,
        )


def _probe_share(starts: NDArray[np.intp], nprobe: int) -> float:
    """Expected share of rows ``nprobe`` lists hold (lists of average size)."""
    lists = starts.shape[0] - 1
    return min(1.0, nprobe / lists) if lists else 1.0


def _calibrate(
    matrix: NDArray[np.float32],
    labels: NDArray[np.intp],
    centroids: NDArray[np.float32],
    starts: NDArray[np.intp],
    rng: np.random.Generator,
) -> tuple[int, float]:
    """Smallest ``nprobe`` whose measured recall@10 reaches :data:`CALIBRATION_RECALL`.

    An IVF probe scores every row of the probed lists exactly, so a true neighbour is
    found iff its list is probed: recall at ``nprobe`` is the share of true neighbours
    whose list ranks among the query's ``nprobe`` best centroids.
    """
    n = matrix.shape[0]
    count = min(_CALIBRATION_QUERIES, n)
    a = matrix[rng.choice(n, count, replace=False)]
    b = matrix[rng.choice(n, count, replace=False)]
    mix = rng.uniform(0.0, 1.0, size=(count, 1)).astype(np.float32)
    noise = rng.standard_normal(a.shape).astype(np.float32) / math.sqrt(a.shape[1])
    queries = _normalise_rows(a + mix * b + _CALIBRATION_NOISE * noise)
    truth = np.concatenate(
        [
            np.stack([_top(s, _CALIBRATION_K) for s in block @ matrix.T])
            for block in np.split(queries, range(64, count, 64))
        ]
    )  # (q, 10): the true neighbours' rows
    order = np.argsort(-(queries @ centroids.T), axis=1, kind="stable")
    rank = np.empty_like(order)
    rows = np.arange(count)[:, None]
    rank[rows, order] = np.arange(order.shape[1])[None, :]
    needed = rank[rows, labels[truth]]  # (q, 10): lists that must be probed, by rank
    lists = starts.shape[0] - 1
    for nprobe in range(1, lists + 1):
        recall = float(np.mean(needed < nprobe))
        if recall >= CALIBRATION_RECALL:
            return nprobe, recall
    return lists, 1.0  # pragma: no cover - nprobe == nlist always reaches 1.0


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
