"""while_unavailable: runs an idempotent operation again while the log is unavailable."""

from __future__ import annotations

import pytest

from aqe.errors import ConcurrencyError, LogUnavailableError
from aqe.log.retry import while_unavailable


async def test_retries_until_the_operation_succeeds() -> None:
    calls: list[int] = []

    async def op() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise LogUnavailableError("leader election")
        return "stored"

    assert await while_unavailable(op, first_delay_s=0.001) == "stored"
    assert len(calls) == 3


async def test_gives_up_after_the_deadline_with_the_last_error() -> None:
    calls: list[int] = []

    async def op() -> None:
        calls.append(1)
        raise LogUnavailableError(f"attempt {len(calls)}")

    with pytest.raises(LogUnavailableError, match="attempt"):
        await while_unavailable(op, within_s=0.05, first_delay_s=0.01, max_delay_s=0.01)
    assert 2 <= len(calls) <= 10


async def test_answers_are_not_retried() -> None:
    calls: list[int] = []

    async def op() -> None:
        calls.append(1)
        raise ConcurrencyError("aqe.coord.lease.g.*", 3, 4)

    with pytest.raises(ConcurrencyError):
        await while_unavailable(op)
    assert calls == [1]
