"""The real data sets aqe measures itself on, found by name.

Two public, MIT-licensed data sets ship gzip-compressed in the repository's ``data/``
folder so a clean clone evaluates on real data with nothing to download:

- ``iofrol``: ABB's IOF/ROL CI history (RETECS), ``data/iofrol.csv.gz``;
- ``cosqa``: the CoSQA code-search dev split (CoCLR), ``data/cosqa/``.

A name resolves to, in order: the environment variable of that data set when set
(``AQE_IOFROL``, ``AQE_COSQA``), the repository's ``data/`` copy, then the sibling
``../shared/data/`` folder (uncompressed) relative to the repository root and to the
working directory. :func:`open_text` reads either form, so callers never care whether
a file is compressed.
"""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path
from typing import IO, Final

__all__ = ["DATASETS", "dataset_path", "find_file", "open_text", "resolve_dataset"]

_REPO_ROOT: Final = Path(__file__).resolve().parents[2]
_SHIPPED: Final = _REPO_ROOT / "data"
_SHARED: Final = Path("..") / "shared" / "data"

DATASETS: Final[dict[str, tuple[str, str]]] = {
    "iofrol": ("AQE_IOFROL", "iofrol.csv"),
    "cosqa": ("AQE_COSQA", "cosqa"),
}
"""Name -> (environment variable, path inside a data folder)."""


def find_file(path: Path) -> Path | None:
    """``path`` itself, or its ``.gz`` sibling, whichever exists (None if neither)."""
    if path.is_file():
        return path
    compressed = path.with_name(path.name + ".gz")
    return compressed if compressed.is_file() else None


def dataset_path(name: str, start: Path | None = None) -> Path | None:
    """Where the data set called ``name`` is, or None when it is nowhere to be found.

    For a file data set this is the file (possibly ``.gz``); for a folder, the folder.
    An environment variable that is set but names nothing gives None, not a fallback:
    the user asked for that location.

    Raises:
        KeyError: ``name`` is not one of :data:`DATASETS`.
    """
    env_var, relative = DATASETS[name]
    explicit = os.environ.get(env_var)
    if explicit:
        chosen = Path(explicit).expanduser()
        return chosen if chosen.exists() else None
    for base in (_SHIPPED, _REPO_ROOT / _SHARED, (start or Path.cwd()) / _SHARED):
        candidate = base / relative
        if candidate.is_dir():
            return candidate.resolve()
        found = find_file(candidate)
        if found is not None:
            return found.resolve()
    return None


def resolve_dataset(value: str | Path) -> Path | None:
    """A data set name (``iofrol``) or a path, as a path that exists (None if missing)."""
    text = str(value)
    if text in DATASETS:
        return dataset_path(text)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    return find_file(path)


def open_text(path: Path) -> IO[str]:
    """Open a data file for reading as UTF-8 text, decompressing ``.gz`` files.

    Raises:
        OSError: The file cannot be opened.
    """
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")
