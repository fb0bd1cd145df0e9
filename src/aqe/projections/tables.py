"""LanceDB tables materialised from a projection's state, and reading them back.

A projection's ``state.json`` is its truth; tables are a derived, queryable copy. Each
write builds every table into a fresh directory, then swaps it in for
``<projection dir>/tables``, so a reader never sees a half-written set and Lance keeps
no old versions. The set records the checkpoints it was built at
(``tables/built.json``); :func:`tables_current` tells a reader whether it matches the
snapshot, and a stale or missing set is rebuilt from the state, never trusted.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["TABLES_DIR", "read_table", "tables_current", "write_tables"]

TABLES_DIR = "tables"
_BUILT = "built.json"


def write_tables(
    directory: Path,
    tables: Mapping[str, tuple[Sequence[Mapping[str, Any]], pa.Schema]],
    checkpoints: Mapping[str, int],
) -> Path:
    """Write ``{name: (rows, schema)}`` as LanceDB tables under ``directory/tables``."""
    import lancedb
    import pyarrow as pa

    directory.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f".{TABLES_DIR}.new-", dir=directory))
    try:
        db = lancedb.connect(str(fresh))
        for name, (rows, schema) in tables.items():
            db.create_table(name, pa.Table.from_pylist(list(rows), schema=schema))
        marker = {"checkpoints": dict(sorted(checkpoints.items())), "tables": sorted(tables)}
        (fresh / _BUILT).write_bytes(msgspec.json.encode(marker))
        live = directory / TABLES_DIR
        retired = directory / f".{TABLES_DIR}.old-{os.getpid()}"
        if live.exists():
            os.replace(live, retired)
        os.replace(fresh, live)
        shutil.rmtree(retired, ignore_errors=True)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    return directory / TABLES_DIR


def tables_current(directory: Path, checkpoints: Mapping[str, int]) -> bool:
    """Whether ``directory/tables`` was built at exactly these checkpoints."""
    try:
        raw = (directory / TABLES_DIR / _BUILT).read_bytes()
        marker = msgspec.json.decode(raw)
    except (OSError, msgspec.DecodeError):
        return False
    return isinstance(marker, dict) and marker.get("checkpoints") == dict(checkpoints)


def read_table(directory: Path, name: str) -> list[dict[str, Any]]:
    """Every row of one materialised table, as dicts."""
    import lancedb

    db = lancedb.connect(str(directory / TABLES_DIR))
    rows: list[dict[str, Any]] = db.open_table(name).to_arrow().to_pylist()
    return rows
