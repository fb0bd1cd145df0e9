"""A seeded simulation of a small QE fleet, for ``aqe demo`` and the benchmarks.

It produces what a real fleet would append: agents registering and heartbeating, a
pattern library being seeded, and CI runs of a suite in which most tests pass, a few
are flaky (fail, then pass on rerun) and one breaks at a known commit. The same seed
gives the same events with the same ids, so running it twice stores nothing new
(within the streams' duplicate window).
"""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime, timedelta
from xml.sax.saxutils import escape, quoteattr

import msgspec

from aqe.events import (
    AgentHeartbeat,
    AgentRegistered,
    Event,
    Outcome,
    TestCaseExecuted,
    TestRunFinished,
    TestRunStarted,
)
from aqe.ingest.identity import split_pytest_nodeid, test_identity

__all__ = ["FleetPlan", "SimulatedRun", "junit_report", "simulate_fleet"]

_MODULES = {
    "tests/unit/test_parser.py": [
        "test_parse_empty",
        "test_parse_nested",
        "test_unicode_names",
        "test_reject_entities",
        "test_large_system_out",
    ],
    "tests/unit/test_subjects.py": ["test_round_trip", "test_wildcards", "test_dots_escaped"],
    "tests/unit/test_scoring.py": [
        "test_apfd_perfect_order",
        "test_apfd_reverse_order",
        "test_napfd_budget",
        "test_ties_are_stable",
    ],
    "tests/integration/test_checkout.py": [
        "test_cart_total",
        "test_coupon_applies",
        "test_payment_timeout",
        "test_refund_flow",
    ],
    "tests/integration/test_auth.py": [
        "test_login_ok",
        "test_login_locked",
        "test_token_refresh",
        "test_logout_everywhere",
    ],
    "tests/e2e/test_dashboard.py": [
        "test_renders_history",
        "test_filters_flaky",
        "test_export_csv",
    ],
}
_PARAMS = ["", "[sqlite]", "[postgres]"]


class FleetPlan(msgspec.Struct, frozen=True, kw_only=True):
    """How big a fleet to simulate."""

    runs: int = 30
    seed: int = 7
    agents: int = 3
    flaky_share: float = 0.08
    broken_at_run: int = 20
    start: datetime = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)


class SimulatedRun(msgspec.Struct, frozen=True, kw_only=True):
    """One CI run's events, which land together as one atomic batch."""

    run_id: str
    events: tuple[Event, ...]


def _test_ids() -> list[str]:
    """pytest node ids of the simulated suite."""
    ids: list[str] = []
    for module, names in _MODULES.items():
        for name in names:
            params = _PARAMS if "integration" in module else [""]
            ids.extend(f"{module}::{name}{p}" for p in params)
    return ids


def _commit(seed: int, run: int) -> str:
    return hashlib.sha1(f"{seed}:{run}".encode(), usedforsecurity=False).hexdigest()[:12]


