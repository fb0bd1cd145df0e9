"""Vector index over the pattern embeddings: faiss ``IndexIVFFlat``, one list below a size.

Scores are inner products, which are cosines because the embedder returns unit vectors.

The index is one faiss ``IndexIVFFlat`` (inner product) and holds the only copy of the
vectors (float32, list by list); this module keeps the string ids, the list of each
row and the parameters beside it.

* Up to :data:`EXACT_MAX` vectors the index has one list: a query scores every row
  (exact, recall 1.0), through the same code path as the IVF.
* Above it, spherical k-means (faiss, seeded, :data:`_SAMPLE_PER_LIST` sampled rows a
  list) cuts the vectors into ``nlist ~ LISTS_PER_SQRT·sqrt(n)`` lists and a query
  scores the rows of its ``nprobe`` nearest lists exactly. ``nprobe`` is chosen at
  build time by *measuring* recall@10 against exact search on calibration queries
  drawn from the data (two stored vectors blended with noise: they sit between
  clusters, harder than real queries); the smallest ``nprobe`` that reaches
  :data:`CALIBRATION_RECALL` wins. If the data has no cluster structure (the probe
  would touch most rows anyway) the index keeps one list.

Measured on the 2 shared cores (``tests/benchmarks/bench_ann.py``, 500 real CoSQA query
vectors against real MiniLM vectors extended by blends; search for 50 on one thread;
the README's "Embeddings and the vector index at scale" has the command and the load):

========== ======================== ======== ========= ============= =========
vectors    lists (2·sqrt(n)), probed build    held      p50 / p99     recall@10
========== ======================== ======== ========= ============= =========
100,000    632, 28                  12.3 s   148 MB    0.73 / 33 ms  0.986
1,000,000  2,000, 11                140.9 s  1,475 MB  0.87 / 25 ms  0.980
========== ======================== ======== ========= ============= =========

In the same run the hand-written NumPy IVF this module was until issue 19 took 1.21 ms
(100k) and 20.5 ms (1M) p50 at recall 0.986 / 0.992, building in 18.1 s / 175.9 s.
4,000 lists at 1M probed 8 searched in 0.49 ms at 0.979 but built in 459 s against
146 s (nice 19, same load), so ``2·sqrt(n)`` stays. One list up to :data:`EXACT_MAX` is
not the faster choice (at 20,000 vectors 1.5 ms against the IVF's 0.2 ms, at 10,000
0.47 against 0.15, nice 19 under load): it is kept for recall 1.0 at that small cost,
a 0.1 s build instead of 3 s, and because calibration rejects an IVF on few real
vectors anyway (4,000 CoSQA snippets).

Filters (``mask``, aligned with :attr:`VectorIndex.ids`) walk the lists in centroid
order, skipping lists with no allowed row, until they hold :data:`_FILTER_BUDGET`
times as many allowed rows as an unfiltered probe reads, and search those lists with
a faiss bitmap selector; if that returns fewer than ``k`` hits while ``k`` rows are
allowed, every list is searched under the selector (exact over the allowed rows).

Changes: :meth:`VectorIndex.add` assigns new vectors to their nearest lists and
:meth:`VectorIndex.remove` deletes rows, both without retraining. When the index
drifts from what it was trained for (the count left ``[trained / 2, 2 · trained]``,
crossed :data:`EXACT_MAX`, or the lists grew :data:`_REBUILD_IMBALANCE` times more
uneven than at training), the next change retrains it from the vectors it holds.

:meth:`VectorIndex.save` writes ``index.faiss`` (faiss's own serialisation),
``ids.json`` and ``params.json`` (written last, atomically: a directory without it
holds no index); :meth:`VectorIndex.load` reads them back without re-clustering.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from aqe.search.embed import _usable_cpus

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["CALIBRATION_RECALL", "EXACT_MAX", "TARGET_RECALL", "VectorIndex", "exact_top"]

EXACT_MAX = 20_000
"""Largest index kept as one list (every row scored)."""
TARGET_RECALL = 0.95
"""The recall@10 an IVF index must keep against exact search."""
CALIBRATION_RECALL = 0.99
"""Recall@10 demanded on the calibration queries: a margin above :data:`TARGET_RECALL`."""
LISTS_PER_SQRT = 2.0
"""``nlist = LISTS_PER_SQRT · sqrt(n)``."""

_FORMAT = 2
_INDEX = "index.faiss"
_IDS = "ids.json"
_PARAMS = "params.json"
_CALIBRATION_QUERIES = 256
_CALIBRATION_K = 10
_CALIBRATION_NOISE = 1.5
_KMEANS_ITERATIONS = 10
_SAMPLE_PER_LIST = 64
_MAX_PROBE_FRACTION = 0.35  # above this share of lists an IVF probe costs as much as exact
_FILTER_BUDGET = 1.5  # allowed rows read under a filter, in unfiltered probes' rows
_REBUILD_GROWTH = 2.0  # retrain when the count leaves [trained / 2, 2 * trained]
_REBUILD_IMBALANCE = 1.5  # ... or the lists got this much more uneven than at training
_TRUTH_BLOCK = 65_536
_KEPT_PARAMS = (  # what a rebuild carries over; the rest is the build's outcome
    *("format", "backend", "structure", "precision", "metric", "dim"),
    *("seed", "exact_max", "nlist_asked", "model"),
)

Kind = Literal["exact", "ivf"]
Hits = list[tuple[str, float]]


@contextmanager
def _threads(count: int) -> Iterator[None]:
    """Run faiss (OpenMP) on ``count`` threads inside the block."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _check(ids: Sequence[str], vectors: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    if matrix.ndim != 2:
        raise ValueError(f"vectors must be 2-d (n, dim), got shape {matrix.shape}")
    if len(ids) != matrix.shape[0]:
        raise ValueError(f"{len(ids)} ids for {matrix.shape[0]} vectors")
    if len(set(ids)) != len(ids):
        raise ValueError("ids must be unique")
    if not np.isfinite(matrix).all():
        raise ValueError("vectors contain NaN or infinity")
    return matrix


