"""JUnit XML reports: pytest, Maven Surefire, gotestsum, jest-junit and friends.

The XML is parsed with :mod:`defusedxml` only: a DTD may appear, but entity
declarations and external references are refused (billion laughs, XXE), and each
refusal becomes a :class:`~aqe.errors.ReportError` naming the file.

Reading rules:

* Suites nest: ``<testsuites>`` and ``<testsuite>`` are walked to any depth, in
  document order; a case's ``suite`` is the ``name`` of its nearest ``<testsuite>``.
* Identity (:func:`aqe.ingest.identity.test_identity`): the container is the case's
  ``classname``, unless it is empty or equal to the case's ``name`` (jest-junit writes
  ``classname = name = "{describe} {title}"``; gotestsum writes ``classname=""`` for a
  package's ``TestMain``); then it is the ``file`` attribute when present, else the
  nearest suite's name (the jest describe block or file, the Go package path).
* Outcome: the first of ``<failure>`` → ``failed``, ``<error>`` → ``error``,
  ``<skipped>`` → ``skipped``; none of them → ``passed``. pytest records an xfail as
  ``<skipped>`` and a (non-strict) xpass as a plain pass, so those need no rule.
* Message: the element's ``message`` attribute, then its text (the stack trace) on
  the following lines, cut to :data:`~aqe.ingest.model.MAX_MESSAGE`. Output: the
  case's ``<system-out>`` then ``<system-err>``, cut to
  :data:`~aqe.ingest.model.MAX_OUTPUT`.
* ``time``: seconds; missing or empty is ``0.0``; commas are thousands separators
  (older Surefire writes ``1,234.567``); anything else that is not a finite,
  non-negative number is an error.
* Attempts: Surefire writes one ``<testcase>`` per test with its retries inside:
  ``<flakyFailure>``/``<flakyError>`` on a case that passed on a rerun (each is a
  failed/error attempt before the passing one), ``<rerunFailure>``/``<rerunError>`` on
  a case that kept failing (each is an attempt after the main one). gotestsum
  ``--rerun-fails`` writes every run as its own ``<testcase>``, failures before passes.
  Both come out as one :class:`~aqe.ingest.model.CaseResult` per attempt, numbered
  from 1 per test id in document order.
* Timestamps (``timestamp`` on a suite) are ISO 8601; one without a zone is taken as
  UTC, and one that cannot be read is left out rather than failing the report.
"""

from __future__ import annotations

import io
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import msgspec
from defusedxml import DefusedXmlException, DTDForbidden, EntitiesForbidden
from defusedxml.ElementTree import ParseError, iterparse

from aqe.errors import ReportError
from aqe.events import Outcome
from aqe.ingest.identity import pytest_nodeid, test_identity
from aqe.ingest.model import MAX_MESSAGE, MAX_OUTPUT, CaseResult, ParsedReport, truncate

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element  # a type, never used to parse

__all__ = ["JUNIT_ROOTS", "parse_junit"]

JUNIT_ROOTS = ("testsuites", "testsuite")
"""Root elements of a JUnit XML report."""

_SUITES = frozenset(JUNIT_ROOTS)
_PROBLEMS: tuple[tuple[str, Outcome], ...] = (
    ("failure", "failed"),
    ("error", "error"),
    ("skipped", "skipped"),
)
_BEFORE = {"flakyFailure": "failed", "flakyError": "error"}  # Surefire: passed on a rerun
_AFTER = {"rerunFailure": "failed", "rerunError": "error"}  # Surefire: failed every rerun
_XSI_SCHEMA = "{http://www.w3.org/2001/XMLSchema-instance}noNamespaceSchemaLocation"


def parse_junit(data: bytes, *, path: str, digest: str) -> ParsedReport:
    """Parse one JUnit XML report.

    Args:
        data: the file's bytes.
        path: the file's name, for the report and for errors.
        digest: sha256 (hex) of ``data``.

    Returns:
        The report, one case per attempt in document order.

    Raises:
        ReportError: not well-formed XML (with its line), a DTD entity or external
            reference, a root other than ``<testsuites>``/``<testsuite>``, a
            ``<testcase>`` without a name, or a ``time`` that is not a number.
    """
    if not data.strip():
        raise ReportError(path, "empty file")
    scan = _Scan()
    cases = _numbered(_stream(data, path, scan))
    flavour = scan.flavour()
    if flavour == "pytest":
        cases = tuple(
            msgspec.structs.replace(c, nodeid=pytest_nodeid(c.classname, c.name, c.file))
            for c in cases
        )
    return ParsedReport(
        path=path,
        format="junit",
        digest=digest,
        cases=cases,
        flavour=flavour,
        suite=scan.report_suite(),
        started_at=scan.report_start(),
        duration_s=scan.report_duration(path),
    )


