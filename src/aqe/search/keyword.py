"""BM25 keyword search over patterns, on tantivy, with code-aware tokenisation.

Every text is indexed twice:

* **split**: identifiers are cut at ``snake_case`` underscores, ``camelCase`` humps,
  acronym ends (``HTTPHeader`` → ``http header``) and letter/digit borders, then
  lowercased and stemmed (English), so ``parse`` finds ``test_parseHTTPHeader`` and
  ``parsing`` finds ``parser``;
* **whole**: runs of word characters kept intact and lowercased, so the identifier
  itself (``test_parsehttpheader``) is a term, and an exact name outranks a text that
  merely mentions its parts.

tantivy's regex tokeniser has no look-around, so the camel-case cut happens in Python
(spaces inserted at the borders) before tantivy's own analyser sees the text; a query
goes through the same two steps. Queries never reach tantivy's query parser: they are
analysed into terms and built as boolean queries of boosted term queries, so quotes,
colons, ``AND`` or unbalanced parentheses in user input are just text.

Field boosts (:data:`DEFAULT_BOOSTS`) were chosen with the relevance harness in
:mod:`aqe.search.metrics` on CoSQA, where this index reaches nDCG@10 0.40 (published
BM25: 0.37); stemming was worth +0.03 there and the camel-case cut +0.01.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import msgspec
import tantivy

from aqe.errors import ProjectionError

__all__ = [
    "DEFAULT_BOOSTS",
    "FILTER_FIELDS",
    "KeywordDoc",
    "KeywordIndex",
    "split_terms",
    "whole_terms",
]

_SPLIT = "aqe_code_split_v1"
_WHOLE = "aqe_code_whole_v1"

FILTER_FIELDS = ("category", "framework", "language")
"""Fields ``search(filters=...)`` matches exactly (case-sensitive)."""

# field -> analyser; every searched field is in DEFAULT_BOOSTS.
_TEXT_FIELDS = {
    "name": _SPLIT,
    "description": _SPLIT,
    "tags": _SPLIT,
    "code": _SPLIT,
    "whole": _WHOLE,
}

DEFAULT_BOOSTS: Mapping[str, float] = {
    "name": 0.5,
    "description": 1.0,
    "tags": 1.0,
    "code": 1.0,
    "whole": 0.2,
}
"""Per-field BM25 multipliers, measured on CoSQA (500 queries, 6,267 snippets).