def exact_top(matrix: NDArray[np.float32], queries: NDArray[np.float32], k: int) -> Any:
    """Rows of the ``k`` best scores of each query, best first (blocked matrix products).

    The ground truth of recall measurements: ``(len(queries), k)`` row numbers.
    """
    best_s = np.full((queries.shape[0], k), -np.inf, dtype=np.float32)
    best_i = np.zeros((queries.shape[0], k), dtype=np.int64)
    for start in range(0, matrix.shape[0], _TRUTH_BLOCK):
        scores = queries @ matrix[start : start + _TRUTH_BLOCK].T
        kk = min(k, scores.shape[1])
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        all_s = np.concatenate([best_s, np.take_along_axis(scores, part, 1)], axis=1)
        all_i = np.concatenate([best_i, part + start], axis=1)
        keep = np.argsort(-all_s, axis=1, kind="stable")[:, :k]
        best_s = np.take_along_axis(all_s, keep, 1)
        best_i = np.take_along_axis(all_i, keep, 1)
    return best_i


def _normalise_rows(matrix: NDArray[np.float32]) -> NDArray[np.float32]:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    np.maximum(norms, 1e-12, out=norms)
    out: NDArray[np.float32] = (matrix / norms).astype(np.float32)
    return out


def _calibrate(
    matrix: NDArray[np.float32],
    labels: NDArray[np.int64],
    centroids: NDArray[np.float32],
    rng: np.random.Generator,
) -> tuple[int, float]:
    """Smallest ``nprobe`` whose measured recall@10 reaches :data:`CALIBRATION_RECALL`.

    An ``IndexIVFFlat`` probe scores every row of the probed lists exactly, so a true
    neighbour is found iff its list is probed: recall at ``nprobe`` is the share of
    true neighbours whose list ranks among the query's ``nprobe`` best centroids.
    """
    n, dim = matrix.shape
    count = min(_CALIBRATION_QUERIES, n)
    a = matrix[rng.choice(n, count, replace=False)]
    b = matrix[rng.choice(n, count, replace=False)]
    mix = rng.uniform(0.0, 1.0, size=(count, 1)).astype(np.float32)
    noise = rng.standard_normal(a.shape).astype(np.float32) / math.sqrt(dim)
    queries = _normalise_rows(a + mix * b + _CALIBRATION_NOISE * noise)
    truth = exact_top(matrix, queries, _CALIBRATION_K)  # (q, 10): the true neighbours
    order = np.argsort(-(queries @ centroids.T), axis=1, kind="stable")
    rank = np.empty_like(order)
    rows = np.arange(count)[:, None]
    rank[rows, order] = np.arange(order.shape[1])[None, :]
    needed = rank[rows, labels[truth]]  # (q, 10): lists that must be probed, by rank
    lists = centroids.shape[0]
    for nprobe in range(1, lists + 1):
        recall = float(np.mean(needed < nprobe))
        if recall >= CALIBRATION_RECALL:
            return nprobe, recall
    return lists, 1.0  # pragma: no cover - nprobe == nlist always reaches 1.0


