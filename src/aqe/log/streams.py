"""Stream definitions as files: ``streams/*.json`` declare every JetStream stream.

Each file holds one stream. The definitions are the source of truth; ``aqe streams
apply`` makes a server match them and shows the difference first.

Replicas follow the deployment (:func:`replicas_for`, the one rule): a stream declared
``"replicas": "auto"`` gets 3 on a cluster and 1 on a single server (the embedded one
included); ``AQE_REPLICAS`` overrides every file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

from aqe.errors import ConfigError
from aqe.log.subjects import subject_matches

__all__ = [
    "AUTO",
    "CLUSTER_REPLICAS",
    "StreamSpec",
    "default_streams_dir",
    "diff_specs",
    "load_stream_specs",
    "replicas_for",
    "stream_for_subject",
    "with_replicas",
]

AUTO: Final = "auto"
CLUSTER_REPLICAS: Final = 3
"""Replicas an ``auto`` stream gets on a cluster: survives one node down, Raft quorum 2."""


class StreamSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One stream as declared in ``streams/<name>.json``."""

    name: str
    subjects: tuple[str, ...]
    description: str = ""
    retention: Literal["limits", "interest", "workqueue"] = "limits"
    storage: Literal["file", "memory"] = "file"
    replicas: int | Literal["auto"] = "auto"
    duplicate_window_s: float = 120.0
    compression: Literal["none", "s2"] = "none"
    max_age_s: float = 0.0
    max_bytes: int = -1
    max_msg_size: int = -1
    deny_delete: bool = False
    deny_purge: bool = False
    allow_atomic: bool = True
    allow_msg_ttl: bool = False
    audit: bool = False

    def __post_init__(self) -> None:
        if not self.subjects:
            raise ValueError(f"stream {self.name} declares no subjects")
        if self.audit and not (self.deny_delete and self.deny_purge):
            raise ValueError(f"audit stream {self.name} must deny delete and purge")
        if self.replicas not in (1, 3, 5, AUTO):
            raise ValueError(f"stream {self.name}: replicas must be 1, 3, 5 or auto")

    def to_comparable(self) -> dict[str, Any]:
        """The fields a server reports back, for diffing against the live config."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        out.pop("audit")
        out["subjects"] = sorted(self.subjects)
        return out

    def matches(self, subject: str) -> bool:
        """Whether a subject lands in this stream."""
        return any(subject_matches(p, subject) for p in self.subjects)


def default_streams_dir() -> Path:
    """Where stream files live: ``$AQE_STREAMS_DIR``, the wheel's copy, or the checkout's.

    Raises:
        ConfigError: when no directory with stream files can be found.
    """
    env = os.environ.get("AQE_STREAMS_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    packaged = here.parent.parent / "_streams"
    if packaged.is_dir():
        return packaged
    checkout = here.parents[3] / "streams"
    if checkout.is_dir():
        return checkout
    raise ConfigError("no stream definitions found; set AQE_STREAMS_DIR to a folder of *.json")


def load_stream_specs(directory: Path | None = None) -> tuple[StreamSpec, ...]:
    """Read every ``*.json`` stream file in a folder, sorted by name.

    Raises:
        ConfigError: naming the file (and field) that is not a valid stream definition,
            or two streams whose subjects overlap.
    """
    folder = directory or default_streams_dir()
    specs: list[StreamSpec] = []
    for path in sorted(folder.glob("*.json")):
        try:
            spec = msgspec.json.decode(path.read_bytes(), type=StreamSpec)
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        specs.append(spec)
    if not specs:
        raise ConfigError(f"{folder}: no *.json stream definitions")
    _check_unique(specs)
    return tuple(sorted(specs, key=lambda s: s.name))


def _check_unique(specs: Iterable[StreamSpec]) -> None:
    seen_names: set[str] = set()
    seen_subjects: list[tuple[str, str]] = []
    for spec in specs:
        if spec.name in seen_names:
            raise ConfigError(f"stream {spec.name} is declared twice")
        seen_names.add(spec.name)
        for subject in spec.subjects:
            for other, owner in seen_subjects:
                if subject == other or (owner != spec.name and _subjects_overlap(subject, other)):
                    raise ConfigError(
                        f"subject {subject} of {spec.name} overlaps {other} of {owner}"
                    )
            seen_subjects.append((subject, spec.name))


def _subjects_overlap(a: str, b: str) -> bool:
    """Whether some subject matches both filters (the server refuses such streams)."""
    a_tokens, b_tokens = a.split("."), b.split(".")
    for x, y in zip(a_tokens, b_tokens, strict=False):
        if ">" in (x, y):
            return True
        if "*" not in (x, y) and x != y:
            return False
    return len(a_tokens) == len(b_tokens)


def replicas_for(spec: StreamSpec, *, clustered: bool) -> int:
    """The replicas a stream gets on a server: the one rule.

    A single server (the embedded one included) cannot replicate: every stream is R1
    there. On a cluster an ``auto`` stream is R3 and a number is taken as declared.
    """
    if not clustered:
        return 1
    return CLUSTER_REPLICAS if spec.replicas == AUTO else int(spec.replicas)


def with_replicas(specs: Iterable[StreamSpec], replicas: int | None) -> list[StreamSpec]:
    """The specs with every stream's replicas set to ``replicas`` (``None``: unchanged).

    This is how the ``AQE_REPLICAS`` setting overrides the files.
    """
    if replicas is None:
        return list(specs)
    return [msgspec.structs.replace(s, replicas=replicas) for s in specs]


def stream_for_subject(specs: Iterable[StreamSpec], subject: str) -> StreamSpec | None:
    """The stream that stores a subject, if any."""
    for spec in specs:
        if spec.matches(subject):
            return spec
    return None


def diff_specs(wanted: StreamSpec, live: Mapping[str, Any] | None) -> dict[str, tuple[Any, Any]]:
    """Field-by-field difference ``{field: (live, wanted)}``; every field when live is None."""
    target = wanted.to_comparable()
    if live is None:
        return {key: (None, value) for key, value in target.items()}
    return {key: (live.get(key), value) for key, value in target.items() if live.get(key) != value}
