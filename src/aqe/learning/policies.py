"""Trained policies as artefacts: parameters plus what they were trained on.

A policy lives in ``<data dir>/policies/<policy id>/``: the algorithm's own files
(:meth:`Policy.save`) and ``policy.json`` (:class:`PolicyMeta`: algorithm, seed,
hyperparameters, feature version, the stream sequence of the history it learned from).
A policy whose feature version differs from the code's is refused, not silently used.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from aqe.errors import ConfigError
from aqe.learning.base import FEATURE_VERSION, Policy
from aqe.projections.tables import swap_in

__all__ = [
    "META_FILE",
    "PolicyMeta",
    "list_policies",
    "load_policy",
    "policies_root",
    "save_policy",
]

META_FILE = "policy.json"


class PolicyMeta(msgspec.Struct, frozen=True, kw_only=True):
    """Everything needed to trust, rebuild or compare a trained policy."""

    policy_id: str
    algorithm: str
    seed: int
    hyperparameters: dict[str, Any]
    feature_version: int
    trained_on: str
    trained_until_seq: int = 0
    cycles: int = 0
    transitions: int = 0
    mean_apfd: float | None = None
    mean_napfd: float | None = None
    train_seconds: float = 0.0
    trained_at: datetime | None = None


def policies_root(data_dir: Path) -> Path:
    """Where policies are kept under a data directory."""
    return data_dir / "policies"


def save_policy(root: Path, policy: Policy, meta: PolicyMeta) -> Path:
    """Write ``policy`` and its metadata to ``root/<policy id>`` (replacing it atomically)."""
    from aqe.learning.registry import check_policy_id

    check_policy_id(meta.policy_id)
    root.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f".{meta.policy_id}.new-", dir=root))
    try:
        policy.save(fresh)
        (fresh / META_FILE).write_bytes(msgspec.json.format(msgspec.json.encode(meta)))
        swap_in(fresh, root / meta.policy_id)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    return root / meta.policy_id


def _read_meta(directory: Path) -> PolicyMeta:
    try:
        return msgspec.json.decode((directory / META_FILE).read_bytes(), type=PolicyMeta)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ConfigError(f"{directory}: not a saved policy ({exc})") from exc


def list_policies(root: Path) -> list[PolicyMeta]:
    """Every saved policy, newest first."""
    if not root.is_dir():
        return []
    metas = [_read_meta(p) for p in sorted(root.iterdir()) if (p / META_FILE).is_file()]
    return sorted(metas, key=lambda m: (m.trained_at or datetime.min, m.policy_id), reverse=True)


def load_policy(root: Path, policy_id: str) -> tuple[Policy, PolicyMeta]:
    """A saved policy, ready to rank (training off).

    Raises:
        ConfigError: a policy id that is not one plain directory name, no such policy,
            or one built for other features.
    """
    from aqe.learning.registry import check_policy_id, make_policy

    directory = root / check_policy_id(policy_id)
    if not (directory / META_FILE).is_file():
        known = ", ".join(m.policy_id for m in list_policies(root)) or "none"
        raise ConfigError(f"no policy {policy_id!r} under {root} (known: {known})")
    meta = _read_meta(directory)
    if meta.feature_version != FEATURE_VERSION:
        raise ConfigError(
            f"policy {policy_id} was trained on feature version {meta.feature_version}; "
            f"this aqe computes version {FEATURE_VERSION}: train it again"
        )
    policy = make_policy(meta.algorithm, seed=meta.seed, **meta.hyperparameters)
    policy.load(directory)
    policy.set_training(False)
    return policy, meta


def hyperparameters_as_strings(hp: dict[str, Any]) -> dict[str, str]:
    """Hyperparameters for the ``PolicyTrained`` event (JSON-encoded values)."""
    return {k: json.dumps(v, sort_keys=True) for k, v in sorted(hp.items())}
