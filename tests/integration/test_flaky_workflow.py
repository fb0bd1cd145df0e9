"""The flaky workflow end to end: a real nats-server, the workflow driver, two runner agents
and the process sandbox, on the labelled sample project (tests/sample_project).

Every labelled test gets one instance; runners rerun it in fresh sandboxes (each rerun a
real pytest process with its own seed); the workflow must land each test in its labelled
class, with the right polluter or state-setter, and the reruns it spent are printed per
verdict. The quarantine decisions then become TestCaseQuarantined events once, and the
history's trigger starts nothing from the workflow's own reruns.
"""

from __future__ import annotations

import json
import sys
import tomllib
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest

from aqe.coordination.nats_bus import NatsBus
from aqe.events import TestCaseQuarantined, WorkflowDecided
from aqe.log import load_stream_specs
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.projections.deadletter import JetStreamDeadLetters
from aqe.projections.history import HistoryProjection, HistoryState
from aqe.runners import RunnerAgent, RunnerConfig
from aqe.workflows._flaky_trigger import flaky_starts
from aqe.workflows._store import read_instance, read_instances, start_instance
from aqe.workflows.driver import WorkflowDriver
from aqe.workflows.flaky import FLAKY, FlakyWorkflow
from aqe.workflows.flaky_watch import carry_out_quarantines
from support.waiting import until

pytestmark = [pytest.mark.nats, pytest.mark.timeout(900)]

SAMPLE = Path(__file__).resolve().parents[1] / "sample_project"
RUNNER = RunnerConfig(ack_wait_s=60.0, max_attempts=3, fetch_timeout_s=0.5, heartbeat_s=1.0)
EXPECTED = {"fine": "fixed"}


def _labels() -> dict[str, dict[str, Any]]:
    with (SAMPLE / "labels.toml").open("rb") as fh:
        tests: dict[str, dict[str, Any]] = tomllib.load(fh)["tests"]
    return tests


@pytest.fixture
async def log(nats_url: str) -> AsyncIterator[tuple[JetStreamEventLog, nats.NATS]]:
    nc = await nats.connect(nats_url)
    await apply_streams(nc, load_stream_specs())
    jlog = JetStreamEventLog(nc, load_stream_specs())
    yield jlog, nc
    await jlog.close()


async def _history(log: JetStreamEventLog) -> HistoryState:
    projection = HistoryProjection()
    state = projection.initial()
    async for env in log.read("AQE_TESTS"):
        state = projection.apply(state, env, env.decode())
    return state


