"""Drive workflow instances to their end in this process, without a fleet.

``aqe perf watch --confirm-here`` (:func:`aqe.perf.pipeline.confirm_here`) and the
flaky watch (:func:`aqe.workflows.flaky_watch.investigate`) both run one workflow's
steps here: a :class:`~aqe.workflows.driver.WorkflowDriver` for the workflow and a few
runner agents for its capability, polled until every instance asked about has ended.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aqe.coordination.bus import Bus
    from aqe.log.port import EventLog
    from aqe.projections.deadletter import DeadLetterSink
    from aqe.runners import RunnerConfig
    from aqe.workflows.engine import Workflow

__all__ = ["drive_here"]


async def drive_here(
    log: EventLog,
    bus: Bus,
    workflow: Workflow[Any],
    still_open: Callable[[], Awaitable[list[str]]],
    *,
    capabilities: Sequence[str],
    config: RunnerConfig,
    runners: int,
    timeout_s: float,
    poll_s: float,
    what: str,
    dead_letters: DeadLetterSink | None = None,
) -> None:
    """Run ``workflow``'s steps here until ``still_open()`` names no instance.

    Args:
        log: The log the instances live in.
        bus: Where the runner agents pull their tasks.
        workflow: The one workflow the driver decides for.
        still_open: The instances not ended yet (polled every ``poll_s``).
        capabilities: The task queues the agents pull from.
        config: The agents' pulling settings.
        runners: How many agents.
        timeout_s: How long the instances may take, all together.
        poll_s: How often ``still_open`` is asked.
        what: The instances, as the timeout's message names them.
        dead_letters: Where an agent copies a parked task's message.

    Raises:
        TimeoutError: An instance had not ended after ``timeout_s``.
    """
    from aqe.runners import RunnerAgent
    from aqe.workflows.driver import WorkflowDriver

    agents = [
        RunnerAgent(log, bus, list(capabilities), config=config, dead_letters=dead_letters)
        for _ in range(runners)
    ]
    async with WorkflowDriver(log, {workflow.name: workflow}):
        for agent in agents:
            await agent.start()
        try:
            deadline = time.monotonic() + timeout_s
            while await still_open():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{what} still open after {timeout_s:.0f} s")
                await asyncio.sleep(poll_s)
        finally:
            for agent in agents:
                await agent.stop()
