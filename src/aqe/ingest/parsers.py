"""One entry point for every report format: tell the format, read the file, parse it.

Format detection looks at the content, not the file name:

* XML (the first non-blank byte is ``<``) whose root is ``<testsuites>`` or
  ``<testsuite>`` → ``junit``. XML that breaks (or declares entities) before its root
  element is also handed to the JUnit reader, the only XML format, so that the error
  names the line or the forbidden construct.
* a JSON object with a ``results.tests`` list → ``ctrf``;
* a JSON object whose ``tests`` are objects with a ``nodeid`` → ``pytest-json``;
* JSON lines whose first non-empty line is an object with an ``event`` key →
  ``aqe-spool`` (spool files are read by :mod:`aqe.ingest.spool`, not here).

A coverage report (Cobertura XML, LCOV) is a :class:`~aqe.errors.ReportError` that
names ``aqe coverage ingest``, the command that reads it; anything else is one asking
for ``--format``.
"""

from __future__ import annotations

import hashlib
import io
import json
import shlex
from pathlib import Path

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, iterparse

from aqe.coverage.reports import COVERAGE_LABELS, sniff_coverage
from aqe.errors import ReportError
from aqe.ingest.ctrf import looks_like_ctrf, parse_ctrf
from aqe.ingest.files import MAX_REPORT_BYTES, read_report
from aqe.ingest.junit import JUNIT_ROOTS, parse_junit
from aqe.ingest.model import ParsedReport
from aqe.ingest.pytest_json import looks_like_pytest_json, parse_pytest_json

__all__ = ["FORMATS", "SPOOL_FORMAT", "detect_format", "parse_report"]

FORMATS = ("junit", "ctrf", "pytest-json")
"""The report formats :func:`parse_report` reads."""

SPOOL_FORMAT = "aqe-spool"
"""aqe's own JSON-lines spool: detected here, read by :mod:`aqe.ingest.spool`."""

_CANNOT_TELL = f"cannot tell the report format; pass --format {', '.join(FORMATS)}"
_BOM = b"\xef\xbb\xbf"


def detect_format(path: Path, *, max_bytes: int = MAX_REPORT_BYTES) -> str:
    """The format of the report at ``path``, from its content.

    Returns:
        One of :data:`FORMATS`, or :data:`SPOOL_FORMAT`.

    Raises:
        ReportError: the file cannot be read, is larger than ``max_bytes``, is empty,
            or is none of the formats.
    """
    fmt, _doc = _sniff(read_report(path, max_bytes), str(path))
    return fmt


def parse_report(
    path: Path, fmt: str = "auto", *, max_bytes: int = MAX_REPORT_BYTES
) -> ParsedReport:
    """Read the report at ``path`` (the file is read once).

    Args:
        path: the report file.
        fmt: one of :data:`FORMATS`, or ``"auto"`` to tell it from the content.
        max_bytes: the size cap (:func:`aqe.ingest.files.read_report`).

    Returns:
        The parsed report; ``digest`` is the sha256 of the file's bytes.

    Raises:
        ReportError: for every problem: an unknown ``fmt``, a spool file, an unreadable,
            too large, empty or malformed file (with the line when known), a missing field.
    """
    name = str(path)
    if fmt not in (*FORMATS, "auto", SPOOL_FORMAT):
        raise ReportError(name, f"unknown report format {fmt!r}; known: {', '.join(FORMATS)}")
    if fmt == SPOOL_FORMAT:
        raise _spool_error(name)
    data = read_report(path, max_bytes)
    if not _head(data):
        raise ReportError(name, "empty file")
    digest = hashlib.sha256(data).hexdigest()
    doc: object = None
    if fmt == "auto":
        fmt, doc = _sniff(data, name)
        if fmt == SPOOL_FORMAT:
            raise _spool_error(name)
    if fmt == "junit":
        return parse_junit(data, path=name, digest=digest)
    if doc is None:
        doc = _load_json(data, name)
    if fmt == "ctrf":
        return parse_ctrf(doc, path=name, digest=digest)
    return parse_pytest_json(doc, path=name, digest=digest)


def _spool_error(path: str) -> ReportError:
    return ReportError(path, "spool files are read by aqe.ingest.spool, not by the report parsers")


def _sniff(data: bytes, path: str) -> tuple[str, object]:
    """``(format, decoded JSON document or None)``."""
    head = _head(data)
    if not head:
        raise ReportError(path, "empty file")
    if head.startswith(b"<"):
        return _sniff_xml(data, path), None
    try:
        doc = _load_json(data, path)
    except ReportError:
        if _spool_head(data):
            return SPOOL_FORMAT, None
        if head.startswith((b"{", b"[")):
            raise
        _refuse_coverage(data, path)
        raise ReportError(path, _CANNOT_TELL) from None
    if looks_like_ctrf(doc):
        return "ctrf", doc
    if looks_like_pytest_json(doc):
        return "pytest-json", doc
    if isinstance(doc, dict) and "event" in doc:
        return SPOOL_FORMAT, None
    raise ReportError(path, _CANNOT_TELL)


def _sniff_xml(data: bytes, path: str) -> str:
    try:
        _event, root = next(iter(iterparse(io.BytesIO(data), events=("start",))))
    except (ParseError, DefusedXmlException, StopIteration):
        return "junit"  # the JUnit reader names the problem, with its line
    tag = str(root.tag).rpartition("}")[2]
    if tag in JUNIT_ROOTS:
        return "junit"
    _refuse_coverage(data, path)
    raise ReportError(path, f"{_CANNOT_TELL} (an XML document whose root is <{tag}>)")


def _refuse_coverage(data: bytes, path: str) -> None:
    """Raise a ReportError naming ``aqe coverage ingest`` when ``data`` is coverage."""
    kind = sniff_coverage(data)
    if kind is not None:
        raise ReportError(
            path,
            f"a {COVERAGE_LABELS[kind]} coverage report, not test results; load it with "
            f"`aqe coverage ingest {shlex.quote(path)}`",
        )


def _head(data: bytes) -> bytes:
    """``data`` without a UTF-8 byte order mark and leading whitespace."""
    return data.removeprefix(_BOM).lstrip()


def _spool_head(data: bytes) -> bool:
    """Whether the first non-empty line is a JSON object with an ``event`` key."""
    for line in io.BytesIO(data):
        if _head(line):
            try:
                first = json.loads(line)
            except (ValueError, RecursionError):
                return False
            return isinstance(first, dict) and "event" in first
    return False


def _load_json(data: bytes, path: str) -> object:
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise ReportError(
            path, f"not valid JSON (column {exc.colno}): {exc.msg}", exc.lineno
        ) from exc
    except UnicodeDecodeError as exc:
        raise ReportError(path, f"not UTF-8 text: {exc.reason} at byte {exc.start}") from exc
    except RecursionError as exc:
        raise ReportError(path, "JSON nested too deeply") from exc
