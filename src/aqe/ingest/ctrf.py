"""CTRF reports (Common Test Report Format, https://ctrf.io).

The document: ``{"results": {"tool": {"name"}, "summary": {..., "start", "stop"},
"tests": [...]}}``; every time and duration is in milliseconds. A test has ``name``,
``status`` (``passed``, ``failed``, ``skipped``, ``pending``, ``other``), ``duration``,
and optionally ``start``, ``stop``, ``suite`` (a list of names from the outermost down;
older reporters write one string), ``filePath``, ``message``, ``trace``, ``stdout`` and
``stderr`` (lists of lines), ``retries``, ``flaky`` and ``retryAttempts``.

Reading rules:

* Identity: the container is ``filePath`` followed by the suite names (``::``
  between them, so the normalised form is dotted), the name is the test's ``name``;
  ``tests/auth/login.test.js`` + ``["Authentication", "Login"]`` + ``user can login``
  is ``tests.auth.login.test.js.Authentication.Login.user can login``.
* Outcome: ``passed`` and ``failed`` as they are; ``skipped``, ``pending`` and
  ``other`` are ``skipped``. ``suite`` on a case is the suite names joined by ``" > "``.
* Message: ``message``, then ``trace`` on the following lines. Output: ``stdout``
  lines, then ``stderr`` lines.
* Attempts, the test object itself always being the last one:

  - ``retryAttempts`` present: they are the earlier attempts, in ``attempt`` order.
    Newer producers also list the final attempt there; it is recognised (and taken
    from the test object instead) when its ``attempt`` is ``retries + 1`` or, without
    ``retries``, when it has the test's final status.
  - only ``retries: N`` (N > 0): a ``failed`` test ran N + 1 times and failed each
    time; a ``passed`` test marked ``flaky: true`` failed N times first. Those earlier
    attempts are recorded as ``failed`` with no message or duration. A passed test
    with ``retries`` but not ``flaky`` is taken as one passing attempt.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

import msgspec

from aqe.errors import ReportError
from aqe.events import Outcome
from aqe.ingest.identity import test_identity
from aqe.ingest.model import MAX_MESSAGE, MAX_OUTPUT, CaseResult, ParsedReport, truncate

__all__ = ["looks_like_ctrf", "parse_ctrf"]

_OUTCOMES: dict[str, Outcome] = {
    "passed": "passed",
    "failed": "failed",
    "skipped": "skipped",
    "pending": "skipped",
    "other": "skipped",
}
_MAX_RETRIES = 1000
"""More retries than this is taken as a broken report, not as attempts to record."""

_Fields = Mapping[str, object]


def looks_like_ctrf(doc: object) -> bool:
    """Whether a decoded JSON document is a CTRF report (``results.tests`` is a list)."""
    results = doc.get("results") if isinstance(doc, dict) else None
    return isinstance(results, dict) and isinstance(results.get("tests"), list)


def parse_ctrf(doc: object, *, path: str, digest: str) -> ParsedReport:
    """Read a decoded CTRF document.

    Args:
        doc: the decoded JSON document.
        path: the file's name, for the report and for errors.
        digest: sha256 (hex) of the file's bytes.

    Returns:
        The report, one case per attempt, each test's attempts in order.

    Raises:
        ReportError: a missing or mistyped field (named, e.g. ``results.tests[2].status``).
    """
    results = _object(_object(doc, "the document", path).get("results"), "results", path)
    tests = results.get("tests")
    if not isinstance(tests, list):
        raise ReportError(path, "results.tests is missing or not a list")
    attempts = [
        case
        for i, raw in enumerate(tests)
        for case in _attempts(
            _object(raw, f"results.tests[{i}]", path), f"results.tests[{i}]", path
        )
    ]
    tool = results.get("tool")
    name = tool.get("name") if isinstance(tool, dict) else None
    summary = results.get("summary")
    summary = summary if isinstance(summary, dict) else {}
    start = _number(summary.get("start"), "results.summary.start", path)
    stop = _number(summary.get("stop"), "results.summary.stop", path)
    return ParsedReport(
        path=path,
        format="ctrf",
        digest=digest,
        cases=_numbered(attempts),
        flavour=name if isinstance(name, str) and name else None,
        started_at=_epoch_ms(start),
        duration_s=(stop - start) / 1000 if start and stop and stop >= start else None,
    )


def _attempts(test: _Fields, where: str, path: str) -> list[CaseResult]:
    name = test.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ReportError(path, f"{where}.name is missing or not a string")
    suites = _suites(test.get("suite"), f"{where}.suite", path)
    file = _text(test.get("filePath"), f"{where}.filePath", path)
    container = "::".join([p for p in (file, *suites) if p and p.strip()]) or None
    base = CaseResult(
        test_id=test_identity(container, name),
        name=name,
        outcome="passed",
        file=file,
        suite=" > ".join(suites) or None,
    )
    final = _attempt(base, test, where, path)
    return [*_earlier(base, test, final, where, path), final]


def _earlier(
    base: CaseResult, test: _Fields, final: CaseResult, where: str, path: str
) -> list[CaseResult]:
    """The attempts before the final one (see the module docstring)."""
    retries = test.get("retries")
    if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int)):
        raise ReportError(path, f"{where}.retries is {retries!r}, expected an integer")
    listed = test.get("retryAttempts")
    if listed is not None:
        if not isinstance(listed, list):
            raise ReportError(path, f"{where}.retryAttempts is not a list")
        entries = [_object(a, f"{where}.retryAttempts[{i}]", path) for i, a in enumerate(listed)]
        tries = [
            (
                _order(e, f"{where}.retryAttempts[{i}]", path),
                _attempt(base, e, f"{where}.retryAttempts[{i}]", path),
            )
            for i, e in enumerate(entries)
        ]
        tries.sort(key=lambda t: t[0])
        if tries and _is_final(tries[-1], retries, final):
            tries.pop()
        return [case for _, case in tries]
    if not retries or retries < 0:
        return []
    if retries > _MAX_RETRIES:
        raise ReportError(path, f"{where}.retries is {retries}, more than {_MAX_RETRIES}")
    if final.outcome == "failed" or (final.outcome == "passed" and test.get("flaky") is True):
        failed = msgspec.structs.replace(base, outcome="failed")
        return [failed] * retries
    return []


def _is_final(last: tuple[int, CaseResult], retries: object, final: CaseResult) -> bool:
    number, case = last
    if isinstance(retries, int):
        return number == retries + 1
    return case.outcome == final.outcome


def _order(entry: _Fields, where: str, path: str) -> int:
    number = entry.get("attempt")
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise ReportError(path, f"{where}.attempt is {number!r}, expected an integer >= 1")
    return number


def _attempt(base: CaseResult, fields: _Fields, where: str, path: str) -> CaseResult:
    """One execution: a test object or one of its ``retryAttempts``."""
    status = fields.get("status")
    if not isinstance(status, str) or status not in _OUTCOMES:
        raise ReportError(
            path, f"{where}.status is {status!r}, expected one of {', '.join(_OUTCOMES)}"
        )
    duration = _number(fields.get("duration"), f"{where}.duration", path) or 0.0
    if duration < 0:
        raise ReportError(path, f"{where}.duration is negative")
    return msgspec.structs.replace(
        base,
        outcome=_OUTCOMES[status],
        duration_s=duration / 1000,
        message=_message(fields, where, path),
        output=_output(fields, where, path),
        started_at=_epoch_ms(_number(fields.get("start"), f"{where}.start", path)),
    )


def _message(fields: _Fields, where: str, path: str) -> str | None:
    message = _text(fields.get("message"), f"{where}.message", path)
    trace = _text(fields.get("trace"), f"{where}.trace", path)
    parts = [p for p in (message, trace) if p and p.strip()]
    if len(parts) == 2 and parts[0] == parts[1]:
        parts.pop()
    return truncate("\n".join(parts), MAX_MESSAGE) if parts else None


def _output(fields: _Fields, where: str, path: str) -> str | None:
    lines = [
        line
        for stream in ("stdout", "stderr")
        for line in _lines(fields.get(stream), f"{where}.{stream}", path)
    ]
    return truncate("\n".join(lines), MAX_OUTPUT) if lines else None


def _suites(value: object, where: str, path: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    return [s for s in _lines(value, where, path) if s.strip()]


def _lines(value: object, where: str, path: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ReportError(path, f"{where} is not a list of strings")
    return value


def _text(value: object, where: str, path: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ReportError(path, f"{where} is {value!r}, expected a string")


def _numbered(cases: Iterable[CaseResult]) -> tuple[CaseResult, ...]:
    seen: Counter[str] = Counter()
    numbered = []
    for case in cases:
        seen[case.test_id] += 1
        numbered.append(msgspec.structs.replace(case, attempt=seen[case.test_id]))
    return tuple(numbered)


def _object(value: object, where: str, path: str) -> _Fields:
    if not isinstance(value, dict):
        raise ReportError(path, f"{where} is missing or not a JSON object")
    return value


def _number(value: object, where: str, path: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ReportError(path, f"{where} is {value!r}, expected a number")
    return float(value)


def _epoch_ms(value: float | None) -> datetime | None:
    """Milliseconds since the epoch as a datetime; 0 or absent means unknown."""
    if not value or value < 0:
        return None
    try:
        return datetime.fromtimestamp(value / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None
