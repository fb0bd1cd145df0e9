"""A policy id becomes a directory name: it is checked before any path is built (issue 21)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aqe.errors import ConfigError
from aqe.learning.policies import PolicyMeta, load_policy, save_policy
from aqe.learning.registry import check_policy_id, make_policy


@pytest.mark.parametrize(
    "policy_id",
    ["../escape", "..", ".", "a/b", "a\\b", "/abs", ".hidden", "", "a b", "x" * 129, "é"],
)
def test_unsafe_policy_ids_are_refused(policy_id: str) -> None:
    with pytest.raises(ConfigError, match="bad policy id"):
        check_policy_id(policy_id)


@pytest.mark.parametrize("policy_id", ["q-learning-s0-1a2b3c4d", "ppo.v2", "A_1", "x" * 128])
def test_plain_policy_ids_pass(policy_id: str) -> None:
    assert check_policy_id(policy_id) == policy_id


def test_loading_an_id_that_climbs_out_reads_nothing_outside(tmp_path: Path) -> None:
    root = tmp_path / "data" / "policies"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "policy.json").write_text("{}")  # would be read as ../../outside
    with pytest.raises(ConfigError, match="bad policy id"):
        load_policy(root, "../../outside")


def test_saving_under_an_unsafe_id_writes_nothing(tmp_path: Path) -> None:
    meta = PolicyMeta(
        policy_id="../../escaped",
        algorithm="random",
        seed=0,
        hyperparameters={},
        feature_version=0,
        trained_on="test",
    )
    root = tmp_path / "data" / "policies"
    with pytest.raises(ConfigError, match="bad policy id"):
        save_policy(root, make_policy("random"), meta)
    assert not (tmp_path / "escaped").exists()
    assert not root.exists()
