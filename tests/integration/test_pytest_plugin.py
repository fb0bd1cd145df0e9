"""The pytest plugin against a real nats-server: a sample suite run in a subprocess.

Also with the plugins CI runs beside it (real pytest-rerunfailures and pytest-randomly)
and with aqe's quarantine.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import socket
from pathlib import Path

import pytest

from aqe.config import Settings
from aqe.events import (
    REGISTRY,
    Event,
    TestCaseExecuted,
    TestCaseQuarantined,
    TestRunFinished,
    TestRunStarted,
)
from aqe.ingest.spool import read_spool
from aqe.log.admin import create_missing_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.log.port import NewEvent

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.nats

SAMPLE = """
import pytest

calls = []


def test_pass():
    print("hello out")


def test_fail():
    assert 1 == 2


@pytest.mark.skip(reason="not today")
def test_skip():
    pass


@pytest.fixture
def broken():
    raise RuntimeError("setup boom")


def test_setup_error(broken):
    pass


@pytest.fixture
def bad_teardown():
    yield
    raise RuntimeError("teardown boom")


def test_teardown_error(bad_teardown):
    pass


@pytest.mark.parametrize("n", [1, 2])
def test_param(n):
    assert n > 0


@pytest.mark.xfail(reason="known")
def test_xfail():
    assert False


class TestGroup:
    def test_method(self):
        pass


def test_flaky():
    calls.append(1)
    assert len(calls) > 1, "first try fails"
"""

# Reruns test_flaky once the way pytest-rerunfailures does: the failing phase of the
# first attempt is logged with outcome "rerun" and that attempt's teardown is not logged.
RERUN_CONFTEST = """
import pytest
from _pytest.runner import runtestprotocol


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    if item.name != "test_flaky":
        return None
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    for attempt in (1, 2):
        reports = runtestprotocol(item, nextitem=nextitem, log=False)
        rerun = False
        for report in reports:
            if attempt == 1 and report.failed:
                report.outcome = "rerun"
                rerun = True
            item.ihook.pytest_runtest_logreport(report=report)
            if rerun:
                break
        if not rerun:
            break
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


def pytest_report_teststatus(report):
    if report.outcome == "rerun":
        return "rerun", "R", "RERUN"
    return None
"""

EXPECTED = {
    "test_sample.test_pass": "passed",
    "test_sample.test_fail": "failed",
    "test_sample.test_skip": "skipped",
    "test_sample.test_setup_error": "error",
    "test_sample.test_teardown_error": "error",
    "test_sample.test_param[1]": "passed",
    "test_sample.test_param[2]": "passed",
    "test_sample.test_xfail": "skipped",
    "test_sample.TestGroup.test_method": "passed",
    "test_sample.test_flaky": "passed",
}


def _plugin_args() -> list[str]:
    """``-p aqe.pytest_plugin`` unless the entry point already loads it (twice fails)."""
    installed = any(
        ep.value == "aqe.pytest_plugin" for ep in importlib.metadata.entry_points(group="pytest11")
    )
    return [] if installed else ["-p", "aqe.pytest_plugin"]


@pytest.fixture
def sample(pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The sample suite in pytester's directory; aqe's data dir under ``tmp_path``."""
    pytester.makepyfile(test_sample=SAMPLE)
    pytester.makeconftest(RERUN_CONFTEST)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    data_dir = tmp_path / "aqe-data"
    monkeypatch.setenv("AQE_DATA_DIR", str(data_dir))
    monkeypatch.delenv("AQE_NATS_URL", raising=False)
    return data_dir


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _stored(nats_url: str) -> list[Event]:
    log = await JetStreamEventLog.connect(Settings(nats_url=nats_url))
    try:
        return [REGISTRY.decode(env.data) async for env in log.read("AQE_TESTS")]
    finally:
        await log.close()


async def _stream_names(nats_url: str) -> list[str]:
    log = await JetStreamEventLog.connect(Settings(nats_url=nats_url))
    try:
        infos = await log.connection.jetstream().streams_info()
        return [str(i.config.name) for i in infos]
    finally:
        await log.close()


