"""The relevance harness: ranking metrics, benchmark loaders and an evaluation loop.

Metrics take a ranked list of ids and graded judgements (``id -> grade``; a grade above
0 is relevant):

* nDCG@k with linear gain and a log2 discount, ``DCG = sum grade_i / log2(i + 1)``,
  divided by the DCG of the judgements sorted best first (as trec_eval and BEIR do);
* MRR: ``1 / rank`` of the first relevant id (0 when none, optionally only in the top k);
* Recall@k: the share of relevant ids found in the top k.

Two layouts load into a :class:`Dataset`:

* BEIR: ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``,
  ``text``), ``qrels/test.tsv`` or ``qrels.tsv`` (query-id, corpus-id, score; header);
* CoSQA (CoCLR's retrieval split): ``code_idx_map.txt`` (snippet -> id) and
  ``cosqa-retrieval-dev-500.json`` (``doc`` = query, ``code`` = the gold snippet).
"""

from __future__ import annotations

import ast
import inspect
import json
import math
import re
import statistics
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from aqe.datasets import find_file, open_text
from aqe.errors import ConfigError, ReportError

if TYPE_CHECKING:
    from aqe.search.keyword import KeywordDoc
    from aqe.search.projection import LibraryState

__all__ = [
    "Dataset",
    "EvalResult",
    "dataset_library",
    "evaluate",
    "load_beir",
    "load_cosqa",
    "load_dataset",
    "mrr",
    "ndcg_at_k",
    "recall_at_k",
]

COSQA_CORPUS = "code_idx_map.txt"
COSQA_QUERIES = "cosqa-retrieval-dev-500.json"


def _unique(ranked: Sequence[str]) -> list[str]:
    # A result list that repeats an id must not earn credit twice.
    return list(dict.fromkeys(ranked))


def ndcg_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 10) -> float:
    """Normalised discounted cumulative gain of the top ``k`` of ``ranked``.

    Returns:
        A value in [0, 1]; 0 when nothing is relevant.
    """
    ideal_grades = sorted((g for g in relevant.values() if g > 0), reverse=True)[:k]
    ideal = sum(g / math.log2(i + 2) for i, g in enumerate(ideal_grades))
    if ideal == 0:
        return 0.0
    gained = sum(
        relevant.get(doc_id, 0) / math.log2(i + 2)
        for i, doc_id in enumerate(_unique(ranked)[:k])
        if relevant.get(doc_id, 0) > 0
    )
    return gained / ideal


def mrr(ranked: Sequence[str], relevant: Mapping[str, int], k: int | None = None) -> float:
    """Reciprocal rank of the first relevant id (within the top ``k`` when given)."""
    top = _unique(ranked)
    for rank, doc_id in enumerate(top if k is None else top[:k], start=1):
        if relevant.get(doc_id, 0) > 0:
            return 1.0 / rank
    return 0.0


def recall_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 10) -> float:
    """Share of the relevant ids that appear in the top ``k``; 0 when none is relevant."""
    wanted = {doc_id for doc_id, grade in relevant.items() if grade > 0}
    if not wanted:
        return 0.0
    return len(wanted.intersection(_unique(ranked)[:k])) / len(wanted)


class Dataset(msgspec.Struct, frozen=True, kw_only=True):
    """A retrieval benchmark: documents, queries and graded judgements."""

    name: str
    corpus: dict[str, KeywordDoc]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    unmatched: int = 0
    """Judgements dropped because their document is not in the corpus."""

    def judged(self) -> list[str]:
        """Ids of the queries that have at least one relevant document, in order."""
        return [
            qid
            for qid in self.queries
            if any(grade > 0 for grade in self.qrels.get(qid, {}).values())
        ]


class EvalResult(msgspec.Struct, frozen=True, kw_only=True):
    """Mean metrics of one search function over a dataset's judged queries."""

    dataset: str
    k: int
    queries: int
    ndcg: float
    mrr: float
    recall: float
    latency_p50_ms: float
    latency_p95_ms: float
    per_query_ndcg: dict[str, float] = {}


