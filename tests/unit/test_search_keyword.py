"""The tantivy keyword index: code-aware terms, BM25 order, filters, hostile input, disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from aqe.errors import ProjectionError
from aqe.search.keyword import KeywordDoc, KeywordIndex, split_terms, whole_terms

CORPUS = [
    KeywordDoc(
        id="http-header-parse",
        name="test_parseHTTPHeader",
        description="Parses a raw HTTP header block into a case-insensitive mapping.",
        code=(
            "def test_parseHTTPHeader():\n"
            '    headers = parse_header(b"Content-Type: text/html\\r\\n")\n'
            '    assert headers["content-type"] == "text/html"\n'
        ),
        tags=("http", "parsing"),
        category="unit",
        framework="pytest",
        language="python",
    ),
    KeywordDoc(
        id="json-roundtrip",
        name="test_json_roundtrip",
        description="Encoding then decoding a payload returns the same value.",
        code="def test_json_roundtrip():\n    assert json.loads(json.dumps(data)) == data\n",
        tags=("json", "property"),
        category="unit",
        framework="pytest",
        language="python",
    ),
    KeywordDoc(
        id="login-e2e",
        name="loginFlowSucceeds",
        description="Logs in through the browser and lands on the dashboard.",
        code=(
            "test('loginFlowSucceeds', async ({ page }) => {\n"
            "  await page.goto('/login');\n"
            "  await expect(page).toHaveURL('/dashboard');\n"
            "});\n"
        ),
        tags=("e2e", "auth"),
        category="e2e",
        framework="playwright",
        language="typescript",
    ),
    KeywordDoc(
        id="retry-flaky",
        name="retry_on_timeout",
        description="Retries a flaky network call with exponential backoff before failing.",
        code=(
            "@retry(times=3, backoff=2.0)\n"
            "def call_service(client):\n"
            "    return client.get('/health')\n"
        ),
        tags=("flaky", "network"),
        category="resilience",
        framework="pytest",
        language="python",
    ),
    KeywordDoc(
        id="utf8-decode",
        name="decodeUtf8Bytes",
        description="Decodes UTF-8 bytes, replacing invalid sequences.",
        code="fn decode_utf8_bytes(b: &[u8]) -> String { String::from_utf8_lossy(b).into() }\n",
        tags=("encoding",),
        category="unit",
        framework="cargo-test",
        language="rust",
    ),
]


@pytest.fixture(scope="module")
def index() -> KeywordIndex:
    return KeywordIndex.build(CORPUS)


def ids(hits: list[tuple[str, float]]) -> list[str]:
    return [doc_id for doc_id, _ in hits]


def test_split_terms_cut_snake_camel_acronyms_and_digits() -> None:
    assert split_terms("test_parseHTTPHeader") == ["test", "pars", "http", "header"]
    assert split_terms("decodeUtf8Bytes") == ["decod", "utf", "8", "byte"]
    assert split_terms("XMLHttpRequest2") == ["xml", "http", "request", "2"]


def test_whole_terms_keep_identifiers_intact_and_lowercase() -> None:
    assert whole_terms("test_parseHTTPHeader(x)") == ["test_parsehttpheader", "x"]
    assert whole_terms("os.path.exists") == ["os", "path", "exists"]


@pytest.mark.parametrize(
    "query",
    ["parse", "http", "header", "test_parsehttpheader", "test_parseHTTPHeader", "HTTPHeader"],
)
def test_an_identifier_is_found_by_its_parts_and_as_a_whole(
    index: KeywordIndex, query: str
) -> None:
    assert ids(index.search(query, 1)) == ["http-header-parse"]


def test_camel_case_name_found_by_a_word_inside_it(index: KeywordIndex) -> None:
    assert ids(index.search("login flow", 1)) == ["login-e2e"]
    assert ids(index.search("utf8", 1)) == ["utf8-decode"]


def test_stemming_matches_inflections(index: KeywordIndex) -> None:
    assert ids(index.search("retrying flakiness backoffs", 1)) == ["retry-flaky"]


def test_bm25_orders_by_relevance_and_scores_descend(index: KeywordIndex) -> None:
    hits = index.search("json decode", 5)
    assert ids(hits)[0] == "json-roundtrip"
    assert "utf8-decode" in ids(hits)
    scores = [score for _, score in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(score > 0 for score in scores)


def test_k_limits_results(index: KeywordIndex) -> None:
    assert len(index.search("test", 2)) == 2
    assert index.search("test", 0) == []


def test_whole_identifier_outranks_a_text_with_its_parts() -> None:
    docs = [
        KeywordDoc(id="a", description="parse the json body then log it"),
        KeywordDoc(id="b", code="result = parse_json(body)"),
    ]
    assert ids(KeywordIndex.build(docs).search("parse_json", 2)) == ["b", "a"]


def test_ties_are_broken_by_id() -> None:
    docs = [KeywordDoc(id=f"doc-{n:02d}", name="same words") for n in reversed(range(30))]
    index = KeywordIndex.build(docs)
    hits = index.search("same", 5)
    assert ids(hits) == ["doc-00", "doc-01", "doc-02", "doc-03", "doc-04"]
    assert len({score for _, score in hits}) == 1


def test_filters_match_exactly(index: KeywordIndex) -> None:
    assert ids(index.search("test", 10, filters={"framework": "playwright"})) == ["login-e2e"]
    python_unit = index.search("test", 10, filters={"category": "unit", "language": "python"})
    assert set(ids(python_unit)) == {"http-header-parse", "json-roundtrip"}
    assert index.search("test", 10, filters={"framework": "Pytest"}) == []
    assert index.search("test", 10, filters={"language": ""}) == index.search("test", 10)


def test_filters_do_not_change_scores(index: KeywordIndex) -> None:
    unfiltered = dict(index.search("test header", 10))
    for doc_id, score in index.search("test header", 10, filters={"framework": "pytest"}):
        assert score == unfiltered[doc_id]


def test_unknown_filter_field_is_rejected(index: KeywordIndex) -> None:
    with pytest.raises(ValueError, match="cannot filter on 'owner'"):
        index.search("test", 10, filters={"owner": "me"})


@pytest.mark.parametrize(
    "query",
    [
        "",
        "   ",
        '"unbalanced',
        "title:foo",
        "a AND OR NOT b",
        "((()",
        "foo^2 bar~ baz* [1 TO 5] {x}",
        "-+!&|\\/",
        "日本語のテスト",
        "naïve café",
        "\x00\n\t",
        "x" * 10_000,
    ],
)
def test_hostile_queries_never_raise(index: KeywordIndex, query: str) -> None:
    hits = index.search(query, 5)
    assert isinstance(hits, list)


def test_queries_without_terms_find_nothing(index: KeywordIndex) -> None:
    assert index.search("", 5) == []
    assert index.search("!!! ??? ...", 5) == []


def test_unicode_text_is_searchable() -> None:
    index = KeywordIndex.build([KeywordDoc(id="u", description="Prüfung der Größe")])
    assert ids(index.search("größe", 1)) == ["u"]


def test_len_and_empty_index() -> None:
    assert len(KeywordIndex.build(CORPUS)) == len(CORPUS)
    empty = KeywordIndex.build([])
    assert len(empty) == 0
    assert empty.search("anything", 5) == []


def test_persisted_index_reopens_with_same_results(tmp_path: Path) -> None:
    directory = tmp_path / "nested" / "keyword"
    built = KeywordIndex.build(CORPUS, directory)
    reopened = KeywordIndex.open(directory)
    assert len(reopened) == len(CORPUS)
    for query in ("parse http header", "test_parsehttpheader", "login", "decode bytes"):
        assert reopened.search(query, 5) == built.search(query, 5)
    rust = {"language": "rust"}
    assert ids(reopened.search("decode", 5, filters=rust)) == ["utf8-decode"]
    assert reopened.search("decode", 5, filters=rust) == built.search("decode", 5, filters=rust)


def test_build_replaces_an_index_already_in_the_directory(tmp_path: Path) -> None:
    KeywordIndex.build(CORPUS, tmp_path)
    KeywordIndex.build([KeywordDoc(id="only", name="solitary")], tmp_path)
    reopened = KeywordIndex.open(tmp_path)
    assert len(reopened) == 1
    assert ids(reopened.search("solitary", 5)) == ["only"]


def test_open_without_an_index_is_a_projection_error(tmp_path: Path) -> None:
    with pytest.raises(ProjectionError, match="no keyword index"):
        KeywordIndex.open(tmp_path / "missing")


def test_open_a_foreign_tantivy_index_is_a_projection_error(tmp_path: Path) -> None:
    import tantivy

    schema = tantivy.SchemaBuilder().add_text_field("body", stored=True).build()
    writer = tantivy.Index(schema, path=str(tmp_path)).writer()
    writer.add_document(tantivy.Document(body="hello"))
    writer.commit()
    writer.wait_merging_threads()
    del writer
    with pytest.raises(ProjectionError, match="another layout"):
        KeywordIndex.open(tmp_path)


def test_custom_boosts_change_the_ranking() -> None:
    docs = [
        KeywordDoc(id="by-name", name="cache", code="x = 1"),
        KeywordDoc(id="by-code", name="other", code="cache = build_cache(cache_size)"),
    ]
    built = KeywordIndex.build(docs, boosts={"name": 10.0, "code": 1.0})
    assert ids(built.search("cache", 2))[0] == "by-name"
    code_only = KeywordIndex.build(docs, boosts={"code": 1.0})
    assert ids(code_only.search("cache", 2)) == ["by-code"]
    with pytest.raises(ValueError, match="unknown keyword fields"):
        KeywordIndex.build(docs, boosts={"title": 1.0})
