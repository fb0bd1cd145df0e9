"""Stream definitions in ``streams/*.json``: loading, validation and diffing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import msgspec
import pytest

from aqe.errors import ConfigError
from aqe.events import REGISTRY, BridgeApplied, TestCaseExecuted
from aqe.log.streams import (
    StreamSpec,
    default_streams_dir,
    diff_specs,
    load_stream_specs,
    replicas_for,
    stream_for_subject,
    with_replicas,
)

REPO_STREAMS = Path(__file__).resolve().parents[2] / "streams"


def write(folder: Path, name: str, spec: dict[str, Any] | str) -> Path:
    path = folder / f"{name}.json"
    path.write_text(spec if isinstance(spec, str) else json.dumps(spec), encoding="utf-8")
    return path


def test_repo_streams_load() -> None:
    specs = load_stream_specs(REPO_STREAMS)
    assert [s.name for s in specs] == [
        "AQE_AGENTS",
        "AQE_AUDIT",
        "AQE_COORD",
        "AQE_COVERAGE",
        "AQE_DLQ",
        "AQE_LEARNING",
        "AQE_PATTERNS",
        "AQE_PERF",
        "AQE_TESTS",
        "AQE_WORKFLOWS",
    ]
    dlq = next(s for s in specs if s.name == "AQE_DLQ")
    assert dlq.audit
    assert dlq.deny_delete
    assert dlq.deny_purge


def test_default_dir_is_the_checkout_or_the_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("AQE_STREAMS_DIR", raising=False)
    assert default_streams_dir().resolve() == REPO_STREAMS
    monkeypatch.setenv("AQE_STREAMS_DIR", str(tmp_path))
    assert default_streams_dir() == tmp_path


def test_every_event_type_has_exactly_one_stream() -> None:
    specs = load_stream_specs(REPO_STREAMS)
    for tag, cls in REGISTRY.types.items():
        if cls is BridgeApplied:
            continue  # the bridge's marker is stored in each replicated stream, by design
        parts = cls.tag_parts()
        subject = f"aqe.{parts.domain}.{parts.aggregate}.some~2Eid.{parts.action}"
        owners = [s.name for s in specs if s.matches(subject)]
        assert len(owners) == 1, (tag, owners)
    event = TestCaseExecuted(test_id="t/a.py::t[1]", run_id="r", outcome="passed")
    from aqe.log.subjects import subject_for

    found = stream_for_subject(specs, subject_for(event))
    assert found is not None
    assert found.name == "AQE_TESTS"
    assert stream_for_subject(specs, "other.subject") is None


@pytest.fixture
def streams(tmp_path: Path) -> Path:
    folder = tmp_path / "streams"
    shutil.copytree(REPO_STREAMS, folder)
    return folder


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", ""),
        ('{"name": "AQE_X", "subjects": ["aqe.x.>"], "replicas": "1"}', "replicas"),
        ('{"name": "AQE_X", "subjects": ["aqe.x.>"], "retention": "forever"}', "retention"),
        ('{"name": "AQE_X", "subjects": ["aqe.x.>"], "colour": "blue"}', "colour"),
        ('{"subjects": ["aqe.x.>"]}', "name"),
        ('{"name": "AQE_X", "subjects": []}', "no subjects"),
        ('{"name": "AQE_X", "subjects": ["aqe.x.>"], "replicas": 2}', "replicas"),
        ("[]", ""),
    ],
)
def test_bad_file_names_the_file(streams: Path, content: str, needle: str) -> None:
    bad = write(streams, "zz_bad", content)
    with pytest.raises(ConfigError) as info:
        load_stream_specs(streams)
    assert str(bad) in str(info.value)
    assert needle in str(info.value)


def test_empty_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no \*\.json"):
        load_stream_specs(tmp_path)


def test_duplicate_stream_name_raises(streams: Path) -> None:
    write(streams, "copy", {"name": "AQE_TESTS", "subjects": ["aqe.other.>"]})
    with pytest.raises(ConfigError, match="AQE_TESTS is declared twice"):
        load_stream_specs(streams)


@pytest.mark.parametrize(
    "subjects",
    [
        ["aqe.tests.>"],
        ["aqe.tests.case.*.executed"],
        ["aqe.*.case.>"],
        ["aqe.>"],
        [">"],
        ["aqe.tests.run.r1.started"],
    ],
)
def test_overlapping_subjects_raise(streams: Path, subjects: list[str]) -> None:
    write(streams, "zz_overlap", {"name": "AQE_OVERLAP", "subjects": subjects})
    with pytest.raises(ConfigError, match="overlaps") as info:
        load_stream_specs(streams)
    assert "AQE_OVERLAP" in str(info.value)


@pytest.mark.parametrize("subjects", [["aqe.other.>"], ["aqe.tests"], ["aqe.*"], ["tests.>"]])
def test_disjoint_subjects_load(streams: Path, subjects: list[str]) -> None:
    write(streams, "zz_other", {"name": "AQE_OTHER", "subjects": subjects})
    names = [s.name for s in load_stream_specs(streams)]
    assert "AQE_OTHER" in names


def test_same_subject_twice_in_one_stream_raises(tmp_path: Path) -> None:
    write(tmp_path, "one", {"name": "AQE_ONE", "subjects": ["aqe.one.>", "aqe.one.>"]})
    with pytest.raises(ConfigError, match=r"aqe\.one\.>"):
        load_stream_specs(tmp_path)


@pytest.mark.parametrize(
    "flags",
    [{}, {"deny_delete": True}, {"deny_purge": True}],
)
def test_audit_stream_without_deny_flags_raises(tmp_path: Path, flags: dict[str, bool]) -> None:
    path = write(
        tmp_path, "audit", {"name": "AQE_AUDIT", "subjects": ["aqe.a.>"], "audit": True, **flags}
    )
    with pytest.raises(ConfigError, match="must deny delete and purge") as info:
        load_stream_specs(tmp_path)
    assert str(path) in str(info.value)
    with pytest.raises(ValueError, match="must deny delete and purge"):
        msgspec.convert(
            {"name": "AQE_AUDIT", "subjects": ["aqe.a.>"], "audit": True, **flags}, StreamSpec
        )


def test_audit_stream_with_deny_flags_loads(tmp_path: Path) -> None:
    spec = {
        "name": "AQE_AUDIT",
        "subjects": ["aqe.a.>"],
        "audit": True,
        "deny_delete": True,
        "deny_purge": True,
    }
    write(tmp_path, "audit", spec)
    (loaded,) = load_stream_specs(tmp_path)
    assert loaded.audit


def test_specs_are_sorted_by_name_not_file(tmp_path: Path) -> None:
    write(tmp_path, "a", {"name": "ZED", "subjects": ["z.>"]})
    write(tmp_path, "b", {"name": "ALPHA", "subjects": ["a.>"]})
    assert [s.name for s in load_stream_specs(tmp_path)] == ["ALPHA", "ZED"]


# --- diff_specs ----------------------------------------------------------------------------


def spec(**overrides: Any) -> StreamSpec:
    fields: dict[str, Any] = {"name": "AQE_T", "subjects": ("aqe.t.>", "aqe.u.>")}
    fields.update(overrides)
    return msgspec.convert(fields, StreamSpec)


def test_diff_against_nothing_lists_every_field() -> None:
    wanted = spec()
    diff = diff_specs(wanted, None)
    assert set(diff) == set(wanted.to_comparable())
    assert "audit" not in diff
    assert all(live is None for live, _ in diff.values())
    assert diff["name"] == (None, "AQE_T")


def test_diff_of_identical_config_is_empty() -> None:
    wanted = spec()
    assert diff_specs(wanted, wanted.to_comparable()) == {}


def test_diff_ignores_subject_order() -> None:
    live = spec(subjects=("aqe.u.>", "aqe.t.>")).to_comparable()
    assert diff_specs(spec(), live) == {}


def test_diff_reports_live_then_wanted() -> None:
    live = spec(max_age_s=60.0, compression="s2").to_comparable()
    live["unrelated"] = "ignored"
    diff = diff_specs(spec(), live)
    assert diff == {"max_age_s": (60.0, 0.0), "compression": ("s2", "none")}


def test_diff_reports_missing_live_fields() -> None:
    live = spec().to_comparable()
    del live["replicas"]
    assert diff_specs(spec(), live) == {"replicas": (None, "auto")}


def test_every_repo_stream_follows_the_deployment() -> None:
    for declared in load_stream_specs(REPO_STREAMS):
        assert declared.replicas == "auto", declared.name
        assert replicas_for(declared, clustered=True) == 3
        assert replicas_for(declared, clustered=False) == 1


@pytest.mark.parametrize(
    ("declared", "clustered", "replicas"),
    [("auto", True, 3), ("auto", False, 1), (1, True, 1), (5, True, 5), (5, False, 1)],
)
def test_replicas_rule(declared: int | str, clustered: bool, replicas: int) -> None:
    assert replicas_for(spec(replicas=declared), clustered=clustered) == replicas


def test_replicas_setting_overrides_every_file() -> None:
    specs = load_stream_specs(REPO_STREAMS)
    assert {s.replicas for s in with_replicas(specs, 1)} == {1}
    assert with_replicas(specs, None) == list(specs)


@pytest.mark.parametrize("replicas", [2, "three", 0])
def test_bad_replicas_name_the_file(streams: Path, replicas: object) -> None:
    write(streams, "bad", {"name": "BAD", "subjects": ["bad.>"], "replicas": replicas})
    with pytest.raises(ConfigError, match=r"bad\.json"):
        load_stream_specs(streams)
