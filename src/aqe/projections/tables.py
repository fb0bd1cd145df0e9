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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "TABLES_DIR",
    "build_derived",
    "derived_current",
    "read_table",
    "swap_in",
    "tables_current",
    "write_tables",
]

TABLES_DIR = "tables"
_BUILT = "built.json"


def swap_in(fresh: Path, live: Path) -> None:
    """Put the directory ``fresh`` in place of ``live`` (which may be absent).

    The old directory is renamed aside first and removed after, so ``live`` is only
    missing for the instant between two renames, never half-written.
    """
    retired = live.parent / f".{live.name}.old-{os.getpid()}"
    if live.exists():
        os.replace(live, retired)
    os.replace(fresh, live)
    shutil.rmtree(retired, ignore_errors=True)


def build_derived(
    directory: Path,
    name: str,
    fill: Callable[[Path], None],
    checkpoints: Mapping[str, int],
) -> Path:
    """Build a derived set ``directory/name`` with ``fill(fresh_dir)`` and swap it in.

    The set is built aside, stamped with the checkpoints it was built at
    (``built.json``), then renamed over the live one, so readers never see a
    half-written set; :func:`derived_current` checks the stamp.
    """
    directory.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f".{name}.new-", dir=directory))
    try:
        fill(fresh)
        marker = {"checkpoints": dict(sorted(checkpoints.items()))}
        (fresh / _BUILT).write_bytes(msgspec.json.encode(marker))
        swap_in(fresh, directory / name)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    return directory / name


def derived_current(directory: Path, name: str, checkpoints: Mapping[str, int]) -> bool:
    """Whether ``directory/name`` was built at exactly these checkpoints."""
    try:
        marker = msgspec.json.decode((directory / name / _BUILT).read_bytes())
    except (OSError, msgspec.DecodeError):
        return False
    return isinstance(marker, dict) and marker.get("checkpoints") == dict(checkpoints)


def write_tables(
    directory: Path,
    tables: Mapping[
        str, tuple[Sequence[Mapping[str, Any]] | pa.Table | pa.RecordBatchReader, pa.Schema]
    ],
    checkpoints: Mapping[str, int],
) -> Path:
    """Write ``{name: (rows, schema)}`` as LanceDB tables under ``directory/tables``.

    ``rows`` may also be Arrow data already: a table, or a reader of record batches
    that LanceDB writes as they come (for a projection whose rows would not fit in
    memory as dicts, or even as one Arrow table).
    """

    def fill(fresh: Path) -> None:
        import lancedb
        import pyarrow as pa

        db = lancedb.connect(str(fresh))
        for name, (rows, schema) in tables.items():
            arrow = (
                rows
                if isinstance(rows, pa.Table | pa.RecordBatchReader)
                else pa.Table.from_pylist(list(rows), schema=schema)
            )
            db.create_table(name, arrow)

    return build_derived(directory, TABLES_DIR, fill, checkpoints)


def tables_current(directory: Path, checkpoints: Mapping[str, int]) -> bool:
    """Whether ``directory/tables`` was built at exactly these checkpoints."""
    return derived_current(directory, TABLES_DIR, checkpoints)


def read_table(directory: Path, name: str) -> list[dict[str, Any]]:
    """Every row of one materialised table, as dicts."""
    import lancedb

    db = lancedb.connect(str(directory / TABLES_DIR))
    rows: list[dict[str, Any]] = db.open_table(name).to_arrow().to_pylist()
    return rows
