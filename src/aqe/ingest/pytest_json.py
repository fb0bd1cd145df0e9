"""pytest-json-report documents (``pytest --json-report``).

The document: ``created`` (epoch seconds), ``duration``, ``root``, ``summary`` and
``tests``, each with a ``nodeid``, an ``outcome`` and its ``setup``/``call``/``teardown``
phases (``duration``, ``outcome``, ``crash``, ``longrepr``, ``stdout``, ``stderr``).

Reading rules:

* Identity: the node id, split by :func:`~aqe.ingest.identity.split_pytest_nodeid`, so
  ``tests/unit/test_calc.py::TestDivide::test_by_zero`` is
  ``tests.unit.test_calc.TestDivide.test_by_zero``, as pytest's own JUnit XML gives it.
  ``file`` is the node id's path part; the node id itself is kept (``nodeid``).
* Outcome: ``passed``, ``failed``, ``error`` and ``skipped`` as they are; ``xfailed``
  (an expected failure) is ``skipped`` and ``xpassed`` is ``passed``, which is how
  pytest's JUnit XML records them too.
* Duration: the sum of the phases' durations.
* Message: from the first phase that failed (for a skip or xfail, the first that was
  skipped): ``crash.message``, then ``longrepr`` on the following lines.
* Output: every phase's ``stdout``, then every phase's ``stderr``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

import msgspec

from aqe.errors import ReportError
from aqe.events import Outcome
from aqe.ingest.identity import split_pytest_nodeid, test_identity
from aqe.ingest.model import MAX_MESSAGE, MAX_OUTPUT, CaseResult, ParsedReport, truncate

__all__ = ["looks_like_pytest_json", "parse_pytest_json"]

_OUTCOMES: dict[str, Outcome] = {
    "passed": "passed",
    "failed": "failed",
    "error": "error",
    "skipped": "skipped",
    "xfailed": "skipped",
    "xpassed": "passed",
}
_PHASES = ("setup", "call", "teardown")

_Phase = tuple[str, Mapping[str, object]]


def looks_like_pytest_json(doc: object) -> bool:
    """Whether a decoded JSON document is a pytest-json-report document."""
    if not isinstance(doc, dict) or not isinstance(doc.get("tests"), list):
        return False
    tests: list[object] = doc["tests"]
    if not tests:
        return "created" in doc and "summary" in doc
    return all(isinstance(t, dict) and "nodeid" in t for t in tests)


def parse_pytest_json(doc: object, *, path: str, digest: str) -> ParsedReport:
    """Read a decoded pytest-json-report document.

    Args:
        doc: the decoded JSON document.
        path: the file's name, for the report and for errors.
        digest: sha256 (hex) of the file's bytes.

    Returns:
        The report, one case per test in the document's order.

    Raises:
        ReportError: a missing or mistyped field (named, e.g. ``tests[3].outcome``).
    """
    report = _object(doc, "the document", path)
    tests = report.get("tests")
    if not isinstance(tests, list):
        raise ReportError(path, "field 'tests' is missing or not a list")
    cases = _numbered(_case(raw, f"tests[{i}]", path) for i, raw in enumerate(tests))
    created = _number(report.get("created"), "created", path)
    return ParsedReport(
        path=path,
        format="pytest-json",
        digest=digest,
        cases=cases,
        flavour="pytest",
        started_at=datetime.fromtimestamp(created, UTC) if created else None,
        duration_s=_number(report.get("duration"), "duration", path),
    )


def _case(raw: object, where: str, path: str) -> CaseResult:
    test = _object(raw, where, path)
    nodeid = test.get("nodeid")
    if not isinstance(nodeid, str) or not nodeid.strip():
        raise ReportError(path, f"{where}.nodeid is missing or not a string")
    outcome = test.get("outcome")
    if not isinstance(outcome, str) or outcome not in _OUTCOMES:
        raise ReportError(
            path, f"{where}.outcome is {outcome!r}, expected one of {', '.join(_OUTCOMES)}"
        )
    phases = [
        (name, _object(test[name], f"{where}.{name}", path))
        for name in _PHASES
        if test.get(name) is not None
    ]
    container, name = split_pytest_nodeid(nodeid)
    try:
        test_id = test_identity(container or None, name)
    except ValueError as exc:
        raise ReportError(path, f"{where}.nodeid {nodeid!r} has no test name") from exc
    return CaseResult(
        test_id=test_id,
        name=name.strip(),
        outcome=_OUTCOMES[outcome],
        duration_s=sum(
            _number(p.get("duration"), f"{where}.{n}.duration", path) or 0.0 for n, p in phases
        ),
        file=nodeid.partition("::")[0] if "::" in nodeid else None,
        nodeid=nodeid.strip(),
        message=_message(phases, outcome),
        output=_output(phases),
    )


def _message(phases: list[_Phase], outcome: str) -> str | None:
    wanted = "skipped" if outcome in ("skipped", "xfailed") else "failed"
    phase = next((p for _, p in phases if p.get("outcome") == wanted), None)
    if phase is None:
        return None
    crash = phase.get("crash")
    summary = crash.get("message") if isinstance(crash, dict) else None
    longrepr = phase.get("longrepr")
    parts = [p for p in (summary, longrepr) if isinstance(p, str) and p.strip()]
    if len(parts) == 2 and parts[0] == parts[1]:
        parts.pop()
    return truncate("\n".join(parts), MAX_MESSAGE) if parts else None


def _output(phases: list[_Phase]) -> str | None:
    text = ""
    for stream in ("stdout", "stderr"):
        for _, phase in phases:
            chunk = phase.get(stream)
            if isinstance(chunk, str) and chunk:
                gap = "\n" if text and not text.endswith("\n") else ""
                text = f"{text}{gap}{chunk}"
    return truncate(text, MAX_OUTPUT) if text else None


def _numbered(cases: Iterable[CaseResult]) -> tuple[CaseResult, ...]:
    seen: Counter[str] = Counter()
    numbered = []
    for case in cases:
        seen[case.test_id] += 1
        numbered.append(msgspec.structs.replace(case, attempt=seen[case.test_id]))
    return tuple(numbered)


def _object(value: object, where: str, path: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise ReportError(path, f"{where} is not a JSON object")
    return value


def _number(value: object, where: str, path: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ReportError(path, f"{where} is {value!r}, expected a number")
    return float(value)
