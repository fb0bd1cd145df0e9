"""The exported JSON Schemas in ``schemas/`` match the event Structs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pytest

from aqe.events import REGISTRY, Event, EventRegistry, TestCaseExecuted
from aqe.events.schema import (
    check_schemas,
    default_schemas_dir,
    export_schemas,
    main,
    render_schemas,
)
from aqe.log.subjects import SUBJECT_PREFIX, subject_for

REPO_SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
REGEN = "python -m aqe.events.schema"


def test_checked_in_schemas_are_in_sync() -> None:
    problems = check_schemas(REPO_SCHEMAS)
    assert problems == [], f"schemas/ drifted from the Structs; run `{REGEN}`:\n" + "\n".join(
        problems
    )


def test_default_dir_is_the_checkout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AQE_SCHEMAS_DIR", raising=False)
    assert default_schemas_dir() == REPO_SCHEMAS
    monkeypatch.setenv("AQE_SCHEMAS_DIR", str(tmp_path))
    assert default_schemas_dir() == tmp_path


def test_one_file_per_type_plus_index() -> None:
    files = render_schemas()
    assert sorted(files) == sorted([f"{tag}.json" for tag in REGISTRY.tags()] + ["index.json"])


def test_rendering_is_deterministic_text() -> None:
    first, second = render_schemas(), render_schemas()
    assert first == second
    for name, text in first.items():
        assert text.endswith("}\n"), name
        assert not text.endswith("\n\n"), name
        document = json.loads(text)
        assert text == json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


@pytest.mark.parametrize("tag", REGISTRY.tags())
def test_type_schema_header(tag: str) -> None:
    cls = REGISTRY.types[tag]
    schema = json.loads(render_schemas()[f"{tag}.json"])
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://aqe.dev/schemas/{tag}.json"
    assert schema["title"] == cls.__name__
    assert schema["description"]
    assert schema["description"].split("\n")[0] in (cls.__doc__ or "")
    assert schema["type"] == "object"
    assert schema["properties"]["event"] == {"enum": [tag]}
    assert "event" in schema["required"]
    assert cls.id_field in schema["required"]
    fields = {f.encode_name for f in msgspec.structs.fields(cls)}
    assert set(schema["properties"]) == fields | {"event"}


@pytest.mark.parametrize("tag", REGISTRY.tags())
def test_schema_refs_resolve_inside_the_file(tag: str) -> None:
    text = render_schemas()[f"{tag}.json"]
    schema = json.loads(text)
    for ref in _refs(schema):
        assert ref.startswith("#/$defs/")
        assert ref.removeprefix("#/$defs/") in schema.get("$defs", {})


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        out = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return out + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_index_describes_every_tag() -> None:
    index = json.loads(render_schemas()["index.json"])
    assert index["tag_field"] == "event"
    assert index["subject_grammar"] == "aqe.<domain>.<aggregate>.<id>.<action>"
    assert [e["tag"] for e in index["events"]] == list(REGISTRY.tags())
    for entry in index["events"]:
        cls = REGISTRY.types[entry["tag"]]
        parts = cls.tag_parts()
        assert entry["file"] == f"{entry['tag']}.json"
        assert entry["title"] == cls.__name__
        assert (entry["domain"], entry["aggregate"], entry["action"], entry["version"]) == (
            parts.domain,
            parts.aggregate,
            parts.action,
            parts.version,
        )
        assert entry["id_field"] == cls.id_field


def test_index_subjects_agree_with_subject_for() -> None:
    index = json.loads(render_schemas()["index.json"])
    entry = next(e for e in index["events"] if e["tag"] == "tests.case.executed.v1")
    event = TestCaseExecuted(test_id="t/a.py::t[x]", run_id="r", outcome="passed")
    subject = subject_for(event)
    token = subject.split(".")[3]
    assert entry["subject"].replace("<test_id>", token) == subject
    assert entry["subject_filter"].replace("*", token) == subject
    assert entry["subject"].startswith(SUBJECT_PREFIX + ".")


# --- drift detection on a tmp copy ----------------------------------------------------------


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    folder = tmp_path / "schemas"
    shutil.copytree(REPO_SCHEMAS, folder)
    assert check_schemas(folder) == []
    return folder


def test_edited_file_is_reported(copy: Path) -> None:
    path = copy / "tests.case.executed.v1.json"
    path.write_text(path.read_text().replace('"integer"', '"string"'), encoding="utf-8")
    problems = check_schemas(copy)
    assert len(problems) == 1
    assert problems[0].startswith("changed:")
    assert "tests.case.executed.v1.json" in problems[0]


def test_whitespace_change_is_reported(copy: Path) -> None:
    path = copy / "index.json"
    path.write_text(path.read_text().rstrip("\n"), encoding="utf-8")
    (problem,) = check_schemas(copy)
    assert problem.startswith("changed:")


def test_removed_file_is_reported(copy: Path) -> None:
    (copy / "agents.agent.heartbeat.v1.json").unlink()
    (problem,) = check_schemas(copy)
    assert problem.startswith("missing:")
    assert "agents.agent.heartbeat.v1.json" in problem


def test_added_file_is_reported(copy: Path) -> None:
    (copy / "tests.case.executed.v0.json").write_text("{}\n", encoding="utf-8")
    (problem,) = check_schemas(copy)
    assert problem.startswith("stale:")
    assert "tests.case.executed.v0.json" in problem


def test_non_json_files_and_subfolders_are_not_drift(copy: Path) -> None:
    (copy / "NOTES.txt").write_text("hello", encoding="utf-8")
    (copy / "retired").mkdir()
    (copy / "retired" / "old.v1.json").write_text("{}", encoding="utf-8")
    assert check_schemas(copy) == []


def test_missing_folder_reports_every_file(tmp_path: Path) -> None:
    problems = check_schemas(tmp_path / "nowhere")
    assert len(problems) == len(render_schemas())
    assert all(p.startswith("missing:") for p in problems)


# --- export ----------------------------------------------------------------------------------


def test_export_repairs_drift_and_keeps_readme(copy: Path) -> None:
    (copy / "agents.agent.heartbeat.v1.json").unlink()
    (copy / "index.json").write_text("{}", encoding="utf-8")
    (copy / "stale.v1.json").write_text("{}", encoding="utf-8")
    readme = (copy / "README.md").read_text(encoding="utf-8")
    written = export_schemas(copy)
    assert sorted(p.name for p in written) == sorted(render_schemas())
    assert check_schemas(copy) == []
    assert not (copy / "stale.v1.json").exists()
    assert (copy / "README.md").read_text(encoding="utf-8") == readme


def test_export_into_a_new_folder(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    export_schemas(target)
    assert check_schemas(target) == []


class GadgetBuilt(Event, frozen=True, kw_only=True, tag="demo.gadget.built.v1"):
    """A gadget came off the line."""

    id_field: ClassVar[str] = "gadget_id"

    gadget_id: str
    parts: tuple[str, ...] = ()


def test_export_follows_the_given_registry(tmp_path: Path) -> None:
    registry = EventRegistry([GadgetBuilt])
    export_schemas(tmp_path, registry)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.gadget.built.v1.json", "index.json"]
    assert check_schemas(tmp_path, registry) == []
    # Against the default registry the same folder is all drift.
    problems = check_schemas(tmp_path)
    assert any(p.startswith("stale:") and "demo.gadget.built.v1.json" in p for p in problems)
    assert any(p.startswith("missing:") for p in problems)


def test_a_new_field_is_drift(tmp_path: Path) -> None:
    class GadgetBuiltLater(Event, frozen=True, kw_only=True, tag="demo.gadget.built.v1"):
        """A gadget came off the line."""

        id_field: ClassVar[str] = "gadget_id"

        gadget_id: str
        parts: tuple[str, ...] = ()
        colour: str = ""

    export_schemas(tmp_path, EventRegistry([GadgetBuilt]))
    (problem,) = [
        p for p in check_schemas(tmp_path, EventRegistry([GadgetBuiltLater])) if "demo." in p
    ]
    assert problem.startswith("changed:")


# --- command line ----------------------------------------------------------------------------


def test_main_exports_then_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check", str(tmp_path)]) == 1
    assert "missing:" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 0
    assert main(["--check", str(tmp_path)]) == 0
    assert "in sync" in capsys.readouterr().out


def test_main_uses_the_env_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AQE_SCHEMAS_DIR", str(tmp_path))
    assert main([]) == 0
    assert check_schemas(tmp_path) == []