def simulate_fleet(plan: FleetPlan) -> tuple[list[Event], list[SimulatedRun]]:
    """Agent and pattern events, then one :class:`SimulatedRun` per CI run."""
    rng = random.Random(plan.seed)  # noqa: S311 - a simulation, not cryptography
    tests = _test_ids()
    durations = {t: round(rng.lognormvariate(-2.0, 1.0), 3) for t in tests}
    flaky = {t: rng.uniform(0.1, 0.35) for t in tests if rng.random() < plan.flaky_share}
    broken = sorted(t for t in tests if "timeout" in t)[:1]
    agents = [f"ci-runner-{i + 1}" for i in range(plan.agents)]

    setup: list[Event] = [
        AgentRegistered(
            agent_id=a,
            role="test-runner",
            capabilities=("pytest", "junit"),
            host=f"ci-{i + 1}.local",
            version="0.1.0",
        )
        for i, a in enumerate(agents)
    ]
    setup.append(
        AgentRegistered(
            agent_id="flaky-hunter", role="analyzer", capabilities=("history", "quarantine")
        )
    )
    from aqe.search.starter import load_starter_library

    setup.extend(load_starter_library())

    runs: list[SimulatedRun] = []
    for r in range(plan.runs):
        run_id = f"ci-{plan.seed}-{r + 1:04d}"
        agent = agents[r % len(agents)]
        commit = _commit(plan.seed, r)
        started = plan.start + timedelta(hours=3 * r)
        events: list[Event] = [
            TestRunStarted(
                run_id=run_id,
                suite="shop",
                commit=commit,
                branch="main",
                ci_url=f"https://ci.example.test/runs/{r + 1}",
                started_at=started,
                agent_id=agent,
            )
        ]
        counts = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
        total_time = 0.0
        for test in tests:
            test_id = test_identity(*split_pytest_nodeid(test))
            name = split_pytest_nodeid(test)[1]
            duration = round(durations[test] * rng.uniform(0.8, 1.3), 3)
            outcome: Outcome
            message: str | None
            if "e2e" in test and r % 10 == 9:
                outcome, message = "skipped", "dashboard env unavailable"
            elif test in broken and r + 1 >= plan.broken_at_run:
                outcome, message = "failed", "TimeoutError: payment gateway did not answer in 5s"
            elif test in flaky and rng.random() < flaky[test]:
                outcome, message = "failed", "AssertionError: flaky timing window"
            else:
                outcome, message = "passed", None
            events.append(
                TestCaseExecuted(
                    test_id=test_id,
                    run_id=run_id,
                    outcome=outcome,
                    duration_s=duration,
                    message=message,
                    file=test.split("::")[0],
                    commit=commit,
                    name=name,
                )
            )
            total_time += duration
            final: Outcome = outcome
            if outcome == "failed" and test in flaky:
                # The runner retries failures once; flaky tests usually pass then.
                final = "passed" if rng.random() < 0.8 else "failed"
                events.append(
                    TestCaseExecuted(
                        test_id=test_id,
                        run_id=run_id,
                        outcome=final,
                        duration_s=duration,
                        attempt=2,
                        message=None if final == "passed" else message,
                        file=test.split("::")[0],
                        commit=commit,
                        name=name,
                    )
                )
                total_time += duration
            counts[final] += 1
        events.append(
            TestRunFinished(
                run_id=run_id,
                total=len(tests),
                passed=counts["passed"],
                failed=counts["failed"],
                errors=counts["error"],
                skipped=counts["skipped"],
                duration_s=round(total_time, 3),
                finished_at=started + timedelta(seconds=total_time),
            )
        )
        runs.append(SimulatedRun(run_id=run_id, events=tuple(events)))
        setup.extend(
            AgentHeartbeat(
                agent_id=a,
                beat=r + 1,
                status="busy" if a == agent else "idle",
                load=1.0 if a == agent else 0.0,
            )
            for a in agents
        )
    return setup, runs


def junit_report(run: SimulatedRun) -> str:
    """The run as a Maven Surefire-style JUnit XML report, as a CI job would upload it.

    A test that failed and then passed on the rerun carries a ``flakyFailure``; one
    that failed again carries a ``rerunFailure`` under its ``failure``.
    """
    start = next(e for e in run.events if isinstance(e, TestRunStarted))
    attempts: dict[str, list[TestCaseExecuted]] = {}
    for event in run.events:
        if isinstance(event, TestCaseExecuted):
            attempts.setdefault(event.test_id, []).append(event)
    cases: list[str] = []
    counts = {"failed": 0, "error": 0, "skipped": 0}
    for test_id, tries in attempts.items():
        first, last = tries[0], tries[-1]
        name = last.name or test_id
        classname = test_id[: -len(name) - 1] if test_id.endswith("." + name) else ""
        if last.outcome in counts:
            counts[last.outcome] += 1
        body = ""
        message = quoteattr(first.message or "")
        if last.outcome == "skipped":
            body = f"<skipped message={message}/>"
        elif last.outcome == "failed":
            body = f'<failure message={message} type="AssertionError">{escape(first.message or "")}'
            body += "".join(
                f'<rerunFailure message={message} type="AssertionError"/>' for _ in tries[1:]
            )
            body += "</failure>"
        elif len(tries) > 1:
            body = "".join(
                f'<flakyFailure message={quoteattr(t.message or "")} type="AssertionError"/>'
                for t in tries[:-1]
            )
        cases.append(
            f"  <testcase name={quoteattr(name)} classname={quoteattr(classname)} "
            f'time="{last.duration_s:.3f}">{body}</testcase>'
        )
    stamp = start.started_at.strftime("%Y-%m-%dT%H:%M:%S") if start.started_at else ""
    header = (
        f'<testsuite name={quoteattr(start.suite)} tests="{len(attempts)}" '
        f'failures="{counts["failed"]}" errors="{counts["error"]}" '
        f'skipped="{counts["skipped"]}" timestamp="{stamp}">'
    )
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + "\n".join(
        [header, *cases, "</testsuite>", ""]
    )
