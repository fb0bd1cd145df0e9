"""aqe.log.retry: riding out an unavailable log without storing a fact twice."""

from __future__ import annotations

from typing import Any

import pytest

from aqe.errors import ConcurrencyError, LogUnavailableError
from aqe.events import Event, TaskClaimed
from aqe.log import AppendResult, InMemoryEventLog
from aqe.log.retry import append_conditional, while_unavailable


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


class _LostReply(InMemoryEventLog):
    """Stores the first append but answers as if it had timed out."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = 1

    async def append(self, event: Event, **kw: Any) -> AppendResult:
        result = await super().append(event, **kw)
        if self.lost:
            self.lost -= 1
            raise LogUnavailableError("timed out waiting for the server")
        return result


def _claim(agent: str) -> TaskClaimed:
    return TaskClaimed(task_id="t1", agent_id=agent, topology="mesh", epoch=1)


async def test_a_retried_conditional_append_that_landed_is_recognised_as_ours() -> None:
    log = _LostReply()
    guard = "aqe.coord.task.t1.*"
    result = await append_conditional(
        log, _claim("a"), event_id="claim-a", expected_last_seq=0, expected_subject=guard
    )
    assert result.duplicate
    assert result.seq == await log.last_subject_seq(guard) == 1
    # Somebody else's stored claim is a lost race, not ours.
    with pytest.raises(ConcurrencyError):
        await append_conditional(
            log, _claim("b"), event_id="claim-b", expected_last_seq=0, expected_subject=guard
        )
