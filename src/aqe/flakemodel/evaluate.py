"""Evaluate flakiness predictors per project (leave one project out) and by cross-validation.

Protocols:

* ``per-project``: for each project, train on every other project and score it: how a
  model does on a code base it has never seen (Flakify's "per project", F1 0.73).
* ``cv``: stratified k-fold over all tests (Flakify's cross-validation, F1 0.79): test
  methods of one class can sit on both sides, so this is the easier number.

Every held-out test gets exactly one prediction, so the *pooled* overall scores are the
scores of all predictions together (what a team running the model everywhere sees);
*macro* averages the per-project scores (every project counts the same; projects with
one flaky test swing it). Both are reported.

Methods, all in the same run and with the same folds: ``keyword`` (a fixed vocabulary
rule: no training), ``logreg`` (logistic regression on identifier-part tokens, balanced
class weights, threshold by inner folds) and ``minilm`` (the flakiness model: MiniLM
embedding head + tail, code signals, a torch head; threshold by inner folds).
Resampling, weights and thresholds only ever see the training rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Literal

import msgspec
import numpy as np
from numpy.typing import NDArray

from aqe.errors import ConfigError
from aqe.flakemodel.data import TestCode
from aqe.flakemodel.features import code_tokens, keyword_rule
from aqe.flakemodel.model import FlakeModel, HeadConfig, best_f1_threshold, inner_folds

__all__ = [
    "ANCHORS",
    "METHODS",
    "EvalReport",
    "MethodReport",
    "Protocol",
    "Scores",
    "evaluate",
    "scores",
    "splits",
]

Protocol = Literal["per-project", "cv"]

ANCHORS: dict[str, float] = {"per-project": 0.73, "cv": 0.79}
"""Flakify's F1 (CodeBERT fine-tuned on test code; Fatima, Ghaleb, Briand, TSE 2023)."""

METHODS = ("keyword", "logreg", "minilm", "signals")
"""``signals`` is the torch head on code signals only (an ablation of ``minilm``)."""


class Scores(msgspec.Struct, frozen=True, kw_only=True):
    """Precision, recall, F1 and PR-AUC (average precision) of one set of predictions."""

    tests: int
    flaky: int
    flagged: int
    tp: int
    precision: float
    recall: float
    f1: float
    pr_auc: float | None
    """None without a flaky test (undefined)."""


class MethodReport(msgspec.Struct, frozen=True, kw_only=True):
    """One method's scores: per project, pooled over all projects, and the macro mean."""

    method: str
    per_project: dict[str, Scores]
    pooled: Scores
    macro_precision: float
    macro_recall: float
    macro_f1: float
    macro_pr_auc: float
    train_seconds: float


class EvalReport(msgspec.Struct, frozen=True, kw_only=True):
    """Every method of one run, with the protocol and the published anchor."""

    protocol: str
    folds: int
    tests: int
    flaky: int
    projects: int
    anchor_f1: float
    anchor: str
    methods: list[MethodReport]
    seconds: float


def scores(y: NDArray[np.bool_], p: NDArray[np.float64], flagged: NDArray[np.bool_]) -> Scores:
    """Scores of probabilities ``p`` and decisions ``flagged`` against labels ``y``."""
    from sklearn.metrics import average_precision_score

    tp = int((y & flagged).sum())
    n_flag = int(flagged.sum())
    n_pos = int(y.sum())
    precision = tp / n_flag if n_flag else 0.0
    recall = tp / n_pos if n_pos else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    pr_auc = float(average_precision_score(y, p)) if n_pos else None
    return Scores(
        tests=len(y),
        flaky=n_pos,
        flagged=n_flag,
        tp=tp,
        precision=precision,
        recall=recall,
        f1=f1,
        pr_auc=pr_auc,
    )


def splits(
    tests: Sequence[TestCode], protocol: Protocol, *, folds: int = 10, seed: int = 0
) -> list[tuple[str, NDArray[np.intp], NDArray[np.intp]]]:
    """(name, train rows, test rows) of every outer fold of ``protocol``."""
    n = len(tests)
    everything = np.arange(n)
    if protocol == "per-project":
        projects = sorted({t.project for t in tests})
        if len(projects) < 2:
            raise ConfigError("the per-project protocol needs at least two projects")
        out = []
        for name in projects:
            held = np.array([i for i, t in enumerate(tests) if t.project == name], dtype=np.intp)
            out.append((name, np.setdiff1d(everything, held), held))
        return out
    if protocol == "cv":
        y = np.array([bool(t.flaky) for t in tests])
        if y.sum() < folds:
            raise ConfigError(f"{folds}-fold cross-validation needs at least {folds} flaky tests")
        vals = inner_folds(y, None, folds, seed)
        return [(f"fold {k + 1}", np.setdiff1d(everything, v), v) for k, v in enumerate(vals)]
    raise ConfigError(f"unknown protocol {protocol!r}: per-project or cv")


# A method: (train rows, test rows, groups of the train rows) -> (probabilities, flagged).
Fitter = Callable[
    [NDArray[np.intp], NDArray[np.intp], list[str] | None],
    tuple[NDArray[np.float64], NDArray[np.bool_]],
]


def _keyword(tests: Sequence[TestCode]) -> Fitter:
    flags = np.array([keyword_rule(t.code) for t in tests])

    def fit(
        train: NDArray[np.intp], test: NDArray[np.intp], groups: list[str] | None
    ) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        return flags[test].astype(np.float64), flags[test]

    return fit


