"""aqe.log.retry: riding out an unavailable log without storing a fact twice."""

from __future__ import annotations

from typing import Any

import nats.js.errors
import pytest

from aqe.errors import ConcurrencyError, LogUnavailableError
from aqe.events import Event, TaskClaimed
from aqe.log import AppendResult, InMemoryEventLog, NewEvent
from aqe.log.jetstream import _translated
from aqe.log.retry import append_conditional, append_new, while_unavailable


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


class _InProcess(InMemoryEventLog):
    """Answers the first try of an append as an R3 leader cut off from its peers does.

    ``stored`` says whether that first try was in fact stored (the server reported
    10158 for a write its peers later committed) or not.
    """

    def __init__(self, *, stored: bool) -> None:
        super().__init__()
        self.stored = stored
        self.tries = 0

    async def append(self, event: Event, **kw: Any) -> AppendResult:
        self.tries += 1
        if self.tries == 1:
            if self.stored:
                await super().append(event, **kw)
            with _translated("aqe.coord.task.t1.claimed"):
                raise nats.js.errors.ServiceUnavailableError(
                    code=503, err_code=10158, description="duplicate message id is in process"
                )
        return await super().append(event, **kw)


@pytest.mark.parametrize("stored", [True, False])
async def test_a_message_in_process_is_retried_with_the_same_id(stored: bool) -> None:
    log = _InProcess(stored=stored)
    result = await while_unavailable(
        lambda: log.append(_claim("a"), event_id="claim-a"), first_delay_s=0.001
    )
    assert log.tries == 2
    assert result.duplicate is stored  # settled: stored once, whichever try stored it
    assert result.seq == await log.last_subject_seq("aqe.coord.task.t1.*") == 1


async def test_a_conditional_append_in_process_settles_as_ours() -> None:
    log = _InProcess(stored=True)
    result = await append_conditional(
        log,
        _claim("a"),
        event_id="claim-a",
        expected_last_seq=0,
        expected_subject="aqe.coord.task.t1.*",
    )
    assert result.duplicate
    assert result.seq == 1


async def test_append_new_counts_only_what_the_log_did_not_hold() -> None:
    log = InMemoryEventLog()
    items = [NewEvent(event=_claim(agent), event_id=f"claim-{agent}") for agent in ("a", "b")]
    assert await append_new(log, []) == 0
    assert await append_new(log, items) == 2
    assert await append_new(log, [*items, NewEvent(event=_claim("c"), event_id="claim-c")]) == 1
