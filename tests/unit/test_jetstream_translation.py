"""The JetStream adapter's one place that maps nats-py errors onto aqe's (no server)."""

from __future__ import annotations

import nats.js.errors
import pytest

from aqe.errors import ConcurrencyError, LogError
from aqe.log.jetstream import _translated


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