def _logreg(tests: Sequence[TestCode], y: NDArray[np.bool_], k: int, seed: int) -> Fitter:
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    # One vocabulary over every test: a token no training row has keeps weight 0, so
    # this equals vectorising each fold on its own (min_df 1), at a fraction of the cost.
    docs = [code_tokens(t.code) for t in tests]
    matrix = CountVectorizer(analyzer=lambda d: d, binary=True).fit_transform(docs).tocsr()

    def train_predict(tr: NDArray[np.intp], te: NDArray[np.intp]) -> NDArray[np.float64]:
        clf = LogisticRegression(class_weight="balanced", C=0.1, max_iter=2000, solver="liblinear")
        clf.fit(matrix[tr], y[tr])
        out: NDArray[np.float64] = clf.predict_proba(matrix[te])[:, 1]
        return out

    def fit(
        train: NDArray[np.intp], test: NDArray[np.intp], groups: list[str] | None
    ) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        oof = np.zeros(len(train))
        for val in inner_folds(y[train], groups, k, seed):
            rest = np.setdiff1d(np.arange(len(train)), val)
            oof[val] = train_predict(train[rest], train[val])
        threshold = best_f1_threshold(y[train], oof)
        p = train_predict(train, test)
        return p, p >= threshold

    return fit


def _head(
    x: NDArray[np.float32], y: NDArray[np.bool_], columns: list[str], config: HeadConfig
) -> Fitter:
    def fit(
        train: NDArray[np.intp], test: NDArray[np.intp], groups: list[str] | None
    ) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        model = FlakeModel.fit(x[train], y[train], columns=columns, groups=groups, config=config)
        p = model.predict_proba(x[test])
        return p, p >= model.threshold

    return fit


def _method_report(
    method: str,
    tests: Sequence[TestCode],
    y: NDArray[np.bool_],
    p: NDArray[np.float64],
    flagged: NDArray[np.bool_],
    seconds: float,
) -> MethodReport:
    projects = sorted({t.project for t in tests})
    of = np.array([t.project for t in tests])
    per = {name: scores(y[of == name], p[of == name], flagged[of == name]) for name in projects}
    rows = list(per.values())
    return MethodReport(
        method=method,
        per_project=per,
        pooled=scores(y, p, flagged),
        macro_precision=float(np.mean([s.precision for s in rows])),
        macro_recall=float(np.mean([s.recall for s in rows])),
        macro_f1=float(np.mean([s.f1 for s in rows])),
        macro_pr_auc=float(np.mean([s.pr_auc for s in rows if s.pr_auc is not None])),
        train_seconds=seconds,
    )


def evaluate(
    tests: Sequence[TestCode],
    protocol: Protocol,
    *,
    methods: Sequence[str] = METHODS,
    inputs: dict[str, tuple[NDArray[np.float32], list[str]]] | None = None,
    config: HeadConfig | None = None,
    folds: int = 10,
    seed: int = 0,
    on_fold: Callable[[str, int, int], None] | None = None,
) -> EvalReport:
    """Run ``methods`` over the outer folds of ``protocol``.

    Args:
        tests: Labelled tests.
        protocol: ``per-project`` or ``cv``.
        methods: Names from :data:`METHODS`.
        inputs: Method name -> (input matrix, column names) for the torch heads
            (``minilm``, ``signals``); built by the caller, who owns the embedder.
        config: Hyperparameters of the torch heads.
        folds: Outer folds of ``cv``.
        seed: Seed of folds and training.
        on_fold: Called with (method, folds done, folds in all).

    Raises:
        ConfigError: An unknown method, a head without inputs, unlabelled tests.
    """
    started = time.perf_counter()
    if any(t.flaky is None for t in tests):
        raise ConfigError("evaluation needs a label (`flaky`) on every test")
    y = np.array([bool(t.flaky) for t in tests])
    config = config or HeadConfig(seed=seed)
    k = config.inner_folds
    outer = splits(tests, protocol, folds=folds, seed=seed)
    groups_of = [t.project for t in tests]
    reports = []
    for method in methods:
        if method == "keyword":
            fitter = _keyword(tests)
        elif method == "logreg":
            fitter = _logreg(tests, y, k, seed)
        elif method in ("minilm", "signals") or method.startswith("minilm"):
            if inputs is None or method not in inputs:
                raise ConfigError(f"method {method!r} needs its input matrix")
            x, columns = inputs[method]
            fitter = _head(x, y, columns, config)
        else:
            raise ConfigError(f"unknown method {method!r}: one of {', '.join(METHODS)}")
        p = np.zeros(len(tests))
        flagged = np.zeros(len(tests), dtype=bool)
        t0 = time.perf_counter()
        for done, (_, train, test) in enumerate(outer):
            groups = [groups_of[i] for i in train] if protocol == "per-project" else None
            p[test], flagged[test] = fitter(train, test, groups)
            if on_fold is not None:
                on_fold(method, done + 1, len(outer))
        reports.append(_method_report(method, tests, y, p, flagged, time.perf_counter() - t0))
    return EvalReport(
        protocol=protocol,
        folds=len(outer),
        tests=len(tests),
        flaky=int(y.sum()),
        projects=len({t.project for t in tests}),
        anchor_f1=ANCHORS[protocol],
        anchor="Flakify (CodeBERT fine-tuned on test code, TSE 2023)",
        methods=reports,
        seconds=time.perf_counter() - started,
    )
