"""The hand-written NumPy IVF that was ``aqe.search.vector`` until issue 19, as a baseline.

``bench_ann.py`` measures aqe's faiss index against it in the same run; nothing else
imports it. Trimmed to what the benchmark calls (build, unfiltered search); the
calibration and row normalisation are the new module's (same method). It was: exact
matrix-vector product up to 20,000 rows, above that seeded spherical k-means into
``2·sqrt(n)`` lists stored contiguously, a probe scoring the rows of the ``nprobe``
best lists exactly in blocks of 1,024 rows (one OpenBLAS thread each).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from aqe.search.vector import _calibrate, _check, _normalise_rows

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["CALIBRATION_RECALL", "EXACT_MAX", "TARGET_RECALL", "VectorIndex"]

EXACT_MAX = 20_000
"""Largest index kept exact (a full matmul: 0.3 ms at 10k, 0.9-1 ms at 20k on 2 cores)."""
TARGET_RECALL = 0.95
"""The recall@10 an IVF index must keep against exact search."""
CALIBRATION_RECALL = 0.99
"""Recall@10 demanded on the calibration queries: a margin above :data:`TARGET_RECALL`."""

_KMEANS_ITERATIONS = 12
_SAMPLE_PER_LIST = 64
_MAX_PROBE_FRACTION = 0.35  # above this share of rows an IVF probe costs as much as exact
_ASSIGN_CHUNK = 8192
_BLOCK = 1024  # rows per matrix-vector product on the query path (see _dot)

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


def _assign(vectors: NDArray[np.float32], centroids: NDArray[np.float32]) -> NDArray[np.intp]:
    labels = np.empty(vectors.shape[0], dtype=np.intp)
    for start in range(0, vectors.shape[0], _ASSIGN_CHUNK):
        block = vectors[start : start + _ASSIGN_CHUNK] @ centroids.T
        labels[start : start + _ASSIGN_CHUNK] = np.argmax(block, axis=1)
    return labels


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
        """Index ``vectors`` (row ``i`` belongs to ``ids[i]``), as the old module did."""
        id_list = list(ids)
        matrix = _check(id_list, vectors)
        n, dim = matrix.shape
        params: dict[str, Any] = {
            "format": 1,
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
        if n <= exact_max or n < 40:
            return exact
        lists = nlist or max(2, round(2 * math.sqrt(n)))
        lists = min(lists, n // 4)
        rng = np.random.default_rng(seed)
        centroids = _spherical_kmeans(matrix, lists, rng)
        labels = _assign(matrix, centroids)
        perm = np.argsort(labels, kind="stable")
        starts = np.searchsorted(labels[perm], np.arange(lists + 1)).astype(np.intp)
        nprobe, recall = _calibrate(matrix, labels, centroids, rng)
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

    def search(self, query: NDArray[np.floating[Any]], k: int) -> Hits:
        """The ``k`` best ids for ``query``, best first, as ``(id, cosine)``."""
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        if k <= 0 or not self._ids:
            return []
        if self._centroids is None:
            scores = _dot(self._data, q)
            return [(self._ids_by_pos[p], float(scores[p])) for p in _top(scores, k).tolist()]
        return self._ivf(self._centroids, q, k)

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


def _probe_share(starts: NDArray[np.intp], nprobe: int) -> float:
    """Expected share of rows ``nprobe`` lists hold (lists of average size)."""
    lists = starts.shape[0] - 1
    return min(1.0, nprobe / lists) if lists else 1.0
