"""The flakiness model: a small head over frozen MiniLM embeddings and code signals.

One interface: :meth:`FlakeModel.fit` (train, with the decision threshold chosen by
inner cross-validation on the training rows only), :meth:`FlakeModel.predict_proba`,
:meth:`FlakeModel.to_bytes` / :meth:`FlakeModel.from_bytes` (a canonical msgpack
artefact, so equal models have equal bytes and one sha256 digest names them).

Two heads over standardised inputs, both weighting the positive class by
negatives/positives of the training rows (3 % positives in FlakeFlagger: unweighted, a
head learns to say "not flaky"):

* ``hidden=0`` (default): logistic regression (L-BFGS, L2 ``c``): under a second a fit,
  which the 116 fits of the two evaluation protocols need on 2 shared cores;
* ``hidden>0``: Linear(d, hidden) -> GELU -> Dropout -> Linear(hidden, 1) in torch,
  AdamW; about 12 s a fit on the loaded machine, so not what the README measured.

The threshold maximises F1 over out-of-fold probabilities of ``inner_folds`` folds of
the training rows (grouped by project when groups are given, so it is chosen for
unseen projects), never on the rows evaluated. Scoring runs in NumPy; torch and
scikit-learn are imported inside the functions that train.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
from numpy.typing import NDArray

from aqe.errors import ConfigError

__all__ = ["FORMAT", "FlakeModel", "HeadConfig", "best_f1_threshold", "inner_folds"]

FORMAT = "aqe.flakemodel/1"


class HeadConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Hyperparameters of the head and of its training."""

    hidden: int = 0
    """Hidden units of the MLP head; 0: a linear (logistic) head, fitted by L-BFGS."""
    c: float = 0.05
    """Inverse L2 strength of the linear head."""
    dropout: float = 0.2
    epochs: int = 12
    batch_size: int = 1024
    lr: float = 3e-3
    weight_decay: float = 1e-2
    inner_folds: int = 3
    seed: int = 0
    threads: int = 1
    """torch threads while training (1: steady on a shared machine)."""


class _Artefact(msgspec.Struct, frozen=True, kw_only=True):
    format: str
    config: HeadConfig
    columns: list[str]
    embedder: str
    mean: bytes
    scale: bytes
    threshold: float
    weights: list[tuple[str, list[int], bytes]]
    trained_rows: int
    trained_positives: int


_ENCODER = msgspec.msgpack.Encoder(order="deterministic")


def best_f1_threshold(y: NDArray[np.bool_], p: NDArray[np.float64]) -> float:
    """The probability cut that maximises F1 on ``(y, p)`` (0.5 without positives)."""
    if not y.any():
        return 0.5
    order = np.argsort(-p, kind="stable")
    ys = y[order].astype(np.float64)
    ps = p[order]
    tp = np.cumsum(ys)
    k = np.arange(1, len(ys) + 1, dtype=np.float64)
    f1 = 2 * tp / (k + ys.sum())
    # Only cut between distinct probabilities.
    last_of_run = np.r_[ps[1:] != ps[:-1], True]
    f1 = np.where(last_of_run, f1, -1.0)
    best = int(np.argmax(f1))
    below = ps[best + 1] if best + 1 < len(ps) else 0.0
    return float((ps[best] + below) / 2)


def _fit_head(
    x: NDArray[np.float32], y: NDArray[np.bool_], config: HeadConfig
) -> list[tuple[str, NDArray[np.float32]]]:
    if config.hidden == 0:
        return _fit_linear(x, y, config)
    import torch
    from torch import nn

    before = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        torch.manual_seed(config.seed)
        gen = torch.Generator().manual_seed(config.seed)
        head = nn.Sequential(
            nn.Linear(x.shape[1], config.hidden),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, 1),
        )
        pos = int(y.sum())
        weight = (len(y) - pos) / pos if pos else 1.0
        loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([weight]))
        opt = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        xt = torch.from_numpy(np.ascontiguousarray(x))
        yt = torch.from_numpy(y.astype(np.float32)).unsqueeze(1)
        head.train()
        for _ in range(config.epochs):
            perm = torch.randperm(len(xt), generator=gen)
            for start in range(0, len(xt), config.batch_size):
                idx = perm[start : start + config.batch_size]
                opt.zero_grad()
                loss = loss_fn(head(xt[idx]), yt[idx])
                loss.backward()
                opt.step()
        return [(k, v.detach().numpy().astype(np.float32)) for k, v in head.state_dict().items()]
    finally:
        torch.set_num_threads(before)


