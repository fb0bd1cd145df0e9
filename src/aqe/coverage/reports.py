"""Coverage reports of other tools: Cobertura XML and LCOV, read as they stream.

Both give per file, not per test: statements (every reported line), executed lines
(hits > 0) and branches as ``(exits, taken)`` per branch line. Bad input raises
:class:`~aqe.errors.ReportError` naming the file, the line where known, and why. XML
goes through defusedxml (no entities, no external references).

Paths are kept as the report gives them, ``\\`` turned to ``/`` and a leading ``./``
dropped; Cobertura's relative file names are joined to its first ``<source>`` when
``root`` is given and the joined path lies under it.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, iterparse

from aqe.coverage.measured import MeasuredFile
from aqe.errors import ReportError

__all__ = [
    "COVERAGE_FORMATS",
    "COVERAGE_LABELS",
    "detect_coverage_format",
    "parse_cobertura",
    "parse_lcov",
    "sniff_coverage",
    "sniff_coverage_file",
]

COVERAGE_FORMATS = ("cobertura", "lcov")
COVERAGE_LABELS = {"cobertura": "Cobertura XML", "lcov": "LCOV"}
"""How a message names each coverage format."""

_LCOV_HEAD_RE = re.compile(rb"^(TN|SF):")
_SNIFF_BYTES = 8192

_CONDITION_RE = re.compile(r"\((\d+)/(\d+)\)")


def _clean(path: str) -> str:
    text = path.replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    return text


def detect_coverage_format(path: Path) -> str:
    """``cobertura`` (XML) or ``lcov`` (text records), from the first bytes.

    Raises:
        ReportError: unreadable, empty, or neither.
    """
    try:
        with path.open("rb") as handle:
            head = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError as exc:
        raise ReportError(str(path), f"cannot read: {exc.strerror or exc}") from exc
    if not head:
        raise ReportError(str(path), "empty file")
    if head.startswith(b"<"):
        return "cobertura"
    if _LCOV_HEAD_RE.match(head):
        return "lcov"
    raise ReportError(str(path), "neither Cobertura XML nor LCOV; pass --format")


def sniff_coverage(data: bytes) -> str | None:
    """``cobertura`` or ``lcov`` when ``data`` (a file's start) is a coverage report, else None.

    Stricter than :func:`detect_coverage_format`, for readers of other reports that
    want to say "this is coverage": XML counts only when its root is ``<coverage>``.
    """
    head = data[:_SNIFF_BYTES].lstrip(b"\xef\xbb\xbf \t\r\n")
    if _LCOV_HEAD_RE.match(head):
        return "lcov"
    if not head.startswith(b"<"):
        return None
    try:
        _event, root = next(iter(iterparse(io.BytesIO(head), events=("start",))))
    except (ParseError, DefusedXmlException, StopIteration):
        return None
    return "cobertura" if str(root.tag).rpartition("}")[2] == "coverage" else None


def sniff_coverage_file(path: Path) -> str | None:
    """:func:`sniff_coverage` of a file's first bytes (None when it cannot be read)."""
    try:
        with path.open("rb") as handle:
            return sniff_coverage(handle.read(_SNIFF_BYTES))
    except OSError:
        return None


def _int(value: str | None, where: str, field: str, line: int | None = None) -> int:
    try:
        number = int(value or "")
    except ValueError:
        raise ReportError(where, f"{field} {value!r} is not a whole number", line) from None
    if number < 0:
        raise ReportError(where, f"{field} {value!r} is negative", line)
    return number


def parse_cobertura(path: Path, *, root: Path | None = None) -> list[MeasuredFile]:
    """The files of a Cobertura XML report (coverage.py ``xml``, JaCoCo, gcovr, istanbul).

    Raises:
        ReportError: malformed XML (with its line), a forbidden construct, a missing or
            bad attribute (naming the class's file and the line number).
    """
    name = str(path)
    files: dict[str, MeasuredFile] = {}
    source: str | None = None
    current: MeasuredFile | None = None
    try:
        for event, element in iterparse(str(path), events=("start", "end")):
            tag = str(element.tag).rpartition("}")[2]
            if event == "start":
                if tag == "class":
                    filename = element.get("filename")
                    if not filename:
                        raise ReportError(name, "a <class> without a filename attribute")
                    key = _resolve(filename, source, root)
                    current = files.setdefault(key, MeasuredFile(path=key))
                continue
            if tag == "source":
                if source is None and element.text and element.text.strip():
                    source = element.text.strip()
            elif tag == "line" and current is not None:
                where = f"{name} ({current.path})"
                number = _int(element.get("number"), where, "line number")
                hits = _int(element.get("hits"), where, f"hits of line {number}")
                current.statements.add(number)
                if hits:
                    current.executed.add(number)
                if element.get("branch") == "true":
                    match = _CONDITION_RE.search(element.get("condition-coverage") or "")
                    if match is not None:
                        taken, exits = int(match[1]), int(match[2])
                        if taken > exits:
                            raise ReportError(
                                where, f"line {number}: {taken} of {exits} conditions taken"
                            )
                        current.branches[number] = (exits, taken)
            elif tag == "class":
                current = None
                element.clear()
    except ParseError as exc:
        line = exc.position[0] if exc.position else None
        raise ReportError(name, f"malformed XML: {exc.msg}", line) from exc
    except DefusedXmlException as exc:
        raise ReportError(name, f"forbidden XML construct: {exc}") from exc
    except OSError as exc:
        raise ReportError(name, f"cannot read: {exc.strerror or exc}") from exc
    return [files[p] for p in sorted(files)]


def _resolve(filename: str, source: str | None, root: Path | None) -> str:
    clean = _clean(filename)
    if source is None or root is None or PurePosixPath(clean).is_absolute():
        return clean
    joined = Path(source) / clean
    try:
        return _clean(joined.resolve().relative_to(root.resolve()).as_posix())
    except (ValueError, OSError):
        return clean


def _lcov_lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        with path.open("r", encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                yield number, line.strip()
    except UnicodeDecodeError as exc:
        raise ReportError(str(path), f"not UTF-8 text: {exc.reason}") from exc
    except OSError as exc:
        raise ReportError(str(path), f"cannot read: {exc.strerror or exc}") from exc


def parse_lcov(path: Path) -> list[MeasuredFile]:
    """The files of an LCOV tracefile (``SF``/``DA``/``BRDA``/``end_of_record``).

    Raises:
        ReportError: a record outside ``SF``...``end_of_record``, a malformed ``DA`` or
            ``BRDA`` line (with its line number), a file not ended.
    """
    name = str(path)
    files: dict[str, MeasuredFile] = {}
    current: MeasuredFile | None = None
    exits: dict[int, int] = {}
    taken: dict[int, int] = {}
    for number, line in _lcov_lines(path):
        if not line or line.startswith("TN:"):
            continue
        key, _, value = line.partition(":")
        if key == "SF":
            if current is not None:
                raise ReportError(name, "SF before the previous end_of_record", number)
            current = files.setdefault(_clean(value), MeasuredFile(path=_clean(value)))
            exits, taken = {}, {}
            continue
        if line == "end_of_record":
            if current is None:
                raise ReportError(name, "end_of_record without SF", number)
            for branch_line, count in exits.items():
                current.branches[branch_line] = (count, taken.get(branch_line, 0))
            current = None
            continue
        if current is None:
            raise ReportError(name, f"{key} outside an SF ... end_of_record record", number)
        if key == "DA":
            parts = value.split(",")
            if len(parts) < 2:
                raise ReportError(name, f"DA needs line,hits: {line!r}", number)
            line_no = _int(parts[0], name, "DA line", number)
            hits = _int(parts[1], name, "DA hits", number)
            current.statements.add(line_no)
            if hits:
                current.executed.add(line_no)
        elif key == "BRDA":
            parts = value.split(",")
            if len(parts) != 4:
                raise ReportError(name, f"BRDA needs line,block,branch,taken: {line!r}", number)
            line_no = _int(parts[0], name, "BRDA line", number)
            hit = 0 if parts[3] == "-" else _int(parts[3], name, "BRDA taken", number)
            exits[line_no] = exits.get(line_no, 0) + 1
            if hit:
                taken[line_no] = taken.get(line_no, 0) + 1
        # FN, FNDA, FNF, FNH, LF, LH, BRF, BRH: summaries aqe recomputes.
    if current is not None:
        raise ReportError(name, f"{current.path}: no end_of_record before the end of the file")
    return [files[p] for p in sorted(files)]
