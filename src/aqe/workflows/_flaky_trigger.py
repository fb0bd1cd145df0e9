"""When the history starts a flaky workflow, and what its quarantine decisions append.

Pure: :func:`flaky_starts` maps the test-history state to the workflow instances that
should exist, each with a deterministic instance id (the same history, the same ids), so
a watcher may call it after every fold and hand every answer to the engine's start:
an instance that exists already is not started twice. :func:`quarantine_event` maps a
flaky instance's ``quarantine`` / ``unquarantine`` decision to the tests-domain event
that enforces it, with an id derived from the decision, so appending it again is a
duplicate.

Triggers (the newest verdict of a test, in a run no workflow made):

* **passed on retry**: the verdict is ``r`` (failed, then passed in the same run);
* **failed where it had passed**: the verdict is ``f``/``e`` and the test also passed on
  that run's commit.

Quarantined tests are left alone (their own instance is watching them), and so are
tests in ``active`` (an instance is investigating them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping

import msgspec

from aqe.events import TestCaseQuarantined, TestCaseUnquarantined, WorkflowDecided
from aqe.projections.history import HistoryState, TestHistory

__all__ = [
    "WORKFLOW_RUN_PREFIX",
    "FlakyStart",
    "flaky_instance_id",
    "flaky_starts",
    "quarantine_event",
]

WORKFLOW_RUN_PREFIX = "wf-"
"""Runs whose id starts so are a workflow's own reruns (``<task id>-a<attempt>``)."""

_PASSED_BIT = 1


class FlakyStart(msgspec.Struct, frozen=True, kw_only=True):
    """One flaky workflow instance to start: its id, params and the evidence for it."""

    instance_id: str
    params: dict[str, str]
    reasons: tuple[str, ...]


def flaky_instance_id(test_id: str, run_id: str) -> str:
    """The instance that investigates ``test_id`` as ``run_id`` showed it."""
    digest = hashlib.sha256(f"flaky|{test_id}|{run_id}".encode()).hexdigest()
    return f"flaky-{digest[:20]}"


def _why(test: TestHistory) -> str | None:
    if not test.recent or not test.last_run or test.last_run.startswith(WORKFLOW_RUN_PREFIX):
        return None
    verdict = test.recent[0]
    if verdict == "r":
        return f"passed on retry in run {test.last_run}"
    if verdict in "fe" and test.last_commit:
        bits = dict(test.commits).get(test.last_commit, 0)
        if bits & _PASSED_BIT:
            return (
                f"failed in run {test.last_run} on commit {test.last_commit}, where it had passed"
            )
    return None


def flaky_starts(
    state: HistoryState,
    base: Mapping[str, str],
    *,
    active: Collection[str] = (),
) -> list[FlakyStart]:
    """The instances the history calls for, sorted by test id.

    Args:
        state: The test-history projection's state.
        base: Params every instance gets (``source``, ``workdir``, ``python``, ...).
        active: Test ids an instance is investigating already.
    """
    starts: list[FlakyStart] = []
    for test_id in sorted(state.tests):
        test = state.tests[test_id]
        if test.quarantined or test_id in active:
            continue
        why = _why(test)
        if why is None:
            continue
        params = {**base, "test_id": test_id}
        starts.append(
            FlakyStart(
                instance_id=flaky_instance_id(test_id, test.last_run),
                params=params,
                reasons=(why,),
            )
        )
    return starts


def quarantine_event(
    decided: WorkflowDecided,
) -> tuple[str, TestCaseQuarantined | TestCaseUnquarantined] | None:
    """The event (with its id) that carries out a flaky instance's quarantine decision."""
    test_id = decided.data.get("test_id", "")
    if not test_id or decided.key not in ("quarantine", "unquarantine"):
        return None
    by = f"workflow:{decided.instance_id}"
    event_id = f"{decided.instance_id}-{decided.key}"
    if decided.key == "unquarantine":
        return event_id, TestCaseUnquarantined(
            test_id=test_id, reason="; ".join(decided.reasons), by=by
        )
    data = decided.data
    evidence = [
        data.get("verdict", ""),
        f"failure rate {data.get('failure_rate', '?')} {data.get('interval', '')}".rstrip(),
    ]
    if data.get("polluter"):
        evidence.append(f"polluter {data['polluter']}")
    if data.get("state_setter"):
        evidence.append(f"state-setter {data['state_setter']}")
    if data.get("failing_seeds"):
        evidence.append(f"failing seeds {data['failing_seeds']}")
    if data.get("failing_order"):
        evidence.append(f"failing order {data['failing_order']}")
    return event_id, TestCaseQuarantined(test_id=test_id, reason="; ".join(evidence), by=by)
