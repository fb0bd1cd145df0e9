"""The starter pattern library: its content, and the loader's formats and errors."""

from __future__ import annotations

import json
import re
import tomllib
from collections import Counter
from importlib import resources
from pathlib import Path

import msgspec
import pytest

from aqe.errors import ReportError
from aqe.events.patterns import PatternAdded
from aqe.search.starter import load_pattern_files, load_starter_library, pattern_files

KEBAB = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
TEXT_FIELDS = ("pattern_id", "name", "code", "description", "category", "language", "framework")

LIBRARY = load_starter_library()
PYTHON = [p for p in LIBRARY if p.language == "python"]


def _toml_entry(pattern_id: str, **fields: str) -> str:
    values = {
        "name": "A pattern",
        "description": "Why and when.",
        "category": "fixtures",
        "framework": "pytest",
        **fields,
    }
    body = "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())
    return f'[[pattern]]\nid = "{pattern_id}"\n{body}code = """\nassert True\n"""\n'


def _json_entry(pattern_id: str, **fields: object) -> dict[str, object]:
    return {"id": pattern_id, "name": "A pattern", "code": "x = 1\n", **fields}


# --- the shipped library ---------------------------------------------------------------


def test_library_is_large_enough() -> None:
    assert len(LIBRARY) >= 60


def test_ids_are_unique_kebab_case_and_sorted() -> None:
    ids = [p.pattern_id for p in LIBRARY]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert [i for i in ids if not KEBAB.match(i)] == []


@pytest.mark.parametrize("pattern", LIBRARY, ids=lambda p: p.pattern_id)
def test_every_field_is_filled(pattern: PatternAdded) -> None:
    for field in TEXT_FIELDS:
        value = getattr(pattern, field)
        assert isinstance(value, str), field
        assert value.strip(), f"{pattern.pattern_id}: empty {field}"
    assert pattern.tags, f"{pattern.pattern_id}: no tags"
    assert all(tag.strip() for tag in pattern.tags)
    assert 5 <= len(pattern.code.splitlines()) <= 60
    assert pattern.description.count(".") >= 2, "description: 2-4 sentences"


@pytest.mark.parametrize("pattern", PYTHON, ids=lambda p: p.pattern_id)
def test_python_snippets_compile(pattern: PatternAdded) -> None:
    compile(pattern.code, pattern.pattern_id, "exec")


def test_categories_are_varied_and_well_filled() -> None:
    counts = Counter(p.category for p in LIBRARY)
    assert len(counts) >= 10
    assert min(counts.values()) >= 3, counts


def test_category_matches_file_name() -> None:
    root = resources.files("aqe.search.starter")
    for item in root.iterdir():
        if not item.name.endswith(".toml"):
            continue
        doc = tomllib.loads(item.read_text("utf-8"))
        category = item.name.removesuffix(".toml")
        assert {entry["category"] for entry in doc["pattern"]} == {category}, item.name


def test_mostly_python_with_some_other_languages() -> None:
    languages = Counter(p.language for p in LIBRARY)
    assert languages["python"] >= 0.8 * len(LIBRARY)
    assert set(languages) >= {"python", "go", "java", "typescript"}


def test_patterns_survive_the_event_wire() -> None:
    # Every pattern is appended to the log as a PatternAdded; check it round-trips.
    for pattern in LIBRARY:
        assert msgspec.json.decode(pattern.to_json(), type=PatternAdded) == pattern


# --- loading files ----------------------------------------------------------------------


def test_toml_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(_toml_entry("b-pattern") + _toml_entry("a-pattern", language="go"))
    patterns = load_pattern_files([path])
    assert [p.pattern_id for p in patterns] == ["a-pattern", "b-pattern"]
    assert patterns[0].language == "go"
    assert patterns[1].language == "python"
    assert patterns[1].code == "assert True\n"


def test_json_list_and_object_forms(tmp_path: Path) -> None:
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([_json_entry("one", tags=["a", "b"])]))
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"patterns": [_json_entry("two", category="time")]}))
    one, two = load_pattern_files([listed, wrapped])
    assert one == PatternAdded(pattern_id="one", name="A pattern", code="x = 1\n", tags=("a", "b"))
    assert two.category == "time"


def test_jsonl_one_object_per_line(tmp_path: Path) -> None:
    path = tmp_path / "more.jsonl"
    lines = [json.dumps(_json_entry("x1")), "", json.dumps(_json_entry("x2"))]
    path.write_text("\n".join(lines) + "\n")
    assert [p.pattern_id for p in load_pattern_files([path])] == ["x1", "x2"]


def test_pattern_id_alias_and_event_tag_accepted(tmp_path: Path) -> None:
    # What an export of PatternAdded events looks like: the wire form re-imports.
    exported = PatternAdded(pattern_id="exp", name="N", code="pass\n", framework="pytest")
    path = tmp_path / "export.jsonl"
    path.write_bytes(exported.to_json() + b"\n")
    assert load_pattern_files([path]) == [exported]


