"""Running a link's jobs together and stopping them for sure.

On Python 3.11 ``asyncio.wait_for`` returns the inner result instead of raising when a
cancellation arrives just as the inner future completes (fixed in 3.12), and client
libraries use ``wait_for`` inside. A job whose cancellation was swallowed that way
keeps running; a plain ``gather`` after ``cancel`` would then wait for it forever, and
a link could never be stopped. :func:`cancel_and_wait` cancels again until every job
has ended, and the loops of a link call :func:`raise_if_cancelling` so one whose
cancellation was swallowed stops at its next turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from typing import Any

__all__ = ["cancel_and_wait", "raise_if_cancelling", "until_first_exit"]

_RECANCEL_S = 0.5


def raise_if_cancelling() -> None:
    """Raise ``CancelledError`` if the current task was cancelled and went on anyway.

    Raises:
        asyncio.CancelledError: a cancellation of this task is pending.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def cancel_and_wait(tasks: Iterable[asyncio.Future[Any]]) -> None:
    """Cancel the tasks and wait until all have ended, cancelling again as needed.

    Their outcomes are retrieved (and dropped), so none is logged as never retrieved.
    """
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=_RECANCEL_S)
    for task in tasks:
        if not task.cancelled():
            task.exception()


async def until_first_exit(jobs: Iterable[Coroutine[Any, Any, Any]]) -> None:
    """Run jobs together until the first one ends; stop the rest; re-raise its error.

    Raises:
        BaseException: whatever the first job to end raised.
    """
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait(tasks)
    for task in done:
        if not task.cancelled():
            error = task.exception()
            if error is not None:
                raise error
