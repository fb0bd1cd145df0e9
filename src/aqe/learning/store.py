"""Policies live in the log: parameters in the JetStream object store, facts in the stream.

``aqe learn train`` packs the saved policy directory (:func:`pack_policy`, a
deterministic tar: the same parameters give the same bytes), puts it in the object
store under its sha256 digest (:class:`aqe.log.objectstore.ModelStore`, the one
object-store helper), and only then appends ``learning.policy.trained.v1`` naming
the bucket and digest: an event never names parameters the store lacks, and replay
of the log finds every policy. :func:`fold_policies` folds those facts (newest per
policy id); :func:`fetch_policy` fills the local cache (``<data dir>/policies``)
from the store when a policy is missing there.
"""

from __future__ import annotations

import io
import shutil
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from aqe.errors import ConfigError
from aqe.events import PolicyTrained
from aqe.projections.tables import swap_in

if TYPE_CHECKING:
    from aqe.log.jetstream import JetStreamEventLog

__all__ = [
    "POLICY_SUBJECTS",
    "fetch_policy",
    "fold_policies",
    "pack_policy",
    "put_policy",
    "read_policies",
    "unpack_policy",
]

POLICY_SUBJECTS = "aqe.learning.policy.*.trained"
"""The subjects of ``PolicyTrained`` facts in ``AQE_LEARNING``."""
_MAX_FILES = 64


def pack_policy(directory: Path) -> bytes:
    """The files of a saved policy directory as an uncompressed tar, byte-stable:
    sorted names, no times, owners or modes beyond 0644.

    Raises:
        ConfigError: not a directory of plain files.
    """
    files = sorted(p for p in directory.iterdir()) if directory.is_dir() else []
    if not files or any(not p.is_file() for p in files):
        raise ConfigError(f"{directory}: not a saved policy (plain files expected)")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path in files:
            data = path.read_bytes()
            info = tarfile.TarInfo(path.name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def unpack_policy(data: bytes, root: Path, policy_id: str) -> Path:
    """Write what :func:`pack_policy` made to ``root/<policy_id>`` (atomically).

    Raises:
        ConfigError: not such a tar (nested paths, links, too many files).
    """
    from aqe.learning.registry import check_policy_id

    check_policy_id(policy_id)
    root.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f".{policy_id}.fetch-", dir=root))
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            members = tar.getmembers()
            if len(members) > _MAX_FILES:
                raise ConfigError(f"policy {policy_id}: {len(members)} files in its artefact")
            for member in members:
                name = member.name
                if not member.isfile() or "/" in name or "\\" in name or name.startswith("."):
                    raise ConfigError(f"policy {policy_id}: bad artefact entry {name[:80]!r}")
                extracted = tar.extractfile(member)
                if extracted is None:
                    raise ConfigError(f"policy {policy_id}: unreadable entry {name[:80]!r}")
                (fresh / name).write_bytes(extracted.read())
        swap_in(fresh, root / policy_id)
    except tarfile.TarError as exc:
        shutil.rmtree(fresh, ignore_errors=True)
        raise ConfigError(f"policy {policy_id}: artefact is not a tar ({exc})") from exc
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    return root / policy_id


def fold_policies(events: Iterable[object]) -> dict[str, PolicyTrained]:
    """The newest ``PolicyTrained`` per policy id, in log order (a pure fold)."""
    out: dict[str, PolicyTrained] = {}
    for event in events:
        if isinstance(event, PolicyTrained):
            out[event.policy_id] = event
    return out


async def read_policies(log: JetStreamEventLog) -> dict[str, PolicyTrained]:
    """:func:`fold_policies` over the log's ``PolicyTrained`` facts."""
    from aqe.events import REGISTRY

    events: list[object] = []
    async for env in log.read("AQE_LEARNING", subjects=POLICY_SUBJECTS):
        try:
            events.append(REGISTRY.decode(env.data, subject=env.subject, seq=env.seq))
        except ValueError:
            continue  # undecodable events are the dead-letter path's business
    return fold_policies(events)


async def put_policy(log: JetStreamEventLog, directory: Path) -> tuple[str, str]:
    """Store a saved policy's packed files; ``(bucket, digest)`` to name in the event."""
    from aqe.log.objectstore import BUCKET, ModelStore

    return BUCKET, await ModelStore(log.connection).put(pack_policy(directory))


async def fetch_policy(log: JetStreamEventLog, trained: PolicyTrained, root: Path) -> Path:
    """Fill the cache ``root/<policy id>`` from the object store; its path.

    Raises:
        ConfigError: the fact names no object (trained before policies were stored) or
            another bucket, or the object is missing or corrupt.
    """
    from aqe.log.objectstore import BUCKET, ModelStore

    if not trained.digest:
        raise ConfigError(
            f"policy {trained.policy_id} was trained before policies went to the object "
            "store: train it again"
        )
    if trained.bucket != BUCKET:
        raise ConfigError(f"policy {trained.policy_id} lives in bucket {trained.bucket!r}")
    data = await ModelStore(log.connection).get(trained.digest)
    return unpack_policy(data, root, trained.policy_id)