# --- XML ----------------------------------------------------------------------------------


def _xml_events(data: bytes, path: str) -> Iterator[tuple[str, Element]]:
    """``iterparse`` start/end events, with every XML problem as a ReportError."""
    try:
        yield from iterparse(io.BytesIO(data), events=("start", "end"))
    except EntitiesForbidden as exc:
        raise ReportError(
            path,
            f"entities forbidden: the document declares entity {exc.name!r} "
            "(refused: entity expansion and external entities are unsafe)",
        ) from exc
    except DTDForbidden as exc:
        raise ReportError(path, "DTD forbidden in a test report") from exc
    except DefusedXmlException as exc:  # ExternalReferenceForbidden and future kinds
        raise ReportError(path, f"external reference forbidden: {exc}") from exc
    except ParseError as exc:
        line, column = exc.position
        what = str(exc).partition(": line ")[0]  # expat appends the position, given apart
        raise ReportError(path, f"not well-formed XML: {what} (column {column})", line) from exc


def _local(tag: str) -> str:
    """The tag without its ``{namespace}``, if any."""
    return tag.rpartition("}")[2]


def _stream(data: bytes, path: str, scan: _Scan) -> Iterator[CaseResult]:
    """Every attempt of every case, in document order, read as a stream.

    A ``<testcase>`` counts when every element above it is a suite (the walk does not
    enter other elements). Each case is read when its end tag is parsed, then dropped
    from the tree, so memory holds the open suites and one case, not the document.
    """
    # Per open element: (element, walkable: it and all above it are suites, its suite).
    open_: list[tuple[Element, bool, str | None]] = []
    for event, el in _xml_events(data, path):
        tag = _local(el.tag)
        if event == "start":
            if not open_:
                scan.root(el, tag, path)
                open_.append((el, True, el.get("name") if tag == "testsuite" else None))
                continue
            scan.element(el, tag, top=len(open_) == 1)
            _, parent_walkable, suite = open_[-1]
            nearest = (el.get("name") or suite) if tag == "testsuite" else suite
            open_.append((el, parent_walkable and tag in _SUITES, nearest))
            continue
        _, _, suite = open_.pop()
        if not open_:
            break
        parent, parent_walkable, parent_suite = open_[-1]
        if tag == "testcase" and parent_walkable:
            yield from _attempts(el, parent_suite, path)
        if parent_walkable and tag in ("testcase", *_SUITES):
            el.clear()
            parent.remove(el)


class _Scan:
    """What the report as a whole says, gathered while its cases stream past."""

    def __init__(self) -> None:
        self.root_tag = ""
        self.root_attrs: dict[str, str] = {}
        self.tops: list[dict[str, str]] = []
        self.retries = False
        self.surefire_schema = False
        self.go_version = False
        self.pytest_suite = False

    def root(self, el: Element, tag: str, path: str) -> None:
        if tag not in _SUITES:
            raise ReportError(
                path,
                f"not a JUnit report: the root element is <{tag}>, "
                "expected <testsuites> or <testsuite>",
            )
        self.root_tag = tag
        self.root_attrs = dict(el.attrib)
        if tag == "testsuite":
            self.tops.append(self.root_attrs)
        self._suite_marks(el, tag)

    def element(self, el: Element, tag: str, *, top: bool) -> None:
        if tag in _BEFORE or tag in _AFTER:
            self.retries = True
        elif tag == "property" and el.get("name") == "go.version":
            self.go_version = True
        elif tag == "testsuite" and top and self.root_tag == "testsuites":
            self.tops.append(dict(el.attrib))
        self._suite_marks(el, tag)

    def _suite_marks(self, el: Element, tag: str) -> None:
        if tag == "testsuite":
            self.surefire_schema |= "surefire" in (el.get(_XSI_SCHEMA) or "")
            self.pytest_suite |= el.get("name") == "pytest"

    def flavour(self) -> str | None:
        """The producing tool, when its marks are unmistakable."""
        if self.retries or self.surefire_schema:
            return "surefire"
        if self.go_version:
            return "gotestsum"
        if self.root_tag == "testsuites" and self.root_attrs.get("name") == "jest tests":
            return "jest"
        if self.pytest_suite:
            return "pytest"
        return None

    def report_suite(self) -> str | None:
        """The one top-level suite's name, else the root's ``name``."""
        if len(self.tops) == 1 and self.tops[0].get("name"):
            return self.tops[0].get("name")
        return self.root_attrs.get("name") or None

    def report_start(self) -> datetime | None:
        for attrs in (self.root_attrs, *self.tops):
            started = _timestamp(attrs.get("timestamp"))
            if started is not None:
                return started
        return None

    def report_duration(self, path: str) -> float | None:
        if self.root_attrs.get("time", "").strip():
            return _seconds(self.root_attrs.get("time"), path, f"time of <{self.root_tag}>")
        times = [t for a in self.tops if (t := a.get("time") or "").strip()]
        if not times:
            return None
        return sum(_seconds(t, path, "time of <testsuite>") for t in times)