def evaluate(
    search: Callable[[str, int], list[str]],
    dataset: Dataset,
    k: int = 10,
    *,
    on_progress: Callable[[int], None] | None = None,
) -> EvalResult:
    """Run every judged query of ``dataset`` through ``search`` and average the metrics.

    Args:
        search: ``(query text, k) -> ranked ids``.
        dataset: The benchmark.
        k: Cut-off for nDCG and recall (MRR looks at the same top ``k``).
        on_progress: Called with the number of queries done after each one (as
            :meth:`aqe.search.embed.Embedder.embed` does; the total is
            ``len(dataset.judged())``).

    Returns:
        Means over the judged queries, and per-query latency percentiles.
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    judged = dataset.judged()
    per_query: dict[str, float] = {}
    ranks: list[float] = []
    recalls: list[float] = []
    latencies: list[float] = []
    for done, qid in enumerate(judged, start=1):
        relevant = dataset.qrels[qid]
        started = time.perf_counter()
        ranked = search(dataset.queries[qid], k)
        latencies.append((time.perf_counter() - started) * 1000)
        per_query[qid] = ndcg_at_k(ranked, relevant, k)
        ranks.append(mrr(ranked, relevant, k))
        recalls.append(recall_at_k(ranked, relevant, k))
        if on_progress is not None:
            on_progress(done)

    def mean(values: Sequence[float]) -> float:
        return statistics.fmean(values) if values else 0.0

    def percentile(q: float) -> float:
        if not latencies:
            return 0.0
        ordered = sorted(latencies)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return EvalResult(
        dataset=dataset.name,
        k=k,
        queries=len(judged),
        ndcg=mean(list(per_query.values())),
        mrr=mean(ranks),
        recall=mean(recalls),
        latency_p50_ms=statistics.median(latencies) if latencies else 0.0,
        latency_p95_ms=percentile(0.95),
        per_query_ndcg=per_query,
    )


def _jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    rows: list[tuple[int, dict[str, Any]]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(str(path), f"cannot read: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ReportError(str(path), f"invalid JSON: {exc.msg}", number) from exc
        if not isinstance(row, dict):
            raise ReportError(str(path), "expected a JSON object", number)
        if not isinstance(row.get("_id"), str | int) or row["_id"] == "":
            raise ReportError(str(path), "missing _id", number)
        rows.append((number, row))
    return rows


def _text(path: Path, row: dict[str, Any], key: str, line: int) -> str:
    value = row.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ReportError(str(path), f"{key} is not a string", line)
    return value


def _qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    header_allowed = True
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(str(path), f"cannot read: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        first, header_allowed = header_allowed, False
        cells = line.rstrip("\r").split("\t")
        if len(cells) != 3:
            raise ReportError(
                str(path), f"expected 3 tab-separated columns, got {len(cells)}", number
            )
        query_id, doc_id, score = (cell.strip() for cell in cells)
        try:
            grade = int(score)
        except ValueError:
            if first:
                continue  # the header line
            raise ReportError(str(path), f"score {score!r} is not an integer", number) from None
        if not query_id or not doc_id:
            raise ReportError(str(path), "empty query or corpus id", number)
        qrels.setdefault(query_id, {})[doc_id] = grade
    return qrels


def load_beir(directory: Path) -> Dataset:
    """Load a BEIR-layout benchmark (``qrels/test.tsv``, else ``qrels.tsv``).

    Titles become :attr:`KeywordDoc.name`, texts :attr:`KeywordDoc.description`.
    Judgements of unknown queries are dropped; those of unknown documents are dropped
    and counted in :attr:`Dataset.unmatched`.

    Raises:
        ReportError: A file is missing, unreadable or has a malformed line.
    """
    from aqe.search.keyword import KeywordDoc

    corpus_path = directory / "corpus.jsonl"
    queries_path = directory / "queries.jsonl"
    qrels_path = directory / "qrels" / "test.tsv"
    if not qrels_path.is_file():
        qrels_path = directory / "qrels.tsv"
    for path in (corpus_path, queries_path, qrels_path):
        if not path.is_file():
            raise ReportError(str(path), "missing")
    corpus: dict[str, KeywordDoc] = {}
    for line, row in _jsonl(corpus_path):
        doc_id = str(row["_id"])
        corpus[doc_id] = KeywordDoc(
            id=doc_id,
            name=_text(corpus_path, row, "title", line),
            description=_text(corpus_path, row, "text", line),
        )
    queries = {
        str(row["_id"]): _text(queries_path, row, "text", line)
        for line, row in _jsonl(queries_path)
    }
    qrels: dict[str, dict[str, int]] = {}
    unmatched = 0
    for query_id, judged in _qrels(qrels_path).items():
        if query_id not in queries:
            continue
        known = {doc_id: grade for doc_id, grade in judged.items() if doc_id in corpus}
        unmatched += len(judged) - len(known)
        if known:
            qrels[query_id] = known
    return Dataset(
        name=directory.name, corpus=corpus, queries=queries, qrels=qrels, unmatched=unmatched
    )


_DEF = re.compile(r"^[ \t]*(?:async[ \t]+)?def[ \t]+(\w+)[ \t]*\(", re.MULTILINE)
# Fallback for snippets ast cannot parse: a triple-quoted string as the first statement.
_DOCSTRING = re.compile(r".*?\)[^:\n]*:[ \t]*\n\s*[rRuU]?(\"\"\"|\'\'\')(.*?)\1", re.DOTALL)


def _name_and_docstring(code: str) -> tuple[str, str]:
    try:
        tree = ast.parse(textwrap.dedent(code))
    except (SyntaxError, ValueError):
        tree = None
    if tree is not None:
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                return node.name, ast.get_docstring(node) or ""
    name = _DEF.search(code)
    if name is None:
        return "", ""
    doc = _DOCSTRING.match(code, name.end())
    return name.group(1), inspect.cleandoc(doc.group(2)) if doc else ""


def _code_doc(doc_id: str, code: str) -> KeywordDoc:
    from aqe.search.keyword import KeywordDoc

    name, description = _name_and_docstring(code)
    return KeywordDoc(id=doc_id, name=name, description=description, code=code, language="python")


def _read_json(path: Path) -> Any:
    found = find_file(path)
    if found is None:
        raise ReportError(str(path), "missing")
    try:
        with open_text(found) as fh:
            return json.load(fh)
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise ReportError(str(path), f"cannot read: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ReportError(str(path), f"invalid JSON: {exc.msg}", exc.lineno) from exc


def _normalise(code: str) -> str:
    return " ".join(code.split())


def load_cosqa(directory: Path) -> Dataset:
    """Load CoCLR's CoSQA retrieval split: 6,267 snippets, 500 dev queries.

    Each snippet becomes a :class:`KeywordDoc` whose id is its integer id as text,
    ``code`` the snippet, ``name`` the function name and ``description`` the
    docstring (whitespace collapsed). A query's gold snippet is looked up verbatim,
    then with whitespace collapsed; queries whose gold is not found are counted in
    :attr:`Dataset.unmatched` and left unjudged.

    Raises:
        ReportError: A file is missing or not shaped as expected.
    """
    map_path = directory / COSQA_CORPUS
    queries_path = directory / COSQA_QUERIES
    snippets = _read_json(map_path)
    if not isinstance(snippets, dict):
        raise ReportError(str(map_path), "expected a JSON object of snippet -> id")
    corpus: dict[str, KeywordDoc] = {}
    by_code: dict[str, str] = {}
    by_shape: dict[str, str] = {}
    for code, number in snippets.items():
        if not isinstance(number, int):
            raise ReportError(str(map_path), f"id {number!r} is not an integer")
        doc_id = str(number)
        corpus[doc_id] = _code_doc(doc_id, code)
        by_code[code] = doc_id
        by_shape.setdefault(_normalise(code), doc_id)
    items = _read_json(queries_path)
    if not isinstance(items, list):
        raise ReportError(str(queries_path), "expected a JSON list of queries")
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    unmatched = 0
    for position, item in enumerate(items):
        if not (
            isinstance(item, dict)
            and isinstance(item.get("doc"), str)
            and isinstance(item.get("code"), str)
        ):
            raise ReportError(str(queries_path), f"item {position} lacks doc/code strings")
        query_id = str(item.get("idx", position))
        queries[query_id] = item["doc"]
        gold = by_code.get(item["code"]) or by_shape.get(_normalise(item["code"]))
        if gold is None:
            unmatched += 1
        else:
            qrels[query_id] = {gold: 1}
    return Dataset(
        name=directory.name, corpus=corpus, queries=queries, qrels=qrels, unmatched=unmatched
    )


def dataset_library(dataset: Dataset) -> LibraryState:
    """The data set's corpus as a pattern library (one pattern per document, same id)."""
    from aqe.search.projection import LibraryState, PatternDoc

    return LibraryState(
        patterns={
            doc_id: PatternDoc(
                name=doc.name,
                code=doc.code,
                description=doc.description,
                category=doc.category,
                language=doc.language,
                framework=doc.framework,
                tags=tuple(doc.tags),
            )
            for doc_id, doc in dataset.corpus.items()
        }
    )


def load_dataset(path: Path) -> Dataset:
    """Load a benchmark directory, telling BEIR from CoSQA by its files.

    Raises:
        ConfigError: ``path`` holds neither layout.
        ReportError: See :func:`load_beir` and :func:`load_cosqa`.
    """
    if (path / "corpus.jsonl").is_file():
        return load_beir(path)
    if find_file(path / COSQA_CORPUS) is not None:
        return load_cosqa(path)
    raise ConfigError(
        f"{path} is neither a BEIR benchmark (corpus.jsonl) nor CoSQA ({COSQA_CORPUS})"
    )
