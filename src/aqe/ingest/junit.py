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

import math
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import msgspec
from defusedxml import DefusedXmlException, DTDForbidden, EntitiesForbidden
from defusedxml.ElementTree import ParseError, fromstring

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
    root = _parse_xml(data, path)
    if _local(root.tag) not in _SUITES:
        raise ReportError(
            path,
            f"not a JUnit report: the root element is <{_local(root.tag)}>, "
            "expected <testsuites> or <testsuite>",
        )
    cases = _numbered(_walk(root, path))
    flavour = _flavour(root)
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
        suite=_report_suite(root),
        started_at=_report_start(root),
        duration_s=_report_duration(root, path),
    )


# --- XML ----------------------------------------------------------------------------------


def _parse_xml(data: bytes, path: str) -> Element:
    if not data.strip():
        raise ReportError(path, "empty file")
    try:
        return fromstring(data)
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


def _walk(root: Element, path: str) -> Iterator[CaseResult]:
    """Every attempt of every case under ``root``, in document order, without recursion."""
    root_suite = root.get("name") if _local(root.tag) == "testsuite" else None
    stack: list[tuple[Iterator[Element], str | None]] = [(iter(root), root_suite)]
    while stack:
        children, suite = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            continue
        tag = _local(child.tag)
        if tag == "testcase":
            yield from _attempts(child, suite, path)
        elif tag in _SUITES:
            nearest = (child.get("name") or suite) if tag == "testsuite" else suite
            stack.append((iter(child), nearest))


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


# --- the report as a whole ----------------------------------------------------------------


def _flavour(root: Element) -> str | None:
    """The producing tool, when its marks are unmistakable."""
    suites = [el for el in root.iter() if _local(el.tag) == "testsuite"]
    if any(_local(el.tag) in _BEFORE or _local(el.tag) in _AFTER for el in root.iter()) or any(
        "surefire" in (s.get(_XSI_SCHEMA) or "") for s in suites
    ):
        return "surefire"
    if any(_local(el.tag) == "property" and el.get("name") == "go.version" for el in root.iter()):
        return "gotestsum"
    if _local(root.tag) == "testsuites" and root.get("name") == "jest tests":
        return "jest"
    if any(s.get("name") == "pytest" for s in suites):
        return "pytest"
    return None


def _top_suites(root: Element) -> list[Element]:
    if _local(root.tag) == "testsuite":
        return [root]
    return [el for el in root if _local(el.tag) == "testsuite"]


def _report_suite(root: Element) -> str | None:
    """The one top-level suite's name, else the root's ``name``."""
    tops = _top_suites(root)
    if len(tops) == 1 and tops[0].get("name"):
        return tops[0].get("name")
    return root.get("name") or None


def _report_start(root: Element) -> datetime | None:
    for el in (root, *_top_suites(root)):
        started = _timestamp(el.get("timestamp"))
        if started is not None:
            return started
    return None


def _report_duration(root: Element, path: str) -> float | None:
    if root.get("time", "").strip():
        return _seconds(root.get("time"), path, f"time of <{_local(root.tag)}>")
    times = [s.get("time") for s in _top_suites(root) if (s.get("time") or "").strip()]
    if not times:
        return None
    return sum(_seconds(t, path, "time of <testsuite>") for t in times)


def _timestamp(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        stamp = datetime.fromisoformat(raw.strip())
    except ValueError:
        return None
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)