class VectorIndex:
    """Top-k cosine search over unit vectors (see the module docstring).

    Build one with :meth:`build` or :meth:`load`; the constructor is internal.
    """

    def __init__(self, index: Any, slots: list[str | None], params: dict[str, Any]) -> None:
        self._index = index  # faiss.IndexIVFFlat; labels are positions in ``slots``
        self._slots = slots  # label -> id, None where removed
        self._label = {pid: i for i, pid in enumerate(slots) if pid is not None}
        self.params = params
        self._refresh()

    def _refresh(self) -> None:
        """Recompute what follows from the faiss index: live labels, each row's list."""
        import faiss

        index = self._index
        invlists = index.invlists
        lists = np.full(len(self._slots), -1, dtype=np.int32)
        for number in range(index.nlist):
            size = invlists.list_size(number)
            if size:
                labels = faiss.rev_swig_ptr(invlists.get_ids(number), size)
                lists[labels] = number
        self._lists = lists  # label -> list, -1 where removed
        self._live = np.flatnonzero(lists >= 0).astype(np.int64)
        self._centroids = index.quantizer.reconstruct_n(0, index.nlist)
        self.nprobe = int(self.params.get("nprobe", 1))
        self.params["count"] = int(self._live.shape[0])

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
            exact_max: Largest ``n`` kept as one list.
            nlist: IVF lists; default ``LISTS_PER_SQRT·sqrt(n)``.
            model: The embedder's ``model_version`` the vectors came from, kept in
                :attr:`params` (``"model"``) so vectors of another backend or
                precision are never searched with this one's queries.

        Returns:
            The index.

        Raises:
            ValueError: Shapes disagree, ids repeat, or the values are not finite.
        """
        id_list = list(ids)
        matrix = _check(id_list, vectors)
        params: dict[str, Any] = {
            "format": _FORMAT,
            "backend": "faiss",
            "structure": "IndexIVFFlat",
            "precision": "float32",
            "metric": "inner_product",
            "dim": int(matrix.shape[1]),
            "seed": seed,
            "exact_max": exact_max,
            "nlist_asked": nlist,
            "model": model,
        }
        return cls._build(id_list, matrix, params)

    @classmethod
    def _build(
        cls, ids: list[str], matrix: NDArray[np.float32], params: dict[str, Any]
    ) -> VectorIndex:
        import faiss

        n, dim = matrix.shape
        params = {key: params[key] for key in _KEPT_PARAMS}
        params["faiss"] = faiss.__version__
        params["trained_count"] = n
        labels = np.arange(n, dtype=np.int64)
        exact_max = int(params["exact_max"])
        if n > exact_max and n >= 4 * _CALIBRATION_K:
            lists = int(params["nlist_asked"] or max(2, round(LISTS_PER_SQRT * math.sqrt(n))))
            lists = min(lists, n // 4)
            index: Any = faiss.IndexIVFFlat(
                faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT
            )
            index.cp.spherical = True
            index.cp.niter = _KMEANS_ITERATIONS
            index.cp.seed = int(params["seed"])
            index.cp.max_points_per_centroid = _SAMPLE_PER_LIST
            index.cp.min_points_per_centroid = 1  # small samples are fine (no warning)
            with _threads(_usable_cpus()):
                index.train(matrix)
                assign = index.quantizer.assign(matrix, 1).reshape(-1)
            centroids = index.quantizer.reconstruct_n(0, lists)
            rng = np.random.default_rng(int(params["seed"]))
            nprobe, recall = _calibrate(matrix, assign, centroids, rng)
            if nprobe / lists <= _MAX_PROBE_FRACTION:
                _add(index, matrix, labels, assign)
                params.update(
                    kind="ivf",
                    nlist=lists,
                    nprobe=nprobe,
                    calibration_recall=recall,
                    probed_share=nprobe / lists,
                )
                params["imbalance"] = float(index.invlists.imbalance_factor())
                return cls(index, list[str | None](ids), params)
            params["ivf_rejected"] = {
                "nlist": lists,
                "nprobe": nprobe,
                "probed_share": nprobe / lists,
            }
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, 1, faiss.METRIC_INNER_PRODUCT)
        index.quantizer.add(np.zeros((1, dim), dtype=np.float32))
        index.is_trained = True
        _add(index, matrix, labels, np.zeros(n, dtype=np.int64))
        params.update(kind="exact", nlist=1, nprobe=1)
        params["imbalance"] = 1.0
        return cls(index, list[str | None](ids), params)

    # -- queries ------------------------------------------------------------------

    @property
    def kind(self) -> Kind:
        """``"exact"`` (one list) or ``"ivf"``."""
        return "exact" if self._index.nlist == 1 else "ivf"

    @property
    def ids(self) -> list[str]:
        """The ids held, in the order a ``mask`` follows (build order, then additions)."""
        return [str(self._slots[label]) for label in self._live.tolist()]

    def __len__(self) -> int:
        return int(self._live.shape[0])

    def __contains__(self, pattern_id: object) -> bool:
        return pattern_id in self._label

    def search(
        self, query: NDArray[np.floating[Any]], k: int, *, mask: NDArray[np.bool_] | None = None
    ) -> Hits:
        """The ``k`` best ids for ``query``, best first, as ``(id, cosine)``.

        Args:
            query: A ``(dim,)`` unit vector.
            k: How many results.
            mask: Optional booleans aligned with :attr:`ids`; only ``True`` rows may be
                returned, and ``k`` are returned whenever ``k`` rows are allowed.

        Returns:
            Up to ``k`` ``(id, score)`` pairs.
        """
        q = self._query(query)
        selector = None if mask is None else self._selector(mask)
        if k <= 0 or not len(self):
            return []
        if selector is None:
            return self._search(q, k, self.nprobe)
        bitmap, allowed = selector
        if allowed == 0:
            return []
        if self.kind == "exact":
            return self._search(q, k, 1, bitmap)
        hits = self._filtered(q, k, mask, bitmap)  # type: ignore[arg-type]
        if len(hits) < min(k, allowed):
            hits = self._search(q, k, self._index.nlist, bitmap)
        return hits

    def exact(
        self, query: NDArray[np.floating[Any]], k: int, *, mask: NDArray[np.bool_] | None = None
    ) -> Hits:
        """Brute-force :meth:`search`: every (allowed) row scored, recall 1.0."""
        q = self._query(query)
        selector = None if mask is None else self._selector(mask)
        if k <= 0 or not len(self):
            return []
        return self._search(q, k, self._index.nlist, None if selector is None else selector[0])

    def _query(self, query: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        if q.shape[1] != self._index.d:
            raise ValueError(f"query has {q.shape[1]} dimensions, the index {self._index.d}")
        return q

    def _selector(self, mask: NDArray[np.bool_]) -> tuple[Any, int]:
        """A faiss bitmap over labels from a mask over :attr:`ids`, and its count."""
        m = np.asarray(mask, dtype=bool)
        if m.shape != (len(self),):
            raise ValueError(f"mask has shape {m.shape}, the index {len(self)} rows")
        bits = np.zeros(len(self._slots), dtype=bool)
        bits[self._live[m]] = True
        return np.packbits(bits, bitorder="little"), int(np.count_nonzero(m))

    def _search(self, q: NDArray[np.float32], k: int, nprobe: int, bitmap: Any = None) -> Hits:
        import faiss

        params = faiss.SearchParametersIVF()
        params.nprobe = nprobe
        if bitmap is not None:
            selector = faiss.IDSelectorBitmap(bitmap.shape[0], faiss.swig_ptr(bitmap))
            params.sel = selector
        scores, labels = self._index.search(q, k, params=params)
        return self._hits(scores[0], labels[0])

    def _filtered(
        self, q: NDArray[np.float32], k: int, mask: NDArray[np.bool_], bitmap: Any
    ) -> Hits:
        """IVF under a filter: probe until as many *allowed* rows are read as unfiltered.

        A filter that follows the content (a category) concentrates in few lists and
        stays cheap; a scattered one needs many lists (and then the caller's exact
        search over the allowed rows is the fallback).
        """
        import faiss

        index = self._index
        lists = index.nlist
        per_list = np.bincount(
            self._lists[self._live[np.asarray(mask, dtype=bool)]], minlength=lists
        )
        scores = self._centroids @ q[0]
        order = np.argsort(-scores, kind="stable")
        budget = _FILTER_BUDGET * self.nprobe * len(self) / lists
        reach = int(np.searchsorted(np.cumsum(per_list[order]), budget)) + 1
        chosen = order[:reach]
        chosen = chosen[per_list[chosen] > 0].astype(np.int64).reshape(1, -1)
        probe_scores = np.ascontiguousarray(scores[chosen], dtype=np.float32)
        params = faiss.SearchParametersIVF()
        params.nprobe = chosen.shape[1]
        selector = faiss.IDSelectorBitmap(bitmap.shape[0], faiss.swig_ptr(bitmap))
        params.sel = selector
        out_scores = np.empty((1, k), dtype=np.float32)
        out_labels = np.empty((1, k), dtype=np.int64)
        index.search_preassigned_c(
            1,
            faiss.swig_ptr(q),
            k,
            faiss.swig_ptr(chosen),
            faiss.swig_ptr(probe_scores),
            faiss.swig_ptr(out_scores),
            faiss.swig_ptr(out_labels),
            False,
            params,
        )
        return self._hits(out_scores[0], out_labels[0])

    def _hits(self, scores: Any, labels: Any) -> Hits:
        slots = self._slots
        return [
            (str(slots[label]), float(score))
            for score, label in zip(scores.tolist(), labels.tolist(), strict=True)
            if label >= 0
        ]

    # -- changes ------------------------------------------------------------------

    def add(self, ids: Sequence[str], vectors: NDArray[np.floating[Any]]) -> None:
        """Add new rows to their nearest lists (no retraining unless the index drifted).

        Raises:
            ValueError: Bad shapes or values, or an id the index already holds.
        """
        id_list = list(ids)
        matrix = _check(id_list, vectors)
        if matrix.shape[1] != self._index.d:
            raise ValueError(
                f"vectors have {matrix.shape[1]} dimensions, the index {self._index.d}"
            )
        held = [pid for pid in id_list if pid in self._label]
        if held:
            raise ValueError(f"{len(held)} ids already in the index, e.g. {held[0]!r}")
        if not id_list:
            return
        first = len(self._slots)
        labels = np.arange(first, first + len(id_list), dtype=np.int64)
        assign = self._index.quantizer.assign(matrix, 1).reshape(-1)
        _add(self._index, matrix, labels, assign)
        self._slots.extend(id_list)
        self._label.update((pid, first + i) for i, pid in enumerate(id_list))
        self._lists = np.concatenate([self._lists, assign.astype(np.int32)])
        self._live = np.concatenate([self._live, labels])
        self.params["count"] = int(self._live.shape[0])
        self._retrain_if_drifted()

    def remove(self, ids: Sequence[str]) -> None:
        """Remove rows by id.

        Raises:
            KeyError: An id the index does not hold (nothing is removed then).
        """
        import faiss

        missing = [pid for pid in ids if pid not in self._label]
        if missing:
            raise KeyError(f"{len(missing)} ids not in the index, e.g. {missing[0]!r}")
        labels = np.array([self._label.pop(pid) for pid in ids], dtype=np.int64)
        if labels.size == 0:
            return
        self._index.remove_ids(faiss.IDSelectorBatch(labels.shape[0], faiss.swig_ptr(labels)))
        for label in labels.tolist():
            self._slots[label] = None
        self._refresh()
        self._retrain_if_drifted()

    def drift(self) -> str | None:
        """Why the index should be retrained now, or ``None``."""
        n = len(self)
        trained = int(self.params["trained_count"])
        exact_max = int(self.params["exact_max"])
        if self.kind == "exact":
            # One list that rejected the IVF (no cluster structure) tries again at 2x.
            tried = trained > exact_max
            grown = n > exact_max and (not tried or n > _REBUILD_GROWTH * trained)
            return f"{n} rows, above exact_max {exact_max}" if grown else None
        if not trained / _REBUILD_GROWTH <= n <= trained * _REBUILD_GROWTH:
            return f"{n} rows, trained on {trained}"
        imbalance = float(self._index.invlists.imbalance_factor())
        if imbalance > _REBUILD_IMBALANCE * float(self.params["imbalance"]):
            return f"list imbalance {imbalance:.2f}, {self.params['imbalance']:.2f} at training"
        return None

    def _retrain_if_drifted(self) -> None:
        reason = self.drift()
        if reason is not None:
            self.rebuild(reason)

    def rebuild(self, reason: str = "asked") -> None:
        """Retrain from the vectors the index holds (ids keep their order)."""
        ids, matrix = self._vectors()
        fresh = VectorIndex._build(ids, matrix, self.params)
        fresh.params["rebuilt"] = reason
        self.__dict__.update(fresh.__dict__)

    def _vectors(self) -> tuple[list[str], NDArray[np.float32]]:
        """The held ids (in :attr:`ids` order) and their vectors, copied out of faiss."""
        import faiss

        index = self._index
        invlists = index.invlists
        dim = index.d
        matrix = np.empty((len(self._slots), dim), dtype=np.float32)
        for number in range(index.nlist):
            size = invlists.list_size(number)
            if size:
                labels = faiss.rev_swig_ptr(invlists.get_ids(number), size)
                codes = faiss.rev_swig_ptr(invlists.get_codes(number), size * index.code_size)
                matrix[labels] = codes.view(np.float32).reshape(size, dim)
        return self.ids, matrix[self._live]

    # -- persistence --------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """Write the index under ``directory``: faiss index, ids, params last.

        Args:
            directory: Created if missing; an index already there is replaced.
        """
        import faiss

        directory.mkdir(parents=True, exist_ok=True)
        params_path = directory / _PARAMS
        params_path.unlink(missing_ok=True)  # the directory holds no index until the end
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=_INDEX, suffix=".tmp")
        os.close(fd)
        try:
            faiss.write_index(self._index, tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, directory / _INDEX)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _write_atomic(directory / _IDS, json.dumps(self._slots))
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
        import faiss

        params_path = directory / _PARAMS
        if not params_path.is_file():
            raise FileNotFoundError(f"no vector index in {directory} (missing {_PARAMS})")
        params: dict[str, Any] = json.loads(params_path.read_text(encoding="utf-8"))
        if params.get("format") == 1:
            return cls._migrate(directory, params)
        if params.get("format") != _FORMAT:
            raise ValueError(
                f"{params_path}: vector index format {params.get('format')!r} is not {_FORMAT}"
            )
        slots: list[str | None] = json.loads((directory / _IDS).read_text(encoding="utf-8"))
        index: Any = faiss.read_index(str(directory / _INDEX))
        if index.d != int(params["dim"]) or index.nlist != int(params["nlist"]):
            raise ValueError(
                f"{directory / _INDEX}: {index.nlist} lists of {index.d} dimensions, "
                f"{_PARAMS} says {params['nlist']} of {params['dim']}"
            )
        loaded = cls(index, slots, params)
        held = sum(pid is not None for pid in slots)
        if len(loaded) != held:
            raise ValueError(f"{directory / _INDEX}: {len(loaded)} rows, {_IDS} names {held}")
        return loaded

    @classmethod
    def _migrate(cls, directory: Path, params: dict[str, Any]) -> VectorIndex:
        """An index built from a format-1 directory (the NumPy IVF's LanceDB table).

        In memory only: the directory is rewritten when the search set is next built.
        """
        import lancedb

        table = lancedb.connect(str(directory)).open_table("vectors").to_arrow()
        ids = [str(x) for x in table.column("id").to_pylist()]
        flat = table.column("vector").combine_chunks().values.to_numpy(zero_copy_only=False)
        matrix = np.asarray(flat, dtype=np.float32).reshape(len(ids), int(params["dim"]))
        index = cls.build(
            ids,
            matrix,
            seed=int(params.get("seed", 0)),
            exact_max=int(params.get("exact_max", EXACT_MAX)),
            model=params.get("model"),
        )
        index.params["migrated_from_format"] = 1
        return index


def _add(index: Any, matrix: NDArray[np.float32], labels: Any, assign: Any) -> None:
    """Append rows to the lists given by ``assign``, one block per list.

    faiss's own ``add`` appends row by row, so each list's buffer grows geometrically
    and ends up to twice its size (+35% resident at 100k, measured); growing each list
    once by its whole block keeps the index at the size of its vectors and ids.
    """
    import faiss

    labels = np.asarray(labels, dtype=np.int64)
    assign = np.asarray(assign, dtype=np.int64)
    invlists = index.invlists
    order = np.argsort(assign, kind="stable")
    counts = np.bincount(assign, minlength=index.nlist)
    ends = np.cumsum(counts)
    for number in np.flatnonzero(counts).tolist():
        rows = order[ends[number] - counts[number] : ends[number]]
        held = invlists.list_size(number)
        block_ids = np.ascontiguousarray(labels[rows])
        block = np.ascontiguousarray(matrix[rows])
        invlists.resize(number, held + rows.shape[0])
        invlists.update_entries(
            number,
            held,
            rows.shape[0],
            faiss.swig_ptr(block_ids),
            faiss.swig_ptr(block.view(np.uint8)),
        )
    index.ntotal = index.ntotal + matrix.shape[0]


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