def _numbered(cases: Iterable[CaseResult]) -> tuple[CaseResult, ...]:
    seen: Counter[str] = Counter()
    numbered = []
    for case in cases:
        seen[case.test_id] += 1
        numbered.append(msgspec.structs.replace(case, attempt=seen[case.test_id]))
    return tuple(numbered)


# --- one <testcase> -----------------------------------------------------------------------


def _attempts(case: Element, suite: str | None, path: str) -> list[CaseResult]:
    """The attempts one ``<testcase>`` records: Surefire's flaky runs, the case, its reruns."""
    name = case.get("name") or ""
    if not name.strip():
        where = f" in suite {suite!r}" if suite else ""
        raise ReportError(path, f"a <testcase>{where} has no name")
    classname = case.get("classname") or None
    file = case.get("file") or None
    container = classname if classname and classname != name else file or suite
    base = CaseResult(
        test_id=test_identity(container, name),
        name=name,
        outcome="passed",
        classname=classname,
        file=file,
        suite=suite,
    )
    seconds = _seconds(case.get("time"), path, f"time of testcase {name!r}")
    outcome, problem = _outcome(case)
    main = msgspec.structs.replace(
        base,
        outcome=outcome,
        duration_s=seconds,
        message=_message(problem) if problem is not None else None,
        output=_output(case),
    )
    before = [_retry(base, el, _BEFORE, path) for el in case if _local(el.tag) in _BEFORE]
    after = [_retry(base, el, _AFTER, path) for el in case if _local(el.tag) in _AFTER]
    return [*before, main, *after]


def _outcome(case: Element) -> tuple[Outcome, Element | None]:
    for tag, outcome in _PROBLEMS:
        for child in case:
            if _local(child.tag) == tag:
                return outcome, child
    return "passed", None


def _retry(base: CaseResult, el: Element, kinds: dict[str, str], path: str) -> CaseResult:
    """A Surefire ``flaky*``/``rerun*`` element as an attempt of ``base``."""
    outcome: Outcome = "error" if kinds[_local(el.tag)] == "error" else "failed"
    return msgspec.structs.replace(
        base,
        outcome=outcome,
        duration_s=_seconds(el.get("time"), path, f"time of <{_local(el.tag)}> in {base.name!r}"),
        message=_message(el),
        output=_output(el),
    )


def _message(el: Element) -> str | None:
    """``message`` attribute, then the details: a ``<stackTrace>`` child or the own text."""
    trace = next((c.text for c in el if _local(c.tag) == "stackTrace"), None)
    detail = trace if trace is not None else el.text
    parts = [p for p in (el.get("message"), detail) if p and p.strip()]
    if len(parts) == 2 and parts[0] == parts[1]:
        parts.pop()
    return truncate("\n".join(parts), MAX_MESSAGE) if parts else None


def _output(el: Element) -> str | None:
    """``<system-out>`` then ``<system-err>`` directly under ``el``, joined."""
    text = ""
    for stream in ("system-out", "system-err"):
        for child in el:
            if _local(child.tag) == stream and child.text:
                gap = "\n" if text and not text.endswith("\n") else ""
                text = f"{text}{gap}{child.text}"
    return truncate(text, MAX_OUTPUT) if text else None


def _seconds(raw: str | None, path: str, field: str) -> float:
    """A ``time`` attribute in seconds; missing or empty is 0.0."""
    if raw is None or not raw.strip():
        return 0.0
    try:
        value = float(raw.strip().replace(",", ""))
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ReportError(path, f"{field}: {raw!r} is not a duration in seconds")
    return value


# --- the report as a whole ---------------------------------------------------------------


def _timestamp(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        stamp = datetime.fromisoformat(raw.strip())
    except ValueError:
        return None
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)
