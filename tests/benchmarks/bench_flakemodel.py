"""Training time, inference per test and size of the flakiness model, against logistic regression.

Usage::

    python tests/benchmarks/bench_flakemodel.py [--data FILE] [--tests N] [--json]

On the FlakeFlagger development set (``../shared/data/flakeflagger/``, or ``--data``):

* training: :meth:`FlakeModel.fit` on every test (embedding + code signals; three inner
  folds for the threshold, then the final fit: what ``aqe flaky-model train`` does once
  the vectors are cached), next to the token logistic-regression baseline trained on
  the same tests with the same inner folds, measured in the same run (ratio);
* inference per test: the head alone (vectors given), and end to end for code never
  seen (signals + MiniLM on an in-memory cache + head), on 64 tests;
* model size: the artefact's bytes (what the object store holds).

Vectors come from the persistent cache ``.aqe/flakemodel/embeddings`` (filled by
``aqe flaky-model eval``/``train``); missing ones are computed (slow: ~20-50 tests/s).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from aqe.flakemodel.data import load_tests
from aqe.flakemodel.evaluate import _logreg
from aqe.flakemodel.inputs import Blocks, embed_codes, input_matrix
from aqe.flakemodel.model import FlakeModel, HeadConfig
from aqe.flakemodel.service import embedder_for
from aqe.search.embed import DIM

DEFAULT_DATA = Path(__file__).parents[2] / ".." / "shared" / "data" / "flakeflagger"
DEFAULT_CACHE = Path(__file__).parents[2] / ".aqe" / "flakemodel" / "embeddings"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA / "flakeflagger-dev.jsonl.gz")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--tests", type=int, default=0, help="Use the first N tests (0: all).")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not args.data.exists():
        print(f"skipped: no data set at {args.data}")
        return 0
    tests = load_tests(args.data, labelled=True)
    if args.tests:
        tests = tests[: args.tests]
    codes = [t.code for t in tests]
    y = np.array([bool(t.flaky) for t in tests])
    groups = [t.project for t in tests]
    with embedder_for(args.cache) as embedder:
        vectors = embed_codes(embedder, codes)
        version = embedder.model_version
    blocks = Blocks(embedding=True, signals=True)
    x = input_matrix(blocks, codes, vectors)

    started = time.perf_counter()
    model = FlakeModel.fit(x, y, columns=blocks.names(DIM), embedder=version, groups=groups)
    train_s = time.perf_counter() - started

    everything = np.arange(len(tests))
    started = time.perf_counter()
    _logreg(tests, y, HeadConfig().inner_folds, 0)(everything, everything[:1], groups)
    logreg_s = time.perf_counter() - started

    sample = min(64, len(tests))
    started = time.perf_counter()
    model.predict_proba(x[:sample])
    head_ms = (time.perf_counter() - started) * 1000 / sample
    # End to end for unseen code: an in-memory cache, so MiniLM runs on every text.
    with embedder_for(None) as cold:
        cold.embed(["warm-up"])  # loading the model is start-up, not inference
        started = time.perf_counter()
        fresh = input_matrix(blocks, codes[:sample], embed_codes(cold, codes[:sample]))
        model.predict_proba(fresh)
        e2e_ms = (time.perf_counter() - started) * 1000 / sample
    size = len(model.to_bytes())
    row = {
        "tests": len(tests),
        "flaky": int(y.sum()),
        "columns": x.shape[1],
        "train_s": round(train_s, 2),
        "logreg_train_s": round(logreg_s, 2),
        "train_ratio_vs_logreg": round(train_s / logreg_s, 2),
        "head_ms_per_test": round(head_ms, 4),
        "end_to_end_ms_per_test": round(e2e_ms, 2),
        "model_bytes": size,
        "parameters": sum(w.size for _, w in model.weights),
        "threshold": round(model.threshold, 4),
    }
    if args.json:
        print(json.dumps(row))
        return 0
    print(
        f"flakiness model on {row['tests']} tests ({row['flaky']} flaky), "
        f"{row['columns']} inputs:\n"
        f"  train (3 inner folds + final fit) {train_s:.1f} s; token logistic regression, same "
        f"folds, {logreg_s:.1f} s: ratio {row['train_ratio_vs_logreg']}x\n"
        f"  inference per test: head {head_ms:.3f} ms; end to end (signals + MiniLM + head, "
        f"uncached) {e2e_ms:.1f} ms\n"
        f"  model size {size / 1024:.0f} KiB ({row['parameters']} parameters)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
