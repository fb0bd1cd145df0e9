"""The JetStream adapter's one place that maps nats-py errors onto aqe's (no server)."""

from __future__ import annotations

import nats.js.errors
import pytest
from nats.aio.msg import Msg

from aqe.errors import (
    ConcurrencyError,
    LimitExceededError,
    LogError,
    LogUnavailableError,
    MessageInProcessError,
)
from aqe.log.jetstream import _pub_ack, _translated


@pytest.mark.parametrize(
    ("err_code", "description", "actual"),
    [
        (10071, "wrong last sequence: 42", 42),
        # What a cluster answered in CI for a single conditional publish on an R3 stream.
        (10164, "wrong last sequence", None),
    ],
)
def test_a_failed_condition_is_a_concurrency_error(
    err_code: int, description: str, actual: int | None
) -> None:
    with pytest.raises(ConcurrencyError) as caught, _translated("aqe.coord.lease.g.*", 7):
        raise nats.js.errors.BadRequestError(code=400, err_code=err_code, description=description)
    assert (caught.value.expected, caught.value.actual) == (7, actual)


def test_another_server_error_stays_a_log_error() -> None:
    with pytest.raises(LogError, match="server error 10999") as caught, _translated("aqe.x"):
        raise nats.js.errors.BadRequestError(code=400, err_code=10999, description="nope")
    assert not isinstance(caught.value, ConcurrencyError)


def _api_error(code: int, err_code: int, description: str) -> nats.js.errors.APIError:
    kind = nats.js.errors.ServiceUnavailableError if code == 503 else nats.js.errors.APIError
    return kind(code=code, err_code=err_code, description=description)


def test_a_message_still_in_process_is_retryable() -> None:
    # What an R3 stream's leader cut off from its peers answers a retried publish.
    error = _api_error(503, 10158, "duplicate message id is in process")
    with pytest.raises(MessageInProcessError) as caught, _translated("aqe.tests.run.r1.started"):
        raise error
    assert isinstance(caught.value, LogUnavailableError)  # while_unavailable retries it
    assert caught.value.code == 10158
    assert "aqe.tests.run.r1.started" in str(caught.value)


@pytest.mark.parametrize(
    ("code", "err_code", "description"),
    [
        # Answers of a real nats-server 2.15 (max_msgs, max_bytes, per-subject, size).
        (503, 10077, "maximum messages exceeded"),
        (503, 10077, "maximum bytes exceeded"),
        (503, 10077, "maximum messages per subject exceeded"),
        (400, 10054, "message size exceeds maximum allowed"),
        (503, 10023, "insufficient resources"),
    ],
)
def test_limits_are_answers_not_outages(code: int, err_code: int, description: str) -> None:
    with pytest.raises(LimitExceededError) as caught, _translated("aqe.tests.x"):
        raise _api_error(code, err_code, description)
    assert not isinstance(caught.value, LogUnavailableError)  # not retried for 15 s
    assert description in str(caught.value)
    assert "\n" not in str(caught.value)


def test_another_store_failure_stays_retryable() -> None:
    with pytest.raises(LogUnavailableError), _translated("aqe.tests.x"):
        raise _api_error(503, 10077, "store is closed")


def _reply(data: bytes, headers: dict[str, str] | None = None) -> Msg:
    return Msg(_client=None, subject="_INBOX.x.p1", data=data, headers=headers)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("body", "kind", "translated"),
    [
        (
            b'{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 3"}}',
            nats.js.errors.BadRequestError,
            ConcurrencyError,
        ),
        (
            b'{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}',
            nats.js.errors.ServiceUnavailableError,
            LimitExceededError,
        ),
        (
            b'{"error":{"code":503,"err_code":10158,"description":"duplicate message id is in'
            b' process"}}',
            nats.js.errors.ServiceUnavailableError,
            MessageInProcessError,
        ),
    ],
)
def test_an_error_ack_is_built_not_raised_then_translated(
    body: bytes, kind: type[nats.js.errors.APIError], translated: type[LogError]
) -> None:
    # nats-py's APIError.from_error raises; a pipelined ack must come back as a value of
    # the same type so the one translation maps it.
    with pytest.raises(kind) as built:
        _pub_ack(_reply(body))
    with pytest.raises(translated), _translated("aqe.tests.case.t.executed", 0):
        raise built.value


def test_a_no_responders_ack_is_unavailable() -> None:
    with pytest.raises(nats.js.errors.NoStreamResponseError) as built:
        _pub_ack(_reply(b"", {"Status": "503"}))
    with pytest.raises(LogUnavailableError), _translated("aqe.tests.case.t.executed"):
        raise built.value


def test_an_ack_is_read() -> None:
    ack = _pub_ack(_reply(b'{"stream":"AQE_TESTS","seq":7,"duplicate":true}'))
    assert (ack.stream, ack.seq, ack.duplicate) == ("AQE_TESTS", 7, True)
    with pytest.raises(LogError, match="unreadable publish ack"):
        _pub_ack(_reply(b"<html>"))
