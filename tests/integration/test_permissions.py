"""Server refusals reach the user at once, in one line, on a real nats-server.

The server is started with a config of users whose publish permissions are
restricted. Before, an append by a user who may not publish waited for the client's
timeout (5-10 s) and said "timed out waiting for the server"; now the server's
"Permissions Violation" is a :class:`PermissionDeniedError` naming the subject, on
the append, pipelined, batch and read paths. A limit the server enforces (a stream's
``max_msgs``, a control line over 4 KB) is a :class:`LimitExceededError` at once.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.js.api import DiscardPolicy

from aqe.config import Settings
from aqe.errors import LimitExceededError, LogUnavailableError, PermissionDeniedError
from aqe.events import TestCaseExecuted, TestRunStarted
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.log.port import NewEvent
from aqe.log.streams import load_stream_specs
from aqe.server import NatsServerProcess

pytestmark = pytest.mark.nats

PASSWORD = "pw-for-a-throwaway-server"  # noqa: S105 - a throwaway test server's
CLIENT_TIMEOUT_S = 5.0
"""nats-py's request timeout: what a refused user used to wait before any answer."""

CONFIG = f"""
authorization {{
    users = [
        {{user: admin, password: "{PASSWORD}"}}
        # May read and use the JetStream API, may not write events.
        {{user: reader, password: "{PASSWORD}", permissions: {{
            publish: {{deny: ["aqe.>"]}}
        }}}}
        # May publish events, may not call the JetStream API (so cannot read).
        {{user: writer, password: "{PASSWORD}", permissions: {{
            publish: {{deny: ["$JS.API.>"]}}
        }}}}
    ]
}}
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServerProcess]:
    config = tmp_path / "users.conf"
    config.write_text(CONFIG)
    proc = NatsServerProcess.start_sync(
        tmp_path / "js", log_file=tmp_path / "nats.log", config_file=config
    )
    try:
        yield proc
    finally:
        proc.stop_sync()


async def _log(server: NatsServerProcess, user: str) -> JetStreamEventLog:
    return await JetStreamEventLog.connect(
        Settings(nats_url=server.url, user=user, password=PASSWORD)
    )


@pytest.fixture
async def streams(server: NatsServerProcess) -> AsyncIterator[None]:
    admin = await _log(server, "admin")
    try:
        await apply_streams(admin.connection, admin.specs)
        await admin.append(TestRunStarted(run_id="r0"))
        yield
    finally:
        await admin.close()


def _case(n: int) -> TestCaseExecuted:
    return TestCaseExecuted(test_id=f"tests/test_x.py::test_{n}", run_id="r1", outcome="passed")


def _one_line_refusal(exc: BaseException, started: float, subject: str) -> None:
    message = str(exc)
    assert "\n" not in message
    assert "permission denied" in message
    assert subject.lower() in message.lower()
    assert "timed out" not in message
    # Not the client's timeout: the refusal came back as soon as the server sent it.
    assert time.monotonic() - started < CLIENT_TIMEOUT_S


@pytest.mark.usefixtures("streams")
async def test_append_without_publish_permission_is_refused_at_once(
    server: NatsServerProcess,
) -> None:
    log = await _log(server, "reader")
    try:
        event = TestRunStarted(run_id="r1")
        started = time.monotonic()
        with pytest.raises(PermissionDeniedError) as caught:
            await log.append(event)
        _one_line_refusal(caught.value, started, "aqe.tests.run.r1.started")
        assert isinstance(caught.value, PermissionError)
        assert caught.value.operation == "publish"

        # The connection is still usable for what the user may do.
        assert await log.last_seq("AQE_TESTS") == 1
    finally:
        await log.close()


@pytest.mark.usefixtures("streams")
async def test_pipelined_and_batch_appends_are_refused_at_once(
    server: NatsServerProcess,
) -> None:
    log = await _log(server, "reader")
    items = [NewEvent(event=_case(n)) for n in range(50)]
    try:
        started = time.monotonic()
        with pytest.raises(PermissionDeniedError) as caught:
            await log.append_many(items)
        _one_line_refusal(caught.value, started, "aqe.tests.")

        started = time.monotonic()
        with pytest.raises(PermissionDeniedError) as caught:
            await log.append_batch(items)
        _one_line_refusal(caught.value, started, "aqe.tests.")
    finally:
        await log.close()


@pytest.mark.usefixtures("streams")
async def test_read_without_api_permission_is_refused_at_once(
    server: NatsServerProcess,
) -> None:
    log = await _log(server, "writer")
    try:
        await log.append(TestRunStarted(run_id="r2"))  # writing is allowed

        started = time.monotonic()
        with pytest.raises(PermissionDeniedError) as caught:
            [env async for env in log.read("AQE_TESTS")]
        _one_line_refusal(caught.value, started, "$JS.API.STREAM.INFO.AQE_TESTS")

        started = time.monotonic()
        with pytest.raises(PermissionDeniedError) as caught:
            await log.last("aqe.tests.run.r2.started")
        _one_line_refusal(caught.value, started, "$JS.API.")

        started = time.monotonic()
        with pytest.raises(PermissionDeniedError) as caught:
            await apply_streams(log.connection, log.specs)  # aqe streams apply
        _one_line_refusal(caught.value, started, "$JS.API.STREAM.INFO.")
    finally:
        await log.close()


async def test_a_full_stream_is_a_limit_not_an_outage(nats_url: str, tmp_path: Path) -> None:
    # A stream at max_bytes with discard "new" answers 503 / 10077, which was retried
    # as an unavailable leader for 15 s by every caller that rides out failovers.
    folder = tmp_path / "streams"
    folder.mkdir()
    (folder / "tests.json").write_text(
        '{"name": "AQE_TESTS", "subjects": ["aqe.tests.>"], "max_bytes": 400}'
    )
    log = await JetStreamEventLog.connect(Settings(nats_url=nats_url), load_stream_specs(folder))
    try:
        await apply_streams(log.connection, log.specs)
        js = log.connection.jetstream()
        config = (await js.stream_info("AQE_TESTS")).config
        config.discard = DiscardPolicy.NEW
        await js.update_stream(config)

        async def fill() -> None:
            for n in range(20):
                await log.append(TestRunStarted(run_id=f"r{n}", suite="x" * 100))

        with pytest.raises(LimitExceededError) as caught:
            await fill()
        assert "maximum bytes exceeded" in str(caught.value)
        assert not isinstance(caught.value, LogUnavailableError)
    finally:
        await log.close()


async def test_a_subject_over_the_control_line_fails_at_once(nats_url: str) -> None:
    # The server closes the connection ("maximum control line exceeded"); nats-py
    # left the request waiting for its timeout.
    log = await JetStreamEventLog.connect(Settings(nats_url=nats_url))
    try:
        await apply_streams(log.connection, log.specs)
        subject = "aqe.tests.case." + "t" * 5000 + ".executed"
        started = time.monotonic()
        with pytest.raises(LimitExceededError) as caught:
            await log.append_raw_batch("AQE_TESTS", [(subject, b"{}", {})])
        assert "maximum control line exceeded" in str(caught.value)
        assert "\n" not in str(caught.value)
        assert time.monotonic() - started < CLIENT_TIMEOUT_S
    finally:
        await log.close()