@pytest.mark.slow  # about 3 minutes on an idle 2-core machine: the slow suite (CI runs it)
async def test_every_labelled_test_lands_in_its_class(
    log: tuple[JetStreamEventLog, nats.NATS],
) -> None:
    jlog, nc = log
    labels = _labels()
    order = list(labels)  # labels.toml lists the tests in the suite's own order
    base = {
        "source": str(SAMPLE),
        "python": sys.executable,
        "watch_rounds": "0",
        "parallel": "2",
        "wall_s": "120",
    }
    instances: dict[str, str] = {}
    for i, test in enumerate(labels):
        params = {**base, "test": test, "order": json.dumps(order)}
        if test == "check_resources.py::test_handle_budget":
            # Known only by its test id: one suite run finds its node id and the order
            # (the order the tests ran, not their sorted names: the polluter sorts after it).
            params = {**base, "test_id": "check_resources.test_handle_budget"}
        instance_id, _ = await start_instance(
            jlog, FLAKY, params, instance_id=f"label-{i:02d}", started_by="test"
        )
        instances[instance_id] = test

    bus = NatsBus(nc)
    runners = [
        RunnerAgent(
            jlog,
            bus,
            ["pytest"],
            agent_id=f"runner-{n}",
            config=RUNNER,
            dead_letters=JetStreamDeadLetters(nc),
        )
        for n in range(2)
    ]
    driver = WorkflowDriver(jlog, {FLAKY: FlakyWorkflow()}, tick_s=0.2)
    async with driver, runners[0], runners[1]:

        async def all_finished() -> bool:
            found = await read_instances(jlog)
            return all(found.get(i) is not None and found[i].finished for i in instances)

        await until(all_finished, "every flaky instance finished", timeout_s=840, every_s=1.0)
    await bus.close()

    verdicts: dict[str, dict[str, str]] = {}
    for instance_id, test in instances.items():
        _, facts = await read_instance(jlog, instance_id)
        decided = [
            f.event
            for f in facts
            if isinstance(f.event, WorkflowDecided) and f.event.key == "verdict"
        ]
        assert len(decided) == 1, (test, facts)
        verdicts[test] = dict(decided[0].data)

    spent: dict[str, list[int]] = defaultdict(list)
    wrong = []
    for test, label in labels.items():
        data = verdicts[test]
        spent[data["verdict"]].append(int(data["reruns"]))
        expected = EXPECTED.get(label["class"], label["class"])
        culprit = data.get("polluter") or data.get("state_setter") or ""
        if data["verdict"] != expected or (
            expected == "order-dependent"
            and (data.get("kind"), culprit) != (label["kind"], label["culprit"])
        ):
            wrong.append((test, label, data))
    for verdict, reruns in sorted(spent.items()):
        print(
            f"{verdict}: {len(reruns)} tests, reruns {sorted(reruns)}, "
            f"mean {sum(reruns) / len(reruns):.1f}"
        )
    assert not wrong, wrong

    # The decisions to quarantine become tests-domain events, once.
    expect_quarantined = {
        t for t, label in labels.items() if label["class"] in ("flaky", "order-dependent")
    }
    assert await carry_out_quarantines(jlog) == len(expect_quarantined)
    assert await carry_out_quarantines(jlog) == 0
    history = await _history(jlog)
    quarantined = {t for t, h in history.tests.items() if h.quarantined}
    assert quarantined == {t.replace(".py::", ".") for t in expect_quarantined}
    reasons = [
        env.decode()
        async for env in jlog.read("AQE_TESTS", subjects="aqe.tests.case.*.quarantined")
    ]
    victim = next(
        e for e in reasons if isinstance(e, TestCaseQuarantined) and e.test_id.endswith("budget")
    )
    assert "polluter check_resources.py::test_open_scratch_files" in victim.reason

    # History saw every rerun (runs wf-...-a1), and the trigger starts nothing from them.
    assert sum(run.startswith("wf-") for run in history.runs) >= sum(map(sum, spent.values()))
    assert flaky_starts(history, base) == []


async def test_history_starts_each_instance_once(
    log: tuple[JetStreamEventLog, nats.NATS],
) -> None:
    from aqe.events import TestCaseExecuted, TestRunFinished, TestRunStarted
    from aqe.ingest.runs import append_run
    from aqe.workflows.flaky_watch import start_from_history

    jlog, _ = log
    run = [
        TestRunStarted(run_id="ci-1", commit="c1"),
        TestCaseExecuted(test_id="m.t_retry", run_id="ci-1", outcome="failed", commit="c1"),
        TestCaseExecuted(
            test_id="m.t_retry", run_id="ci-1", outcome="passed", attempt=2, commit="c1"
        ),
        TestCaseExecuted(test_id="m.t_ok", run_id="ci-1", outcome="passed", commit="c1"),
        TestRunFinished(run_id="ci-1", total=2, passed=2, failed=0),
    ]
    await append_run(jlog, run)
    history = await _history(jlog)
    base = {"source": str(SAMPLE), "python": sys.executable}
    first = await start_from_history(jlog, history, base)
    assert len(first) == 1
    assert await start_from_history(jlog, history, base) == []
    found = await read_instances(jlog)
    assert found[first[0]].params["test_id"] == "m.t_retry"
    assert found[first[0]].workflow == FLAKY
