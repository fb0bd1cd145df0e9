"""Policies as packed artefacts: byte-stable packing, safe unpacking, the fold."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from aqe.errors import ConfigError
from aqe.events import PolicyTrained
from aqe.learning.store import fold_policies, pack_policy, unpack_policy


def _policy_dir(tmp_path: Path) -> Path:
    d = tmp_path / "p"
    d.mkdir()
    (d / "meta.json").write_text('{"a": 1}', encoding="utf-8")
    (d / "q_table.json").write_text('{"q": {}}', encoding="utf-8")
    return d


def test_pack_is_byte_stable_and_round_trips(tmp_path: Path) -> None:
    d = _policy_dir(tmp_path)
    data = pack_policy(d)
    (d / "meta.json").touch()  # a new mtime changes nothing
    assert pack_policy(d) == data
    out = unpack_policy(data, tmp_path / "cache", "q-learning-s0-1234")
    assert out == tmp_path / "cache" / "q-learning-s0-1234"
    assert {p.name: p.read_text() for p in out.iterdir()} == {
        "meta.json": '{"a": 1}',
        "q_table.json": '{"q": {}}',
    }


@pytest.mark.parametrize("name", ["../evil", "sub/file", ".hidden"])
def test_unpack_refuses_paths_that_leave_the_directory(tmp_path: Path, name: str) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(ConfigError, match="bad artefact entry"):
        unpack_policy(buffer.getvalue(), tmp_path / "cache", "p1")
    assert not (tmp_path / "evil").exists()
    with pytest.raises(ConfigError, match="not a tar"):
        unpack_policy(b"not a tar at all" * 64, tmp_path / "cache", "p1")
    with pytest.raises(ConfigError, match="bad policy id"):
        unpack_policy(pack_policy(_policy_dir(tmp_path)), tmp_path / "cache", "../x")


def test_fold_keeps_the_newest_fact_per_policy() -> None:
    def fact(pid: str, digest: str) -> PolicyTrained:
        return PolicyTrained(
            policy_id=pid, algorithm="sarsa", seed=0, feature_version=1, digest=digest
        )

    folded = fold_policies([fact("a", "1"), fact("b", "2"), "not a fact", fact("a", "3")])
    assert {k: v.digest for k, v in folded.items()} == {"a": "3", "b": "2"}
