"""Waiting on a condition with a deadline: how a test waits, instead of a fixed sleep."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def until(
    check: Callable[[], Awaitable[Any] | Any],
    what: str,
    *,
    timeout_s: float,
    every_s: float = 0.1,
    alive: Callable[[], None] | None = None,
    context: Callable[[], str] | None = None,
) -> Any:
    """Poll ``check`` (sync or async) until it returns something true, and return that.

    Args:
        check: The condition; its first true value is returned.
        what: What is awaited, for the failure message.
        timeout_s: A failure guard only: how long the wait may take before it fails.
        every_s: Pause between polls.
        alive: Called after each false poll; raises (an ``AssertionError``) when what the
            test waits on can no longer happen, e.g. a process it started has exited.
        context: Text appended to the failure message (logs of the processes involved).

    Raises:
        AssertionError: ``timeout_s`` passed first.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if alive is not None:
            alive()
        if time.monotonic() > deadline:
            detail = f"\n{context()}" if context is not None else ""
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}{detail}")
        await asyncio.sleep(every_s)
