"""Events of the tests domain: runs of a suite and the executions of test cases."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from aqe.events._base import Event

__all__ = ["Outcome", "TestCaseExecuted", "TestRunFinished", "TestRunStarted"]

Outcome = Literal["passed", "failed", "error", "skipped"]
"""What one execution of a test case came to."""


class TestRunStarted(Event, frozen=True, kw_only=True, tag="tests.run.started.v1"):
    """A CI job (or a local pytest session) started running a suite."""

    __test__ = False
    id_field: ClassVar[str] = "run_id"

    run_id: str
    suite: str = ""
    commit: str | None = None
    branch: str | None = None
    ci_url: str | None = None
    started_at: datetime | None = None
    agent_id: str | None = None


class TestRunFinished(Event, frozen=True, kw_only=True, tag="tests.run.finished.v1"):
    """A run ended; the totals are what the runner reported."""

    __test__ = False
    id_field: ClassVar[str] = "run_id"

    run_id: str
    total: int
    passed: int
    failed: int
    errors: int = 0
    skipped: int = 0
    duration_s: float = 0.0
    finished_at: datetime | None = None


class TestCaseExecuted(Event, frozen=True, kw_only=True, tag="tests.case.executed.v1"):
    """One attempt of one test case in one run.

    ``test_id`` is the stable identity of the test across runs and report formats;
    ``attempt`` counts reruns inside the same run (1 = first try).
    """

    __test__ = False
    id_field: ClassVar[str] = "test_id"

    test_id: str
    run_id: str
    outcome: Outcome
    duration_s: float = 0.0
    attempt: int = 1
    message: str | None = None
    file: str | None = None
    commit: str | None = None
