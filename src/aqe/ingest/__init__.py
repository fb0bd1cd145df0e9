"""Test results in: report parsers, the events of a run, and appending them as one."""

from __future__ import annotations

from aqe.ingest.identity import normalise_container, split_pytest_nodeid, test_identity
from aqe.ingest.model import MAX_MESSAGE, MAX_OUTPUT, CaseResult, ParsedReport, truncate

__all__ = [
    "MAX_MESSAGE",
    "MAX_OUTPUT",
    "CaseResult",
    "ParsedReport",
    "normalise_container",
    "split_pytest_nodeid",
    "test_identity",
    "truncate",
]
