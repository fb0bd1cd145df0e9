"""The starter library of test patterns aqe ships, and the loader for pattern files.

The library is a set of TOML files next to this module, one per category, each a list
of ``[[pattern]]`` tables::

    [[pattern]]
    id = "pytest-yield-fixture-teardown"      # kebab-case, unique across all files
    name = "Yield fixture with guaranteed teardown"
    description = "When to use it, why it works, pitfalls."
    category = "fixtures"
    language = "python"
    framework = "pytest"
    tags = ["fixture", "teardown"]
    code = '''
    ...
    '''

``aqe patterns import DIR`` reads files in the same format, or JSON with the same
fields: ``.jsonl`` holds one object per line, ``.json`` a list of objects or
``{"patterns": [...]}``. ``pattern_id`` is accepted in place of ``id``. ``id``, ``name``
and ``code`` are required; the other fields default as :class:`PatternAdded` does.

Every problem with a file raises :class:`~aqe.errors.ReportError` naming the file, the
line when it is known, the pattern (id or index) and the field.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path

from aqe.errors import ReportError
from aqe.events.patterns import PatternAdded

__all__ = [
    "PATTERN_SUFFIXES",
    "load_pattern_files",
    "load_starter_library",
    "pattern_files",
]

PATTERN_SUFFIXES: tuple[str, ...] = (".toml", ".json", ".jsonl")
"""File name endings :func:`pattern_files` picks up and :func:`load_pattern_files` reads."""

_REQUIRED = ("id", "name", "code")
_OPTIONAL_STR = ("description", "category", "language", "framework")
_KNOWN = frozenset((*_REQUIRED, *_OPTIONAL_STR, "tags", "pattern_id", "event"))
_TOML_LINE_RE = re.compile(r"at line (\d+)")
_TOML_HEADER_RE = re.compile(r"^[ \t]*\[\[[ \t]*pattern[ \t]*\]\]", re.MULTILINE)


def load_starter_library() -> list[PatternAdded]:
    """Every pattern shipped with aqe, sorted by id.

    Returns:
        One :class:`PatternAdded` per pattern in the bundled TOML files.

    Raises:
        ReportError: a bundled file is malformed (a packaging bug, caught by the tests).
    """
    root = resources.files(__name__)
    names = sorted(item.name for item in root.iterdir() if item.name.endswith(".toml"))
    return _collect(
        (str(root / name), _parse_toml(str(root / name), (root / name).read_text("utf-8")))
        for name in names
    )


def load_pattern_files(paths: Iterable[Path]) -> list[PatternAdded]:
    """Read pattern files (``.toml``, ``.json``, ``.jsonl``) into events, sorted by id.

    Args:
        paths: the files to read; their suffix selects the format.

    Returns:
        One :class:`PatternAdded` per pattern across all files.

    Raises:
        ReportError: a file cannot be read or parsed, an entry lacks a required field or
            has a field of the wrong type, or an id appears twice (in one file or across
            files).
    """

    def parsed() -> Iterable[tuple[str, list[PatternAdded]]]:
        for path in paths:
            source = str(path)
            suffix = path.suffix.lower()
            if suffix not in PATTERN_SUFFIXES:
                raise ReportError(
                    source,
                    f"unsupported pattern file type {suffix or '(none)'!r}; "
                    f"expected one of {', '.join(PATTERN_SUFFIXES)}",
                )
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise ReportError(source, f"not UTF-8 text: {exc.reason}") from exc
            except OSError as exc:
                raise ReportError(source, f"cannot read: {exc.strerror or exc}") from exc
            if suffix == ".toml":
                yield source, _parse_toml(source, text)
            elif suffix == ".json":
                yield source, _parse_json(source, text)
            else:
                yield source, _parse_jsonl(source, text)

    return _collect(parsed())


def pattern_files(directory: Path) -> list[Path]:
    """The pattern files (``*.toml``, ``*.json``, ``*.jsonl``) under a directory, sorted.

    Args:
        directory: searched recursively; hidden files and folders are skipped.

    Returns:
        The files' paths, sorted.

    Raises:
        ReportError: ``directory`` is not a directory.
    """
    if not directory.is_dir():
        raise ReportError(str(directory), "not a directory")
    found = [
        path
        for path in directory.rglob("*")
        if path.suffix.lower() in PATTERN_SUFFIXES
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(directory).parts)
    ]
    return sorted(found)


def _collect(files: Iterable[tuple[str, list[PatternAdded]]]) -> list[PatternAdded]:
    seen: dict[str, str] = {}
    out: list[PatternAdded] = []
    for source, patterns in files:
        for pattern in patterns:
            first = seen.get(pattern.pattern_id)
            if first is not None:
                where = "earlier in this file" if first == source else f"in {first}"
                raise ReportError(
                    source,
                    f"pattern {pattern.pattern_id!r}: duplicate id (already defined {where})",
                )
            seen[pattern.pattern_id] = source
            out.append(pattern)
    out.sort(key=lambda p: p.pattern_id)
    return out


def _parse_toml(source: str, text: str) -> list[PatternAdded]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = _TOML_LINE_RE.search(str(exc))
        line = int(match.group(1)) if match else None
        raise ReportError(source, f"invalid TOML: {exc}", line=line) from exc
    extra = sorted(key for key in doc if key != "pattern")
    if extra:
        raise ReportError(
            source, f"unknown top-level key(s) {', '.join(extra)}; expected [[pattern]]"
        )
    entries = doc.get("pattern")
    if not isinstance(entries, list):
        reason = (
            "no [[pattern]] tables" if entries is None else "'pattern' must be an array of tables"
        )
        raise ReportError(source, reason)
    # tomllib keeps no positions; the n-th [[pattern]] header is the n-th entry's start.
    headers = [text.count("\n", 0, m.start()) + 1 for m in _TOML_HEADER_RE.finditer(text)]
    lines: Sequence[int | None] = headers if len(headers) == len(entries) else [None] * len(entries)
    return [
        _entry(source, index, raw, line)
        for index, (raw, line) in enumerate(zip(entries, lines, strict=True))
    ]


def _parse_json(source: str, text: str) -> list[PatternAdded]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(source, f"invalid JSON: {exc.msg}", line=exc.lineno) from exc
    if isinstance(doc, Mapping):
        if "patterns" not in doc:
            raise ReportError(source, "a JSON object must hold a 'patterns' list")
        doc = doc["patterns"]
    if not isinstance(doc, list):
        raise ReportError(source, 'expected a list of patterns or {"patterns": [...]}')
    return [_entry(source, index, raw, None) for index, raw in enumerate(doc)]


def _parse_jsonl(source: str, text: str) -> list[PatternAdded]:
    out: list[PatternAdded] = []
    index = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ReportError(source, f"invalid JSON: {exc.msg}", line=number) from exc
        out.append(_entry(source, index, raw, number))
        index += 1
    return out


def _entry(source: str, index: int, raw: object, line: int | None) -> PatternAdded:
    label = f"pattern #{index + 1}"
    if not isinstance(raw, Mapping):
        raise ReportError(
            source, f"{label}: expected a table/object, got {type(raw).__name__}", line
        )
    fields: dict[str, object] = {str(k): v for k, v in raw.items()}

    def fail(reason: str) -> ReportError:
        return ReportError(source, f"{label}: {reason}", line)

    if "pattern_id" in fields:
        alias = fields.pop("pattern_id")
        if "id" in fields and fields["id"] != alias:
            raise fail("'id' and 'pattern_id' disagree")
        fields["id"] = alias
    raw_id = fields.get("id")
    if isinstance(raw_id, str) and raw_id.strip():
        label = f"pattern {raw_id!r}"
    event = fields.pop("event", PatternAdded.type_tag())
    if event != PatternAdded.type_tag():
        raise fail(f"field 'event' is {event!r}, expected {PatternAdded.type_tag()!r}")
    unknown = sorted(set(fields) - _KNOWN)
    if unknown:
        raise fail(f"unknown field(s) {', '.join(repr(u) for u in unknown)}")

    values: dict[str, str] = {}
    for name in _REQUIRED:
        if name not in fields:
            raise fail(f"missing required field {name!r}")
        value = fields[name]
        if not isinstance(value, str):
            raise fail(f"field {name!r} must be a string, got {type(value).__name__}")
        if not value.strip():
            raise fail(f"field {name!r} is empty")
        values[name] = value
    for name in _OPTIONAL_STR:
        if name in fields:
            value = fields[name]
            if not isinstance(value, str):
                raise fail(f"field {name!r} must be a string, got {type(value).__name__}")
            values[name] = value
    tags: tuple[str, ...] = ()
    if "tags" in fields:
        raw_tags = fields["tags"]
        if not isinstance(raw_tags, list) or not all(isinstance(t, str) for t in raw_tags):
            raise fail("field 'tags' must be a list of strings")
        tags = tuple(raw_tags)

    return PatternAdded(
        pattern_id=values["id"],
        name=values["name"],
        code=values["code"],
        description=values.get("description", ""),
        category=values.get("category", ""),
        language=values.get("language", "python"),
        framework=values.get("framework", ""),
        tags=tags,
    )
