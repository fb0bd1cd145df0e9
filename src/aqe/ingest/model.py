"""What every report parser produces: tool-neutral results, before they become events.

A parser turns one file into a :class:`ParsedReport`; :mod:`aqe.ingest.runs` turns
reports into the events of one run. Keeping the two apart means every format lands
as the same events, with the same test identity (:mod:`aqe.ingest.identity`).
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from aqe.events import Outcome

__all__ = ["MAX_MESSAGE", "MAX_OUTPUT", "CaseResult", "ParsedReport", "truncate"]

MAX_OUTPUT = 64 * 1024
"""Characters of captured output (``system-out``/``system-err``) kept per case."""

MAX_MESSAGE = 8 * 1024
"""Characters of a failure message kept per case."""


def truncate(text: str | None, limit: int) -> str | None:
    """``text`` cut to ``limit`` characters, with a marker saying how much was dropped.

    Control characters are kept as they are (they are text, and JSON escapes them).
    """
    if text is None or len(text) <= limit:
        return text
    dropped = len(text) - limit
    return f"{text[:limit]}\n[aqe: truncated {dropped} characters]"


class CaseResult(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt of one test case, as a report recorded it."""

    test_id: str
    """The normalised identity (see :func:`aqe.ingest.identity.test_identity`)."""
    name: str
    outcome: Outcome
    duration_s: float = 0.0
    attempt: int = 1
    """1 for the first try; reruns inside the same report count up."""
    classname: str | None = None
    file: str | None = None
    suite: str | None = None
    message: str | None = None
    output: str | None = None
    started_at: datetime | None = None
    nodeid: str | None = None
    """The runner's own id (a pytest node id), where the report gives or allows it."""


class ParsedReport(msgspec.Struct, frozen=True, kw_only=True):
    """One report file, parsed."""

    path: str
    format: str
    """``junit``, ``ctrf``, ``pytest-json`` or ``aqe-spool``."""
    digest: str
    """sha256 (hex) of the file's bytes: a report's identity when no run id is given."""
    cases: tuple[CaseResult, ...] = ()
    flavour: str | None = None
    """The producing tool when recognisable: ``pytest``, ``surefire``, ``gotestsum``,
    ``jest``..."""
    suite: str | None = None
    started_at: datetime | None = None
    duration_s: float | None = None