def _check_run(events: list[Event], run_id: str) -> None:
    """The events of the sample run: start, one per attempt, the totals."""
    assert [e.run_id for e in events if hasattr(e, "run_id")] == [run_id] * len(events)
    start, *cases, finish = events
    assert isinstance(start, TestRunStarted)
    assert (start.source, start.suite, start.commit, start.branch) == (
        "pytest-plugin",
        "sample",
        "c0ffee",
        "main",
    )
    assert start.started_at is not None
    assert all(isinstance(c, TestCaseExecuted) for c in cases)
    executed = [c for c in cases if isinstance(c, TestCaseExecuted)]
    final = {c.test_id: c for c in executed}
    assert {t: c.outcome for t, c in final.items()} == EXPECTED
    flaky = [c for c in executed if c.test_id == "test_sample.test_flaky"]
    assert [(c.attempt, c.outcome) for c in flaky] == [(1, "failed"), (2, "passed")]
    assert "first try fails" in (flaky[0].message or "")
    assert "hello out" in (final["test_sample.test_pass"].output or "")
    assert "assert 1 == 2" in (final["test_sample.test_fail"].message or "")
    assert final["test_sample.test_skip"].message == "Skipped: not today"
    assert final["test_sample.test_xfail"].message == "xfail: known"
    assert "setup boom" in (final["test_sample.test_setup_error"].message or "")
    assert "teardown boom" in (final["test_sample.test_teardown_error"].message or "")
    method = final["test_sample.TestGroup.test_method"]
    assert (method.name, method.classname, method.file) == (
        "test_method",
        "test_sample.TestGroup",
        "test_sample.py",
    )
    assert final["test_sample.test_param[2]"].name == "test_param[2]"
    assert all(c.commit == "c0ffee" and c.suite == "sample" for c in executed)
    assert all(c.started_at is not None and c.duration_s >= 0 for c in executed)
    assert isinstance(finish, TestRunFinished)
    totals = (finish.total, finish.passed, finish.failed, finish.errors, finish.skipped)
    assert totals == (10, 5, 1, 2, 2)
    assert finish.flaky == 1
    assert finish.duration_s > 0
    assert finish.finished_at is not None


def _no_wait_ran_out(output: str) -> None:
    """The plugin waited on no bound of its own: neither the end of the session's wait
    for acknowledgements (``FINISH_TIMEOUT_S``) nor one append's (``_ACK_TIMEOUT_S``).

    These are the only places the plugin waits on the network (submitting an event
    never blocks), so this proves what a wall-clock limit on the run meant to, without
    a fixed time threshold that a loaded machine breaks.
    """
    assert "unacknowledged after" not in output
    assert "no acknowledgement in" not in output


def test_live_run_is_published(pytester: pytest.Pytester, sample: Path, nats_url: str) -> None:
    result = pytester.runpytest_subprocess(
        *_plugin_args(),
        "--aqe",
        "--aqe-url",
        nats_url,
        "--aqe-run-id",
        "live-1",
        "--aqe-commit",
        "c0ffee",
        "--aqe-branch",
        "main",
        "--aqe-suite",
        "sample",
        timeout=60,
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=6, failed=1, skipped=1, xfailed=1, errors=2)
    # Every event acknowledged within the session's bounded wait (else the line says why).
    result.stdout.fnmatch_lines([f"aqe: published run live-1 (11 results) to {nats_url}"])
    _no_wait_ran_out(result.stdout.str())
    assert "could not publish" not in result.stdout.str()
    assert list((sample / "spool").iterdir()) == []  # published, so the spool is gone
    events = asyncio.run(_stored(nats_url))
    _check_run(events, "live-1")


def test_unreachable_server_spools_everything(
    pytester: pytest.Pytester, sample: Path, nats_url: str
) -> None:
    # Enabled from the ini file this time, not --aqe.
    pytester.makeini("[pytest]\naqe = true\nasyncio_default_fixture_loop_scope = function\n")
    dead = f"nats://127.0.0.1:{_closed_port()}"
    result = pytester.runpytest_subprocess(
        *_plugin_args(),
        "--aqe-url",
        dead,
        "--aqe-run-id",
        "offline-1",
        "--aqe-commit",
        "c0ffee",
        "--aqe-branch",
        "main",
        "--aqe-suite",
        "sample",
        timeout=60,
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=6, failed=1, skipped=1, xfailed=1, errors=2)
    spool = sample / "spool" / "offline-1.jsonl"
    # The reason is the connect attempt's own failure (bounded by the plugin's connect
    # timeout, one attempt): the session did not sit out its wait for acknowledgements.
    result.stdout.fnmatch_lines(
        [
            f"aqe: could not publish to NATS (cannot connect to NATS at {dead}: *); "
            f"results spooled to {spool}; load them later with: aqe ingest {spool}"
        ]
    )
    _no_wait_ran_out(result.stdout.str())

    events = read_spool(spool)
    _check_run(events, "offline-1")

    async def ingest() -> tuple[int, int, int, int]:
        log = await JetStreamEventLog.connect(Settings(nats_url=nats_url))
        try:
            await create_missing_streams(log.connection, log.specs)
            first = await log.append_batch([NewEvent(event=e) for e in events])
            again = await log.append_batch([NewEvent(event=e) for e in events])
        finally:
            await log.close()
        return first.count, first.duplicates, again.count, again.duplicates

    assert asyncio.run(ingest()) == (13, 0, 13, 13)
    assert asyncio.run(_stored(nats_url)) == events


def test_plugin_is_inert_without_aqe(
    pytester: pytest.Pytester, sample: Path, nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AQE_NATS_URL", nats_url)
    result = pytester.runpytest_subprocess(*_plugin_args(), timeout=60)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=6, failed=1, skipped=1, xfailed=1, errors=2)
    assert "aqe:" not in result.stdout.str() + result.stderr.str()
    assert not sample.exists()  # no data dir, no spool
    assert asyncio.run(_stream_names(nats_url)) == []  # nobody connected to create streams


RERUN_SAMPLE = """
calls = []


def test_always():
    assert False, "broken for good"


def test_flaky():
    calls.append(1)
    assert len(calls) > 1, "first try fails"


def test_fine():
    pass
"""