def test_starter_library_round_trips_through_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "all.jsonl"
    path.write_bytes(b"".join(p.to_json() + b"\n" for p in LIBRARY))
    assert load_pattern_files([path]) == LIBRARY


def test_pattern_files_finds_supported_files_sorted(tmp_path: Path) -> None:
    for name in ("b.toml", "a.json", "sub/c.jsonl", "notes.md", ".hidden/d.toml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    found = pattern_files(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a.json",
        "b.toml",
        "sub/c.jsonl",
    ]


def test_pattern_files_needs_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="not a directory"):
        pattern_files(tmp_path / "missing")


# --- errors name the file, the pattern and the field ------------------------------------


def _error(path: Path, *, loaded_before: tuple[Path, ...] = ()) -> ReportError:
    with pytest.raises(ReportError) as excinfo:
        load_pattern_files([*loaded_before, path])
    assert excinfo.value.path == str(path)
    assert str(path) in str(excinfo.value)
    return excinfo.value


def test_missing_code_names_pattern_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(_toml_entry("fine") + '\n[[pattern]]\nid = "no-code"\nname = "N"\n')
    err = _error(path)
    assert "'no-code'" in err.reason
    assert "'code'" in err.reason
    assert err.line == 11  # the second [[pattern]] header


def test_wrong_type_names_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[pattern]]\nid = "t"\nname = "N"\ncode = "x"\ntags = "not-a-list"\n')
    err = _error(path)
    assert "'t'" in err.reason
    assert "'tags'" in err.reason
    assert err.line == 1


def test_non_string_field_in_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([_json_entry("ok"), _json_entry("num", name=3)]))
    err = _error(path)
    assert "'num'" in err.reason
    assert "'name' must be a string" in err.reason


def test_entry_without_id_is_named_by_index(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(_json_entry("ok")) + "\n" + json.dumps({"name": "N"}) + "\n")
    err = _error(path)
    assert "pattern #2" in err.reason
    assert "'id'" in err.reason
    assert err.line == 2


def test_empty_required_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([_json_entry("blank", code="   ")]))
    assert "'code' is empty" in _error(path).reason


def test_unknown_field_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([_json_entry("typo", tag=["x"])]))
    err = _error(path)
    assert "'typo'" in err.reason
    assert "'tag'" in err.reason


def test_invalid_toml_reports_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[pattern]]\nid = "x"\nname = \n')
    err = _error(path)
    assert "invalid TOML" in err.reason
    assert err.line == 3


def test_invalid_jsonl_reports_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(_json_entry("ok")) + "\n{not json\n")
    err = _error(path)
    assert "invalid JSON" in err.reason
    assert err.line == 2


@pytest.mark.parametrize(
    ("name", "text", "reason"),
    [
        pytest.param("a.toml", 'title = "x"\n', "unknown top-level key", id="toml-other-key"),
        pytest.param("a.toml", "", "no [[pattern]] tables", id="toml-empty"),
        pytest.param("a.json", '{"items": []}', "'patterns' list", id="json-wrong-key"),
        pytest.param("a.json", '"text"', "expected a list", id="json-scalar"),
        pytest.param("a.json", "[1]", "expected a table/object", id="json-entry-not-object"),
        pytest.param("a.yaml", "", "unsupported pattern file type", id="unknown-suffix"),
    ],
)
def test_malformed_files(tmp_path: Path, name: str, text: str, reason: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    assert reason in _error(path).reason


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "binary.json"
    path.write_bytes(b"\xff\xfe\x00")
    assert "not UTF-8" in _error(path).reason


def test_duplicate_id_across_files(tmp_path: Path) -> None:
    first = tmp_path / "a.toml"
    first.write_text(_toml_entry("shared"))
    second = tmp_path / "b.jsonl"
    second.write_text(json.dumps(_json_entry("shared")) + "\n")
    err = _error(second, loaded_before=(first,))  # the second file is blamed, the first named
    assert "'shared'" in err.reason
    assert "duplicate id" in err.reason
    assert str(first) in err.reason


def test_duplicate_id_within_a_file(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text(_toml_entry("twice") + _toml_entry("twice"))
    assert "duplicate id (already defined earlier in this file)" in _error(path).reason


def test_duplicate_of_a_starter_id_is_detectable(tmp_path: Path) -> None:
    # An import that collides with the starter library fails when both are loaded.
    root = resources.files("aqe.search.starter")
    starter = sorted(Path(str(root / i.name)) for i in root.iterdir() if i.name.endswith(".toml"))
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps([_json_entry(LIBRARY[0].pattern_id)]))
    with pytest.raises(ReportError, match="duplicate id"):
        load_pattern_files([*starter, mine])