A pattern's name is nearly always in its code too (``def name(``), so a name boost
above the code's over-rewards name matches: name 2.0 lost 0.06 nDCG@10. The
description is worth at least the code's weight, more when the code does not repeat
it. The whole-identifier field is a light tie-breaker for exact names; at weight 1 it
cost 0.02. Tags are unmeasured (CoSQA has none) and weigh like the description.
"""

_CAMEL = re.compile(
    r"(?<=[a-z])(?=[A-Z])"  # parseHttp
    r"|(?<=[A-Z])(?=[A-Z][a-z])"  # HTTPHeader
    r"|(?<=[^\W\d_])(?=\d)"  # utf8
    r"|(?<=\d)(?=[^\W\d_])"  # 2str
)

# Heap for the one writer of a build; tantivy splits it among its indexing threads.
_WRITER_HEAP = 128_000_000
_TIE_MARGIN = 16


def _split_analyzer() -> tantivy.TextAnalyzer:
    # [^\W_]: Unicode letters and digits, so underscores separate words.
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.regex(r"[^\W_]+"))
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )


def _whole_analyzer() -> tantivy.TextAnalyzer:
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.regex(r"\w+"))
        .filter(tantivy.Filter.remove_long(80))
        .filter(tantivy.Filter.lowercase())
        .build()
    )


_ANALYZERS: dict[str, tantivy.TextAnalyzer] = {
    _SPLIT: _split_analyzer(),
    _WHOLE: _whole_analyzer(),
}


def _decamel(text: str) -> str:
    return _CAMEL.sub(" ", text)


def split_terms(text: str) -> list[str]:
    """The terms the *split* analyser makes of ``text`` (identifier parts, stemmed).

    >>> split_terms("test_parseHTTPHeader")
    ['test', 'pars', 'http', 'header']
    """
    return list(_ANALYZERS[_SPLIT].analyze(_decamel(text)))


def whole_terms(text: str) -> list[str]:
    """The terms the *whole* analyser makes of ``text`` (identifiers kept intact).

    >>> whole_terms("test_parseHTTPHeader(x)")
    ['test_parsehttpheader', 'x']
    """
    return list(_ANALYZERS[_WHOLE].analyze(text))


class KeywordDoc(msgspec.Struct, frozen=True, kw_only=True):
    """What the keyword index knows of one pattern."""

    id: str
    name: str = ""
    description: str = ""
    code: str = ""
    tags: tuple[str, ...] = ()
    category: str = ""
    framework: str = ""
    language: str = ""


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("id", stored=True, tokenizer_name="raw")
    for field, analyzer in _TEXT_FIELDS.items():
        # Positions are never used (no phrase queries); frequencies are, by BM25.
        builder.add_text_field(field, tokenizer_name=analyzer, index_option="freq")
    for field in FILTER_FIELDS:
        builder.add_text_field(field, tokenizer_name="raw", index_option="basic")
    return builder.build()


def _register(index: tantivy.Index) -> None:
    for name, analyzer in _ANALYZERS.items():
        index.register_tokenizer(name, analyzer)


def _document(doc: KeywordDoc) -> tantivy.Document:
    tags = " ".join(doc.tags)
    fields: dict[str, Any] = {
        "id": doc.id,
        "name": _decamel(doc.name),
        "description": _decamel(doc.description),
        "tags": _decamel(tags),
        "code": _decamel(doc.code),
        "whole": "\n".join((doc.name, doc.description, tags, doc.code)),
    }
    for field in FILTER_FIELDS:
        value = getattr(doc, field)
        if value:
            fields[field] = value
    return tantivy.Document(**fields)


class KeywordIndex:
    """A tantivy BM25 index of :class:`KeywordDoc`, in RAM or in a directory."""

    def __init__(self, index: tantivy.Index, boosts: Mapping[str, float] | None = None) -> None:
        """Wrap an opened tantivy index; use :meth:`build` or :meth:`open` instead.

        Args:
            index: A tantivy index with this module's schema and analysers registered.
            boosts: Per-field BM25 multipliers; unknown fields are rejected, missing
                ones are not searched. Defaults to :data:`DEFAULT_BOOSTS`.

        Raises:
            ValueError: ``boosts`` names a field the index does not have.
        """
        boosts = dict(DEFAULT_BOOSTS if boosts is None else boosts)
        unknown = sorted(set(boosts) - set(_TEXT_FIELDS))
        if unknown:
            raise ValueError(f"unknown keyword fields {unknown}; known: {sorted(_TEXT_FIELDS)}")
        self._index = index
        self._schema = index.schema
        self._boosts = {field: b for field, b in boosts.items() if b > 0}
        self._searcher = index.searcher()

    @classmethod
    def build(
        cls,
        docs: Iterable[KeywordDoc],
        directory: Path | None = None,
        *,
        boosts: Mapping[str, float] | None = None,
    ) -> KeywordIndex:
        """Index ``docs`` with one commit.

        Args:
            docs: The documents; ids should be unique (a repeated id is indexed twice).
            directory: Where to write the index (created if missing; an index already
                there is replaced). ``None`` keeps it in RAM.
            boosts: See :class:`KeywordIndex`.

        Returns:
            The index, ready to search.
        """
        schema = _schema()
        if directory is None:
            index = tantivy.Index(schema)
        else:
            directory.mkdir(parents=True, exist_ok=True)
            index = tantivy.Index(schema, path=str(directory), reuse=False)
        _register(index)
        writer = index.writer(heap_size=_WRITER_HEAP)
        for doc in docs:
            writer.add_document(_document(doc))
        writer.commit()
        writer.wait_merging_threads()
        index.reload()
        return cls(index, boosts)

    @classmethod
    def open(cls, directory: Path, *, boosts: Mapping[str, float] | None = None) -> KeywordIndex:
        """Open an index that :meth:`build` wrote to ``directory``.

        Raises:
            ProjectionError: There is no readable keyword index in ``directory``, or
                it lacks one of this module's fields (written by another version).
        """
        if not (directory / "meta.json").is_file():
            raise ProjectionError(f"no keyword index at {directory}")
        try:
            index = tantivy.Index.open(str(directory))
        except ValueError as exc:
            raise ProjectionError(f"cannot open keyword index at {directory}: {exc}") from exc
        _register(index)
        schema = index.schema
        for field in ("id", *_TEXT_FIELDS, *FILTER_FIELDS):
            try:
                tantivy.Query.term_query(schema, field, "probe")
            except ValueError as exc:
                raise ProjectionError(
                    f"{directory} holds a tantivy index of another layout: {exc}"
                ) from exc
        return cls(index, boosts)

    def __len__(self) -> int:
        return int(self._searcher.num_docs)

    def _text_query(self, query: str) -> tantivy.Query | None:
        clauses: list[tuple[tantivy.Occur, tantivy.Query]] = []
        split = list(dict.fromkeys(split_terms(query)))
        whole = list(dict.fromkeys(whole_terms(query)))
        for field, boost in self._boosts.items():
            terms = whole if _TEXT_FIELDS[field] == _WHOLE else split
            for term in terms:
                term_query = tantivy.Query.term_query(
                    self._schema, field, term, index_option="freq"
                )
                clauses.append((tantivy.Occur.Should, tantivy.Query.boost_query(term_query, boost)))
        if not clauses:
            return None
        return tantivy.Query.boolean_query(clauses)

    def search(
        self, query: str, k: int, *, filters: Mapping[str, str] | None = None
    ) -> list[tuple[str, float]]:
        """The ``k`` best documents for ``query`` by BM25, best first.

        Any text is a valid query: it is analysed like the documents and its terms
        are OR-ed; text that yields no terms finds nothing. Equal scores are ordered by id.

        Args:
            query: Free text, identifiers, anything.
            k: How many results at most.
            filters: Exact (case-sensitive) values for ``category``, ``framework``,
                ``language``; empty values are ignored.

        Returns:
            ``(id, score)`` pairs, best first.

        Raises:
            ValueError: ``filters`` names another field.
        """
        must: list[tuple[tantivy.Occur, tantivy.Query]] = []
        for field, value in (filters or {}).items():
            if field not in FILTER_FIELDS:
                raise ValueError(f"cannot filter on {field!r}; filter fields: {FILTER_FIELDS}")
            if value:
                exact = tantivy.Query.term_query(self._schema, field, value, index_option="basic")
                # Score 0: a filter narrows the results without moving their BM25 scores.
                must.append((tantivy.Occur.Must, tantivy.Query.const_score_query(exact, 0.0)))
        if k < 1:
            return []
        text = self._text_query(query)
        if text is None:
            return []
        full = tantivy.Query.boolean_query([(tantivy.Occur.Must, text), *must]) if must else text
        return self._top(full, k)

    def _top(self, query: tantivy.Query, k: int) -> list[tuple[str, float]]:
        # tantivy orders equal scores by doc address, which depends on segmenting;
        # fetch past the k-th score's ties so the id tie-break is exact.
        limit = k + _TIE_MARGIN
        while True:
            hits = self._searcher.search(query, limit, count=False).hits
            if len(hits) < limit or hits[-1][0] < hits[k - 1][0]:
                break
            limit *= 4
        scored = [
            (str(self._searcher.doc(address).get_first("id")), float(score))
            for score, address in hits
        ]
        scored.sort(key=lambda hit: (-hit[1], hit[0]))
        return scored[:k]