def _fit_linear(
    x: NDArray[np.float32], y: NDArray[np.bool_], config: HeadConfig
) -> list[tuple[str, NDArray[np.float32]]]:
    """Logistic regression with balanced class weights (negatives/positives), L-BFGS.

    On the shared 2 cores the MLP head cost about 12 s a fit under load, and the two
    protocols need 116 fits; this one costs well under a second.
    """
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=config.c, class_weight="balanced", max_iter=200, tol=1e-3)
    clf.fit(x, y)
    return [
        ("lin.weight", clf.coef_.astype(np.float32)),
        ("lin.bias", clf.intercept_.astype(np.float32)),
    ]


_ERF = np.vectorize(math.erf, otypes=[np.float64])


def _forward(weights: Sequence[tuple[str, NDArray[np.float32]]], x: NDArray[np.float32]) -> Any:
    """The head's forward pass in NumPy (eval mode: no dropout); float64 probabilities.

    NumPy, not torch: scoring (``aqe flaky-model predict``) then never imports torch,
    which costs seconds per command. GELU is the exact (erf) form torch trains with.
    """
    w = dict(weights)
    if "lin.weight" in w:
        lin = x.astype(np.float64) @ w["lin.weight"].T.astype(np.float64) + w["lin.bias"]
        return 1.0 / (1.0 + np.exp(-lin[:, 0]))
    h = (x @ w["0.weight"].T + w["0.bias"]).astype(np.float64)
    h = 0.5 * h * (1.0 + _ERF(h / math.sqrt(2.0)))
    z = h @ w["3.weight"].T.astype(np.float64) + w["3.bias"].astype(np.float64)
    return 1.0 / (1.0 + np.exp(-z[:, 0]))


def inner_folds(
    y: NDArray[np.bool_], groups: Sequence[str] | None, k: int, seed: int
) -> list[NDArray[np.intp]]:
    """Validation index sets of ``k`` inner folds (by group when groups are given)."""
    rng = np.random.default_rng(seed)
    n = len(y)
    if groups is not None and len(set(groups)) >= k:
        names = sorted(set(groups))
        rng.shuffle(names)
        # Spread projects so each fold gets a similar number of positives.
        pos = {g: 0 for g in names}
        for g, label in zip(groups, y, strict=True):
            pos[g] += int(label)
        load = [0] * k
        fold_of: dict[str, int] = {}
        for g in sorted(names, key=lambda g: -pos[g]):
            f = int(np.argmin(load))
            fold_of[g] = f
            load[f] += pos[g] + 1
        assign = np.array([fold_of[g] for g in groups])
    else:
        assign = np.empty(n, dtype=np.intp)
        for label in (False, True):
            idx = np.flatnonzero(y == label)
            rng.shuffle(idx)
            assign[idx] = np.arange(len(idx)) % k
    return [np.flatnonzero(assign == f) for f in range(k)]


