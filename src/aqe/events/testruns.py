"""Events of the tests domain: runs of a suite and the executions of test cases."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from aqe.events._base import Event

__all__ = [
    "Outcome",
    "TestCaseExecuted",
    "TestCaseQuarantined",
    "TestCaseUnquarantined",
    "TestRunFinished",
    "TestRunSelected",
    "TestRunStarted",
]

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
    source: str | None = None
    """What produced the results: ``pytest-plugin``, ``junit``, ``ctrf``, ``pytest-json``,
    ``iofrol``..."""
    random_seed: int | None = None
    """The seed the tests were shuffled with, so an order-dependent failure can be replayed."""
    random_plugin: str | None = None
    """What shuffled them: ``pytest-randomly`` (replay: ``pytest -p randomly
    --randomly-seed=N``) or ``pytest-random-order`` (``pytest --random-order-seed=N``)."""


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
    flaky: int = 0
    """Tests that failed and then passed on a retry inside this run."""
    quarantined: int = 0
    """Failed or errored tests (counted in ``failed``/``errors``) that were in quarantine,
    so they did not fail the run."""
    interrupted: bool = False
    """The run did not end: its session was killed or crashed, and this marker was
    written later (``aqe ingest`` of the spool it left) with the totals of the
    executions recorded before it stopped."""


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
    suite: str | None = None
    """The suite (report ``testsuite``, package, CTRF suite) the case ran in."""
    name: str | None = None
    """The case's own name as the report gave it (``test_id`` is the normalised one)."""
    classname: str | None = None
    """The report's class name (JUnit ``classname``), when it had one."""
    output: str | None = None
    """Captured output (``system-out``/``system-err``), truncated with a marker."""
    started_at: datetime | None = None
    nodeid: str | None = None
    """The runner's own id of the case, where the report gives it or allows mapping it
    back: the pytest node id (``tests/test_x.py::TestY::test_z[1]``)."""
    quarantined: bool = False
    """The test was in quarantine when it ran: a failure here did not fail the run."""


class TestRunSelected(Event, frozen=True, kw_only=True, tag="tests.run.selected.v1"):
    """A run's tests were selected or reordered from the history before they ran."""

    __test__ = False
    id_field: ClassVar[str] = "run_id"

    run_id: str
    mode: Literal["subset", "order"]
    """``subset``: only ``selected`` ran; ``order``: every test ran, in priority order."""
    policy: str
    """The algorithm or saved policy id that ranked the tests."""
    budget: str | None = None
    """The subset's budget as given (``30%``, ``300s``), when there was one."""
    collected: int = 0
    selected: int = 0
    new: int = 0
    """Selected tests the history did not know (always selected)."""
    deselected_ids: tuple[str, ...] = ()
    """Test ids left out, at most 10,000 of them (``deselected`` counts them all)."""
    deselected: int = 0


class TestCaseQuarantined(Event, frozen=True, kw_only=True, tag="tests.case.quarantined.v1"):
    """A test was put in quarantine: its failures stop failing the build."""

    __test__ = False
    id_field: ClassVar[str] = "test_id"

    test_id: str
    reason: str = ""
    by: str | None = None
    """Who decided: a person, an agent id, or a workflow."""
    at: datetime | None = None


class TestCaseUnquarantined(Event, frozen=True, kw_only=True, tag="tests.case.unquarantined.v1"):
    """A test left quarantine (fixed, verified, or released by hand)."""

    __test__ = False
    id_field: ClassVar[str] = "test_id"

    test_id: str
    reason: str = ""
    by: str | None = None
    at: datetime | None = None
