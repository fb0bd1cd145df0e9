"""The relevance harness: metrics against hand-computed values, loaders, the eval loop."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from aqe.errors import ConfigError, ReportError
from aqe.search.metrics import (
    Dataset,
    evaluate,
    load_beir,
    load_cosqa,
    load_dataset,
    mrr,
    ndcg_at_k,
    recall_at_k,
)

COSQA = Path(__file__).resolve().parents[2] / "data" / "cosqa"


# -- metrics ---------------------------------------------------------------------------


def test_ndcg_graded_by_hand() -> None:
    # DCG = 1/log2(2) + 2/log2(4) = 2; ideal = 2/log2(2) + 1/log2(3) = 2.6309...
    value = ndcg_at_k(["a", "b", "c"], {"a": 1, "c": 2}, k=10)
    assert value == pytest.approx(2 / (2 + 1 / math.log2(3)))
    assert value == pytest.approx(0.76018, abs=1e-5)


def test_ndcg_perfect_and_empty() -> None:
    assert ndcg_at_k(["c", "a"], {"a": 1, "c": 2}) == pytest.approx(1.0)
    assert ndcg_at_k([], {"a": 1}) == 0.0
    assert ndcg_at_k(["a"], {}) == 0.0
    assert ndcg_at_k(["a"], {"a": 0}) == 0.0


def test_ndcg_cut_off_at_k() -> None:
    assert ndcg_at_k(["x", "a"], {"a": 1}, k=1) == 0.0
    assert ndcg_at_k(["x", "a"], {"a": 1}, k=2) == pytest.approx(1 / math.log2(3))


def test_ndcg_ideal_uses_only_the_top_k_grades() -> None:
    # Three relevant, k=1: the ideal is the best grade at rank 1 -> 3.
    assert ndcg_at_k(["b"], {"a": 3, "b": 1, "c": 2}, k=1) == pytest.approx(1 / 3)


def test_repeated_ids_earn_credit_once() -> None:
    assert ndcg_at_k(["a", "a"], {"a": 1, "b": 1}, k=2) == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert recall_at_k(["a", "a", "a"], {"a": 1, "b": 1}, k=3) == 0.5
    assert mrr(["x", "x", "a"], {"a": 1}) == pytest.approx(1 / 2)


def test_mrr_by_hand() -> None:
    assert mrr(["x", "y", "a", "b"], {"a": 1, "b": 2}) == pytest.approx(1 / 3)
    assert mrr(["x", "y", "a"], {"a": 1}, k=2) == 0.0
    assert mrr(["x", "y"], {"a": 1}) == 0.0
    assert mrr(["a"], {"a": 0}) == 0.0


def test_recall_by_hand() -> None:
    relevant = {"a": 1, "b": 2, "c": 0}
    assert recall_at_k(["a", "x", "b"], relevant, k=2) == 0.5
    assert recall_at_k(["a", "x", "b"], relevant, k=3) == 1.0
    assert recall_at_k(["c"], relevant) == 0.0
    assert recall_at_k(["a"], {}) == 0.0


# -- BEIR ------------------------------------------------------------------------------


def write_beir(root: Path, *, qrels_at_top: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    corpus = [
        {"_id": "d1", "title": "parse_header", "text": "Parse an HTTP header."},
        {"_id": "d2", "title": "json_roundtrip", "text": "Encode and decode JSON."},
        {"_id": "d3", "title": "", "text": "Retry with backoff."},
    ]
    (root / "corpus.jsonl").write_text("\n".join(json.dumps(row) for row in corpus) + "\n\n")
    queries = [
        {"_id": "q1", "text": "http header parsing"},
        {"_id": "q2", "text": "json"},
        {"_id": "q3", "text": "unjudged query"},
    ]
    (root / "queries.jsonl").write_text("\n".join(json.dumps(row) for row in queries))
    qrels = "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td3\t1\nq2\td2\t1\nq2\tgone\t1\nq9\td1\t1\n"
    if qrels_at_top:
        (root / "qrels.tsv").write_text(qrels)
    else:
        (root / "qrels").mkdir()
        (root / "qrels" / "test.tsv").write_text(qrels)
    return root


def test_beir_loader_reads_corpus_queries_and_graded_qrels(tmp_path: Path) -> None:
    dataset = load_beir(write_beir(tmp_path / "tiny"))
    assert dataset.name == "tiny"
    assert sorted(dataset.corpus) == ["d1", "d2", "d3"]
    assert dataset.corpus["d1"].name == "parse_header"
    assert dataset.corpus["d1"].description == "Parse an HTTP header."
    assert dataset.queries == {
        "q1": "http header parsing",
        "q2": "json",
        "q3": "unjudged query",
    }
    # q9 is no query; "gone" is no document (counted).
    assert dataset.qrels == {"q1": {"d1": 2, "d3": 1}, "q2": {"d2": 1}}
    assert dataset.unmatched == 1
    assert dataset.judged() == ["q1", "q2"]


def test_beir_loader_accepts_top_level_qrels(tmp_path: Path) -> None:
    dataset = load_dataset(write_beir(tmp_path / "flat", qrels_at_top=True))
    assert dataset.qrels["q1"] == {"d1": 2, "d3": 1}


def test_beir_malformed_json_line_names_file_and_line(tmp_path: Path) -> None:
    root = write_beir(tmp_path / "bad")
    with (root / "corpus.jsonl").open("a") as handle:
        handle.write('{"_id": "d4", "text": \n')
    with pytest.raises(ReportError) as caught:
        load_beir(root)
    assert caught.value.path.endswith("corpus.jsonl")
    assert caught.value.line == 5
    assert "invalid JSON" in caught.value.reason


def test_beir_row_without_id_is_reported(tmp_path: Path) -> None:
    root = write_beir(tmp_path / "noid")
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "a"}\n{"text": "b"}\n')
    with pytest.raises(ReportError, match=r"queries.jsonl:2: missing _id"):
        load_beir(root)


def test_beir_bad_qrels_score_is_reported(tmp_path: Path) -> None:
    root = write_beir(tmp_path / "badscore")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\thigh\n")
    with pytest.raises(ReportError, match=r"test.tsv:2: score 'high' is not an integer"):
        load_beir(root)


def test_beir_qrels_with_wrong_column_count_is_reported(tmp_path: Path) -> None:
    root = write_beir(tmp_path / "cols")
    (root / "qrels" / "test.tsv").write_text("q1\td1\t1\nq1 d2 1\n")
    with pytest.raises(ReportError, match=r"test.tsv:2: expected 3 tab-separated columns"):
        load_beir(root)


def test_beir_missing_file_is_reported(tmp_path: Path) -> None:
    root = write_beir(tmp_path / "partial")
    (root / "queries.jsonl").unlink()
    with pytest.raises(ReportError, match=r"queries\.jsonl: missing"):
        load_beir(root)


def test_load_dataset_rejects_other_directories(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="neither a BEIR benchmark"):
        load_dataset(tmp_path)


# -- CoSQA -----------------------------------------------------------------------------


def test_cosqa_loader_on_a_tiny_copy(tmp_path: Path) -> None:
    snippets = {
        'def add(a, b):\n    """Add two numbers."""\n    return a + b': 0,
        "def sub(a, b):\n    return a - b": 1,
        "async def fetch(url):\n    '''Fetch a URL.\n\n    Returns bytes.'''\n    ...": 2,
    }
    (tmp_path / "code_idx_map.txt").write_text(json.dumps(snippets))
    items = [
        {"idx": "cosqa-1", "doc": "python add numbers", "code": next(iter(snippets))},
        # The same snippet as id 1, with different whitespace.
        {"idx": "cosqa-2", "doc": "subtract", "code": "def sub(a, b):\n  return a - b"},
        {"idx": "cosqa-3", "doc": "not in corpus", "code": "def nope(): pass"},
    ]
    (tmp_path / "cosqa-retrieval-dev-500.json").write_text(json.dumps(items))
    dataset = load_dataset(tmp_path)
    assert dataset.corpus["0"].name == "add"
    assert dataset.corpus["0"].description == "Add two numbers."
    assert dataset.corpus["1"].description == ""
    assert dataset.corpus["2"].name == "fetch"
    assert dataset.corpus["2"].description == "Fetch a URL.\n\nReturns bytes."
    assert dataset.qrels == {"cosqa-1": {"0": 1}, "cosqa-2": {"1": 1}}
    assert dataset.unmatched == 1
    assert len(dataset.queries) == 3


def test_cosqa_docstring_fallback_for_unparseable_snippets(tmp_path: Path) -> None:
    code = 'def broken(x):\n    """Still documented."""\n    return x +'
    (tmp_path / "code_idx_map.txt").write_text(json.dumps({code: 7}))
    (tmp_path / "cosqa-retrieval-dev-500.json").write_text("[]")
    doc = load_cosqa(tmp_path).corpus["7"]
    assert (doc.name, doc.description) == ("broken", "Still documented.")


def test_cosqa_malformed_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "code_idx_map.txt").write_text('{"def f(): pass": 0,\n oops}')
    (tmp_path / "cosqa-retrieval-dev-500.json").write_text("[]")
    with pytest.raises(ReportError) as caught:
        load_cosqa(tmp_path)
    assert caught.value.line == 2


def test_real_cosqa_ships_with_6267_snippets_and_500_matched_queries() -> None:
    # The repository's gzipped copy: a clean clone evaluates on real data.
    assert (COSQA / "code_idx_map.txt.gz").is_file()
    dataset = load_dataset(COSQA)
    assert len(dataset.corpus) == 6267
    assert len(dataset.queries) == 500
    assert len(dataset.judged()) == 500
    assert dataset.unmatched == 0
    assert sum(1 for doc in dataset.corpus.values() if doc.name) == 6267


# -- evaluate --------------------------------------------------------------------------


def test_evaluate_averages_over_judged_queries() -> None:
    dataset = Dataset(
        name="toy",
        corpus={},
        queries={"q1": "first", "q2": "second", "q3": "unjudged"},
        qrels={"q1": {"a": 1}, "q2": {"b": 1}},
    )
    answers = {"first": ["a", "x"], "second": ["x", "y", "b"], "unjudged": ["a"]}
    seen: list[int] = []
    result = evaluate(
        lambda query, k: answers[query][:k],
        dataset,
        k=10,
        on_progress=seen.append,
    )
    assert result.queries == 2
    assert result.ndcg == pytest.approx((1.0 + 1 / math.log2(4)) / 2)
    assert result.mrr == pytest.approx((1.0 + 1 / 3) / 2)
    assert result.recall == 1.0
    assert result.per_query_ndcg == {"q1": 1.0, "q2": pytest.approx(0.5)}
    assert seen == [1, 2]
    assert result.latency_p50_ms >= 0.0
    assert result.latency_p95_ms >= result.latency_p50_ms


def test_evaluate_with_keyword_index_on_beir_fixture(tmp_path: Path) -> None:
    from aqe.search.keyword import KeywordIndex

    dataset = load_beir(write_beir(tmp_path / "tiny"))
    index = KeywordIndex.build(dataset.corpus.values())
    result = evaluate(lambda q, k: [doc for doc, _ in index.search(q, k)], dataset)
    assert result.queries == 2
    assert result.mrr == 1.0
