"""Labelled test code: the JSON-lines files the flakiness model learns from and scores.

One JSON object per line, ``{"project": str, "test": str, "code": str, "flaky": bool}``
(``flaky`` may be missing in a file that is only to be scored). ``.gz`` files are read
through gzip. A bad line is an error naming the file, the line and the field.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import msgspec

from aqe.errors import DataSetError

__all__ = ["TestCode", "load_tests", "text_digest"]


class TestCode(msgspec.Struct, frozen=True, kw_only=True):
    """One test method: where it lives, its source and (when known) its label."""

    __test__ = False  # not a pytest class

    project: str
    test: str
    code: str
    flaky: bool | None = None


_DECODER = msgspec.json.Decoder(TestCode)


def text_digest(text: str) -> str:
    """sha256 of a text, hex: how inputs are named in events."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as handle:
            yield from enumerate(handle, start=1)
    except (OSError, EOFError) as exc:  # gzip raises BadGzipFile (an OSError) or EOFError
        raise DataSetError(str(path), f"cannot read: {exc}") from exc


def load_tests(path: Path, *, labelled: bool = False) -> list[TestCode]:
    """Read a test-code file.

    Args:
        path: A ``.jsonl`` or ``.jsonl.gz`` file.
        labelled: Require the ``flaky`` field on every line (training and evaluation).

    Returns:
        The tests in file order (blank lines skipped).

    Raises:
        DataSetError: The file cannot be read, a line is not a JSON object of the
            expected fields, ``project`` or ``test`` is empty, or a label is missing.
    """
    out: list[TestCode] = []
    for number, raw in _lines(path):
        if not raw.strip():
            continue
        try:
            item = _DECODER.decode(raw)
        except msgspec.ValidationError as exc:
            raise DataSetError(str(path), f"field {exc}", line=number) from exc
        except msgspec.DecodeError as exc:
            raise DataSetError(str(path), f"not a JSON object: {exc}", line=number) from exc
        for name in ("project", "test"):  # an empty code is data (34 FlakeFlagger tests)
            if not getattr(item, name).strip():
                raise DataSetError(str(path), f"field `{name}` is empty", line=number)
        if labelled and item.flaky is None:
            raise DataSetError(
                str(path), "field `flaky` is missing (a label is needed)", line=number
            )
        out.append(item)
    if not out:
        raise DataSetError(str(path), "no tests in the file")
    return out


def projects_of(tests: Sequence[TestCode]) -> list[str]:
    """The distinct projects, sorted."""
    return sorted({t.project for t in tests})