class FlakeModel:
    """A trained head plus the scaling, threshold and columns it was trained with."""

    def __init__(self, artefact: _Artefact) -> None:
        self._a = artefact
        self.mean = np.frombuffer(artefact.mean, dtype=np.float32)
        self.scale = np.frombuffer(artefact.scale, dtype=np.float32)
        self.weights = [
            (name, np.frombuffer(raw, dtype=np.float32).reshape(shape).copy())
            for name, shape, raw in artefact.weights
        ]
        self.train_seconds = 0.0

    @property
    def threshold(self) -> float:
        """Probabilities at or above it are called flaky."""
        return self._a.threshold

    @property
    def columns(self) -> list[str]:
        """The input columns, in order."""
        return list(self._a.columns)

    @property
    def config(self) -> HeadConfig:
        """The hyperparameters it was trained with."""
        return self._a.config

    @property
    def embedder(self) -> str:
        """The embedding model version its inputs came from ("" without embeddings)."""
        return self._a.embedder

    @property
    def trained_rows(self) -> tuple[int, int]:
        """(rows, positives) it was trained on."""
        return self._a.trained_rows, self._a.trained_positives

    @classmethod
    def fit(
        cls,
        x: NDArray[np.float32],
        y: NDArray[np.bool_],
        *,
        columns: Sequence[str],
        embedder: str = "",
        groups: Sequence[str] | None = None,
        config: HeadConfig | None = None,
    ) -> FlakeModel:
        """Train on ``(x, y)``; the threshold comes from inner folds of these rows.

        Args:
            x: Input rows (see :func:`aqe.flakemodel.inputs.input_matrix`).
            y: Labels.
            columns: Names of ``x``'s columns (kept in the artefact).
            embedder: The embedding model version (kept, and checked when scoring).
            groups: Project of each row: inner folds hold out whole projects.
            config: Hyperparameters.

        Raises:
            ConfigError: No positive or no negative row, or shapes disagree.
        """
        config = config or HeadConfig()
        if x.ndim != 2 or len(x) != len(y) or x.shape[1] != len(columns):
            raise ConfigError(
                f"inputs {x.shape} do not match {len(y)} labels, {len(columns)} columns"
            )
        if y.all() or not y.any():
            raise ConfigError("training needs flaky and non-flaky tests")
        started = time.perf_counter()
        mean = x.mean(axis=0).astype(np.float32)
        scale = x.std(axis=0).astype(np.float32)
        scale[scale < 1e-6] = 1.0
        xs = ((x - mean) / scale).astype(np.float32)
        oof = np.zeros(len(y))
        seen = np.zeros(len(y), dtype=bool)
        for val in inner_folds(y, groups, config.inner_folds, config.seed):
            train = np.setdiff1d(np.arange(len(y)), val)
            if not y[train].any() or y[train].all() or len(val) == 0:
                continue
            oof[val] = _forward(_fit_head(xs[train], y[train], config), xs[val])
            seen[val] = True
        threshold = best_f1_threshold(y[seen], oof[seen]) if seen.any() else 0.5
        weights = _fit_head(xs, y, config)
        model = cls(
            _Artefact(
                format=FORMAT,
                config=config,
                columns=list(columns),
                embedder=embedder,
                mean=mean.tobytes(),
                scale=scale.tobytes(),
                threshold=threshold,
                weights=[(k, list(v.shape), v.tobytes()) for k, v in weights],
                trained_rows=len(y),
                trained_positives=int(y.sum()),
            )
        )
        model.train_seconds = time.perf_counter() - started
        return model

    def predict_proba(self, x: NDArray[np.float32]) -> NDArray[np.float64]:
        """Probability of being flaky, one per row of ``x``."""
        if x.ndim != 2 or x.shape[1] != len(self.mean):
            raise ConfigError(
                f"inputs have {x.shape[-1]} columns; the model reads {len(self.mean)}"
            )
        xs = ((x - self.mean) / self.scale).astype(np.float32)
        out: NDArray[np.float64] = _forward(self.weights, xs)
        return out

    def to_bytes(self) -> bytes:
        """The canonical artefact (equal models, equal bytes)."""
        return _ENCODER.encode(self._a)

    @property
    def digest(self) -> str:
        """sha256 of :meth:`to_bytes`, hex."""
        return hashlib.sha256(self.to_bytes()).hexdigest()

    @property
    def model_id(self) -> str:
        """``fm-`` + the digest's first 16 hex digits."""
        return f"fm-{self.digest[:16]}"

    @classmethod
    def from_bytes(cls, data: bytes) -> FlakeModel:
        """Load an artefact written by :meth:`to_bytes`.

        Raises:
            ConfigError: The bytes are not a flakiness model of this format.
        """
        try:
            artefact = msgspec.msgpack.decode(data, type=_Artefact)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ConfigError(f"not a flakiness model artefact: {exc}") from exc
        if artefact.format != FORMAT:
            raise ConfigError(
                f"flakiness model format {artefact.format!r}; this aqe reads {FORMAT}"
            )
        return cls(artefact)
