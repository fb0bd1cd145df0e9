"""Riding out a log that is briefly unavailable (a stream or meta leader election).

During a JetStream leader failover appends and reads fail for a few seconds with
:class:`~aqe.errors.LogUnavailableError` (timeouts, 503s). An operation that is
idempotent — an append that resends the same event id, a read that starts over — can
simply be run again; the server's duplicate window keeps a resent append exactly-once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

from aqe.errors import ConcurrencyError, LogUnavailableError
from aqe.log.port import AppendResult
from aqe.log.subjects import subject_for

if TYPE_CHECKING:
    from aqe.events import Event
    from aqe.log.port import EventLog, NewEvent

__all__ = ["DEFAULT_UNAVAILABLE_S", "append_conditional", "append_new", "while_unavailable"]

T = TypeVar("T")

DEFAULT_UNAVAILABLE_S = 15.0
"""Long enough for a stream leader election on a loaded 3-node cluster (FACTS: 4-7 s)."""


async def while_unavailable(
    op: Callable[[], Awaitable[T]],
    *,
    within_s: float = DEFAULT_UNAVAILABLE_S,
    first_delay_s: float = 0.05,
    max_delay_s: float = 1.0,
) -> T:
    """``await op()``, running it again while it raises ``LogUnavailableError``.

    Waits ``first_delay_s`` after the first failure, doubling up to ``max_delay_s``.
    ``op`` must be idempotent (an append with a fixed event id, a read from a fixed
    sequence). Other errors — a failed condition, an invalid event — are answers, not
    outages, and propagate at once.

    Raises:
        LogUnavailableError: the last failure, once ``within_s`` seconds have passed.
    """
    deadline = time.monotonic() + within_s
    delay = first_delay_s
    while True:
        try:
            return await op()
        except LogUnavailableError:
            if time.monotonic() + delay > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay_s)


async def append_new(log: EventLog, items: Sequence[NewEvent]) -> int:
    """Append events that carry fixed ids, riding out an unavailable log; how many were new.

    A retry resends the same ids, so what an earlier try stored counts as a duplicate,
    not as new.
    """
    if not items:
        return 0
    results = await while_unavailable(lambda: log.append_many(items))
    return sum(not r.duplicate for r in results)


async def append_conditional(
    log: EventLog,
    event: Event,
    *,
    event_id: str,
    expected_last_seq: int,
    expected_subject: str | None = None,
    headers: Mapping[str, str] | None = None,
    within_s: float = DEFAULT_UNAVAILABLE_S,
) -> AppendResult:
    """A conditional append that survives its own retries.

    The append is retried with the same ``event_id`` while the log is unavailable.
    JetStream checks the condition before deduplication, so a retry whose first try
    was in fact stored fails its condition: only then is the last message under the
    condition's subject read, and when it carries ``event_id`` it is ours (returned
    with ``duplicate=True``).

    Raises:
        ConcurrencyError: somebody else's message came first.
        LogUnavailableError: the log stayed unavailable for ``within_s`` seconds.
    """
    attempts = 0

    async def append() -> AppendResult:
        nonlocal attempts
        attempts += 1
        return await log.append(
            event,
            event_id=event_id,
            expected_last_seq=expected_last_seq,
            expected_subject=expected_subject,
            headers=headers,
        )

    try:
        return await while_unavailable(append, within_s=within_s)
    except ConcurrencyError:
        if attempts < 2:
            raise
        last = await while_unavailable(
            lambda: log.last(expected_subject or subject_for(event)), within_s=within_s
        )
        if last is None or last.event_id != event_id:
            raise
        return AppendResult(
            stream=last.stream,
            seq=last.seq,
            subject=last.subject,
            event_id=event_id,
            duplicate=True,
        )
