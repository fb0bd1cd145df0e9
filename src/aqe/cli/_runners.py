"""``aqe agent run``: a runner agent (and, with ``workflows``, the workflow driver)."""

from __future__ import annotations

import asyncio
import signal
import sys

import click

from aqe.app import AppContext, open_log, run
from aqe.cli._context import console, pass_app
from aqe.cli._metrics import metrics_port_option, start_metrics

WORKFLOWS_CAPABILITY = "workflows"
"""The pseudo-capability that runs the workflow driver in the agent's process."""


@click.group()
def agent() -> None:
    """Run this process as a fleet agent."""


@agent.command("run")
@click.option(
    "--capability",
    "capabilities",
    required=True,
    metavar="LIST",
    help="Comma-separated work queues to pull from (pytest, bench, noop, ...); "
    "'workflows' also drives workflow instances in this process.",
)
@click.option("--agent-id", metavar="ID", help="This agent's id [default: runner-<host>-<random>].")
@click.option(
    "--ack-wait",
    "ack_wait_s",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    metavar="S",
    help="Seconds a delivery may go unacknowledged before another runner gets it "
    "(set on a queue when it is created).",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    metavar="N",
    help="Deliveries that may run a task; the next parks it (a task's max_attempts param wins).",
)
@click.option(
    "--slots",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    metavar="N",
    help="Tasks run at once.",
)
@click.option(
    "--heartbeat",
    "heartbeat_s",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    metavar="S",
    help="Heartbeat interval.",
)
@metrics_port_option
@pass_app
def agent_run(
    app: AppContext,
    capabilities: str,
    agent_id: str | None,
    ack_wait_s: float,
    max_attempts: int,
    slots: int,
    heartbeat_s: float,
    metrics_port: int | None,
) -> None:
    """Join the fleet and run tasks from the work queues of CAPABILITY until stopped.

    Each task runs in the sandbox its spec names; JUnit reports go into the test history;
    the outcome is appended to the task. SIGTERM or Ctrl-C stops cleanly (running tasks
    finish first); a runner killed mid-task loses nothing: after --ack-wait another
    runner gets the task.
    """
    from aqe.coordination.nats_bus import NatsBus
    from aqe.projections.deadletter import JetStreamDeadLetters
    from aqe.runners import RunnerAgent, RunnerConfig

    wanted = [c.strip() for c in capabilities.split(",") if c.strip()]
    drive = WORKFLOWS_CAPABILITY in wanted
    queues = [c for c in wanted if c != WORKFLOWS_CAPABILITY]
    config = RunnerConfig(
        ack_wait_s=ack_wait_s, max_attempts=max_attempts, slots=slots, heartbeat_s=heartbeat_s
    )

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with open_log(app) as log:
            runner = None
            driver = None
            watcher = None
            if metrics_port is not None:
                from aqe.metrics import watch_log

                streams = ("AQE_TESTS", "AQE_COORD", "AQE_WORKFLOWS", "AQE_AGENTS")
                watcher = asyncio.ensure_future(
                    watch_log(log, start_metrics(metrics_port), streams)
                )
            if queues:
                from aqe.testgen.task import TESTGEN, TestgenHandler

                handlers = {TESTGEN: TestgenHandler(log, app.settings.data_dir)}
                runner = RunnerAgent(
                    log,
                    NatsBus(log.connection),
                    queues,
                    agent_id=agent_id,
                    config=config,
                    dead_letters=JetStreamDeadLetters(log.connection),
                    handlers={k: v for k, v in handlers.items() if k in queues},
                )
                await runner.start()
                console(stderr=True).print(
                    f"{runner.agent_id}: pulling {', '.join(runner.capabilities)}"
                )
            if drive:
                from aqe.app import workflow_registry
                from aqe.workflows.driver import WorkflowDriver

                driver = WorkflowDriver(log, workflow_registry(), driver_id=agent_id or "workflows")
                await driver.start()
                console(stderr=True).print("driving workflows: " + ", ".join(driver.workflows))
            try:
                await stop.wait()
            finally:
                if watcher is not None:
                    watcher.cancel()
                if driver is not None:
                    await driver.stop()
                if runner is not None:
                    await runner.stop()
                    console(stderr=True).print(f"{runner.agent_id}: stopped; {runner.stats}")

    if not wanted:
        raise click.UsageError("--capability needs at least one name")
    run(go())
    sys.stdout.flush()
