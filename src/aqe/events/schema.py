"""Export every registered event type as a JSON Schema file, and check them for drift.

``schemas/`` in the repository holds one draft 2020-12 schema per event tag
(``<tag>.json``) plus ``index.json``, which maps each tag to its file, its tag parts,
the field that names the aggregate and the subject it is appended to. The files are
generated from the Structs, never edited by hand::

    python -m aqe.events.schema            # write schemas/
    python -m aqe.events.schema --check    # exit 1 and list the drift, if any

Only ``*.json`` files directly inside the folder are generated or removed; other
files (``README.md``) and subfolders are left alone.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from aqe.events._base import TAG_FIELD, Event
from aqe.events._catalog import REGISTRY
from aqe.events._envelope import ENVELOPE_VERSION
from aqe.events._registry import EventRegistry

__all__ = ["check_schemas", "default_schemas_dir", "export_schemas", "main", "render_schemas"]

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_BASE_URI = "https://aqe.dev/schemas/"
INDEX_FILE = "index.json"
SUBJECT_GRAMMAR = "aqe.<domain>.<aggregate>.<id>.<action>"

# Kept here rather than imported from aqe.log.subjects: events must not depend on log.
# tests/unit/test_schemas.py checks both agree.
_SUBJECT_PREFIX = "aqe"
_GENERATED = "Generated from the event Structs by `python -m aqe.events.schema`; do not edit."
_REF_PREFIX = "#/$defs/"


def default_schemas_dir() -> Path:
    """Where the schema files live: ``$AQE_SCHEMAS_DIR``, else the checkout's ``schemas/``."""
    env = os.environ.get("AQE_SCHEMAS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "schemas"


def _dump(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _refs(node: Any) -> Iterator[str]:
    """Every ``$ref`` value anywhere inside a schema fragment."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _type_schema(tag: str, cls: type[Event]) -> dict[str, Any]:
    (root_ref,), components = msgspec.json.schema_components(
        [cls], ref_template=_REF_PREFIX + "{name}"
    )
    root_name = str(root_ref["$ref"]).removeprefix(_REF_PREFIX)
    root = dict(components[root_name])
    defs = {name: body for name, body in components.items() if name != root_name}
    # A Struct that refers to itself must stay addressable under $defs.
    if any(ref == _REF_PREFIX + root_name for ref in _refs([root, defs])):
        defs[root_name] = components[root_name]
    doc = inspect.cleandoc(cls.__doc__) if cls.__doc__ else ""
    document: dict[str, Any] = {
        **root,
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"{SCHEMA_BASE_URI}{tag}.json",
        "$comment": _GENERATED,
        "title": cls.__name__,
    }
    if doc:
        document["description"] = doc
    if defs:
        document["$defs"] = defs
    return document


def _index(registry: EventRegistry) -> dict[str, Any]:
    events: list[dict[str, Any]] = []
    for tag in registry.tags():
        cls = registry.types[tag]
        parts = cls.tag_parts()
        prefix = f"{_SUBJECT_PREFIX}.{parts.domain}.{parts.aggregate}"
        events.append(
            {
                "tag": tag,
                "file": f"{tag}.json",
                "title": cls.__name__,
                "domain": parts.domain,
                "aggregate": parts.aggregate,
                "action": parts.action,
                "version": parts.version,
                "id_field": cls.id_field,
                "subject": f"{prefix}.<{cls.id_field}>.{parts.action}",
                "subject_filter": f"{prefix}.*.{parts.action}",
            }
        )
    return {
        "$comment": _GENERATED,
        "envelope_version": ENVELOPE_VERSION,
        "tag_field": TAG_FIELD,
        "subject_grammar": SUBJECT_GRAMMAR,
        "events": events,
    }


def render_schemas(registry: EventRegistry = REGISTRY) -> dict[str, str]:
    """Render the schema files of every registered event type.

    Args:
        registry: the event types to render (aqe's default registry unless given).

    Returns:
        File name to file text: ``<tag>.json`` per type plus ``index.json``; the text
        is deterministic (sorted keys, 2-space indent, trailing newline).
    """
    types = registry.types
    files = {f"{tag}.json": _dump(_type_schema(tag, types[tag])) for tag in registry.tags()}
    files[INDEX_FILE] = _dump(_index(registry))
    return dict(sorted(files.items()))


def _generated_files(directory: Path) -> set[str]:
    if not directory.is_dir():
        return set()
    return {p.name for p in directory.glob("*.json") if p.is_file()}


def export_schemas(directory: Path, registry: EventRegistry = REGISTRY) -> list[Path]:
    """Write the schema files into ``directory`` and remove stale ``*.json`` files.

    Files whose text is already right are not rewritten; files other than
    ``*.json`` directly in the folder (``README.md``, subfolders) are never touched.

    Args:
        directory: the folder to write (created if missing).
        registry: the event types to export.

    Returns:
        The paths of every schema file the folder now holds for the registry, sorted.
    """
    rendered = render_schemas(registry)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in sorted(_generated_files(directory) - rendered.keys()):
        (directory / stale).unlink()
    written: list[Path] = []
    for name, text in rendered.items():
        path = directory / name
        data = text.encode("utf-8")
        if not path.is_file() or path.read_bytes() != data:
            path.write_bytes(data)
        written.append(path)
    return written


def _first_difference(old: str, new: str) -> int:
    old_lines, new_lines = old.splitlines(), new.splitlines()
    for number, (a, b) in enumerate(zip(old_lines, new_lines, strict=False), start=1):
        if a != b:
            return number
    return min(len(old_lines), len(new_lines)) + 1


def check_schemas(directory: Path, registry: EventRegistry = REGISTRY) -> list[str]:
    """Compare the files in ``directory`` with what the Structs render.

    Args:
        directory: the folder that should hold the exported schemas.
        registry: the event types it should describe.

    Returns:
        One human-readable line per missing, stale or changed file; empty when in sync.
    """
    rendered = render_schemas(registry)
    present = _generated_files(directory)
    problems: list[str] = []
    for name, text in rendered.items():
        path = directory / name
        if name not in present:
            problems.append(f"missing: {path}")
            continue
        current = path.read_bytes().decode("utf-8", errors="replace")
        if current != text:
            line = _first_difference(current, text)
            problems.append(f"changed: {path} differs from the Structs (first at line {line})")
    for name in sorted(present - rendered.keys()):
        problems.append(f"stale: {directory / name} matches no registered event type")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m aqe.events.schema [--check] [DIR]``: export, or check for drift.

    Returns:
        0 on success; 1 when ``--check`` finds drift (the drift is printed to stderr).
    """
    parser = argparse.ArgumentParser(
        prog="python -m aqe.events.schema",
        description="Export the event JSON Schemas, or check the exported files for drift.",
    )
    parser.add_argument(
        "--check", action="store_true", help="do not write; exit 1 if the files differ"
    )
    parser.add_argument(
        "directory",
        nargs="?",
        type=Path,
        default=None,
        help="schema folder (default: $AQE_SCHEMAS_DIR or the checkout's schemas/)",
    )
    args = parser.parse_args(argv)
    directory: Path = args.directory or default_schemas_dir()
    if args.check:
        problems = check_schemas(directory)
        if problems:
            for line in problems:
                print(line, file=sys.stderr)
            print("run `python -m aqe.events.schema` to regenerate", file=sys.stderr)
            return 1
        print(f"{directory}: {len(render_schemas())} schema files in sync")
        return 0
    paths = export_schemas(directory)
    print(f"{directory}: wrote {len(paths)} schema files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
