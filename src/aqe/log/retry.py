"""Riding out a log that is briefly unavailable (a stream or meta leader election).

During a JetStream leader failover appends and reads fail for a few seconds with
:class:`~aqe.errors.LogUnavailableError` (timeouts, 503s). An operation that is
idempotent — an append that resends the same event id, a read that starts over — can
simply be run again; the server's duplicate window keeps a resent append exactly-once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aqe.errors import LogUnavailableError

__all__ = ["DEFAULT_UNAVAILABLE_S", "while_unavailable"]

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