QUARANTINE_SAMPLE = """
def test_ok():
    pass


def test_known_bad():
    assert 1 == 2, "still broken"
"""


@pytest.fixture
def project(pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    monkeypatch.setenv("AQE_DATA_DIR", str(tmp_path / "aqe-data"))
    monkeypatch.delenv("AQE_NATS_URL", raising=False)
    return pytester.path


async def _append(nats_url: str, event: Event) -> None:
    log = await JetStreamEventLog.connect(Settings(nats_url=nats_url))
    try:
        await create_missing_streams(log.connection, log.specs)
        await log.append_many([NewEvent(event=event)])
    finally:
        await log.close()


def _attempts(events: list[Event], test_id: str) -> list[tuple[int, str]]:
    return [
        (e.attempt, e.outcome)
        for e in events
        if isinstance(e, TestCaseExecuted) and e.test_id == test_id
    ]


def test_rerunfailures_attempts_are_the_tries(
    pytester: pytest.Pytester, project: Path, nats_url: str
) -> None:
    """Each rerun is one attempt; the teardown reports after a rerun add none."""
    assert int(importlib.metadata.version("pytest-rerunfailures").split(".")[0]) >= 14
    pytester.makepyfile(test_rr=RERUN_SAMPLE)
    args = ["-p", "no:randomly", "--reruns", "2", "--aqe", "--aqe-url", nats_url]
    result = pytester.runpytest_subprocess(
        *_plugin_args(), *args, "--aqe-run-id", "rr-1", timeout=60
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert result.parseoutcomes() == {"passed": 2, "failed": 1, "rerun": 3}
    events = asyncio.run(_stored(nats_url))
    assert _attempts(events, "test_rr.test_always") == [
        (1, "failed"),
        (2, "failed"),
        (3, "failed"),
    ]
    assert _attempts(events, "test_rr.test_flaky") == [(1, "failed"), (2, "passed")]
    assert _attempts(events, "test_rr.test_fine") == [(1, "passed")]
    always = [e for e in events if isinstance(e, TestCaseExecuted) and "always" in e.test_id]
    assert all("broken for good" in (e.message or "") for e in always)
    assert {e.nodeid for e in always} == {"test_rr.py::test_always"}
    (finish,) = [e for e in events if isinstance(e, TestRunFinished)]
    assert (finish.total, finish.passed, finish.failed, finish.flaky) == (3, 2, 1, 1)


def test_random_seed_is_recorded(pytester: pytest.Pytester, project: Path, nats_url: str) -> None:
    pytester.makepyfile(test_rr="def test_a():\n    pass\n\ndef test_b():\n    pass\n")
    common = [*_plugin_args(), "--aqe", "--aqe-url", nats_url]
    shuffled = pytester.runpytest_subprocess(
        *common, "-p", "randomly", "--randomly-seed=4321", "--aqe-run-id", "seeded", timeout=60
    )
    assert shuffled.ret == pytest.ExitCode.OK
    plain = pytester.runpytest_subprocess(
        *common, "-p", "no:randomly", "--aqe-run-id", "plain", timeout=60
    )
    assert plain.ret == pytest.ExitCode.OK
    starts = {e.run_id: e for e in asyncio.run(_stored(nats_url)) if isinstance(e, TestRunStarted)}
    seeded = starts["seeded"]
    assert (seeded.random_seed, seeded.random_plugin) == (4321, "pytest-randomly")
    assert (starts["plain"].random_seed, starts["plain"].random_plugin) == (None, None)


def test_quarantined_failure_does_not_fail_the_session(
    pytester: pytest.Pytester, project: Path, nats_url: str
) -> None:
    pytester.makepyfile(test_q=QUARANTINE_SAMPLE)
    asyncio.run(_append(nats_url, TestCaseQuarantined(test_id="test_q.test_known_bad", by="me")))
    args = [*_plugin_args(), "-p", "no:randomly", "--aqe", "--aqe-url", nats_url]
    result = pytester.runpytest_subprocess(*args, "--aqe-run-id", "q-1", timeout=60)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.assert_outcomes(passed=1, xfailed=1)
    result.stdout.fnmatch_lines(
        ["aqe: 1 quarantined test(s) failed without failing the session*test_q.test_known_bad"]
    )
    events = [e for e in asyncio.run(_stored(nats_url)) if getattr(e, "run_id", "") == "q-1"]
    (bad,) = [e for e in events if isinstance(e, TestCaseExecuted) and "known_bad" in e.test_id]
    assert (bad.outcome, bad.quarantined) == ("failed", True)
    assert "still broken" in (bad.message or "")
    (finish,) = [e for e in events if isinstance(e, TestRunFinished)]
    assert (finish.failed, finish.quarantined) == (1, 1)

    # Opted out, the same failure fails the session again.
    opted_out = pytester.runpytest_subprocess(
        *args, "--aqe-no-quarantine", "--aqe-run-id", "q-2", timeout=60
    )
    assert opted_out.ret == pytest.ExitCode.TESTS_FAILED
    opted_out.assert_outcomes(passed=1, failed=1)
