"""Finding and reading report files: a size cap, and no way out of a directory given.

* **Size cap.** Every report or spool file is read through :func:`read_report`, which
  refuses a file larger than ``max_bytes`` (default :data:`MAX_REPORT_BYTES`, the CLI's
  ``--max-file-size`` / ``AQE_INGEST_MAX_BYTES``) with an error naming the file and the
  cap. The size is checked before reading and again while reading, so a file that
  grows, or a device such as ``/dev/zero``, cannot get past it either.
* **Directories.** :func:`find_reports` walks a directory without following symbolic
  links to directories, and takes a symlinked file only when its target lies inside
  the directory given; a link that points outside is skipped with a message saying so
  (a report tree handed over by CI must not make aqe read ``/etc/shadow`` or another
  user's files). Files named directly on the command line are the caller's own choice
  and are read as named. A Cobertura coverage report found there (a ``coverage.xml``
  beside the JUnit files) is skipped with a message naming ``aqe coverage ingest``.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path

from aqe.coverage.reports import COVERAGE_LABELS, sniff_coverage_file
from aqe.errors import ReportError

__all__ = ["MAX_REPORT_BYTES", "REPORT_SUFFIXES", "find_reports", "read_report"]

MAX_REPORT_BYTES = 128 * 1024 * 1024
"""Default cap on one report file: 128 MiB (a JUnit file of 200k cases is about 21 MB)."""

REPORT_SUFFIXES = (".xml", ".json", ".jsonl")
"""File name suffixes :func:`find_reports` picks up in a directory."""

_CHUNK = 1024 * 1024


def read_report(path: Path, max_bytes: int = MAX_REPORT_BYTES, *, noun: str = "the file") -> bytes:
    """The bytes of ``path``, if there are at most ``max_bytes`` of them.

    ``noun`` names the file in a read error ("cannot read <noun>: ...").

    Raises:
        ReportError: the file cannot be read, or it is larger than ``max_bytes``.
    """
    name = str(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > max_bytes:
                raise _too_large(name, max_bytes, size)
            chunks: list[bytes] = []
            total = 0
            while chunk := fh.read(min(_CHUNK, max_bytes + 1 - total)):
                chunks.append(chunk)
                total += len(chunk)
                if total > max_bytes:
                    raise _too_large(name, max_bytes, None)
    except OSError as exc:
        raise ReportError(name, f"cannot read {noun}: {exc.strerror or exc}") from exc
    return b"".join(chunks)


def _too_large(path: str, max_bytes: int, size: int | None) -> ReportError:
    actual = f"{size:,} bytes" if size is not None else "more than that"
    return ReportError(
        path,
        f"file too large: {actual}, the cap is {max_bytes:,} bytes "
        "(raise it with --max-file-size or AQE_INGEST_MAX_BYTES)",
    )


def find_reports(
    paths: Sequence[str | Path], suffixes: Sequence[str] = REPORT_SUFFIXES
) -> tuple[list[Path], list[str]]:
    """Files named, and report files under directories named, in a stable order.

    Returns:
        ``(files, skipped)``: the files to read, and one message per file passed over
        under a directory: a symbolic link that points outside it, or a coverage
        report (Cobertura XML: ``aqe coverage ingest`` reads it).

    Raises:
        ReportError: a path that does not exist, or a directory with no report files.
    """
    files: list[Path] = []
    skipped: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found, passed_over = _walk(path, tuple(suffixes))
            skipped.extend(passed_over)
            if not found:
                kinds = "/".join(suffixes)
                raise ReportError(str(path), f"no {kinds} reports in this directory")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise ReportError(str(path), "no such file or directory")
    return files, skipped


def _walk(directory: Path, suffixes: tuple[str, ...]) -> tuple[list[Path], list[str]]:
    root = directory.resolve()
    found: list[Path] = []
    skipped: list[str] = []
    for here, dirs, names in os.walk(directory, followlinks=False):
        base = Path(here)
        for name in sorted(dirs):
            link = base / name
            if link.is_symlink() and not _inside(link, root):
                skipped.append(f"{link}: skipped, a symbolic link to outside {directory}")
        for name in names:
            path = base / name
            if not path.name.endswith(suffixes):
                continue
            if path.is_symlink() and not _inside(path, root):
                skipped.append(f"{path}: skipped, a symbolic link to outside {directory}")
                continue
            if not path.is_file():
                continue
            coverage = sniff_coverage_file(path)
            if coverage is not None:  # e.g. coverage.xml beside the JUnit reports
                skipped.append(
                    f"{path}: skipped, a {COVERAGE_LABELS[coverage]} coverage report "
                    f"(`aqe coverage ingest {shlex.quote(str(path))}`)"
                )
                continue
            found.append(path)
    return sorted(found), sorted(skipped)


def _inside(link: Path, root: Path) -> bool:
    try:
        return link.resolve().is_relative_to(root)
    except (OSError, RuntimeError):  # a loop of links
        return False
