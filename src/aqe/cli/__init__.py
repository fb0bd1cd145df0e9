"""The ``aqe`` command: parse, build adapters, call one function, render.

No domain logic lives here. ``AqeError`` is caught once, at :func:`main`: its message
is printed on one line and the exit status is 2. Anything else keeps its traceback.
"""

from __future__ import annotations

import sys

import click

from aqe import __version__
from aqe.app import AppContext
from aqe.cli._agents import agents
from aqe.cli._audit import audit
from aqe.cli._bridge import bridge
from aqe.cli._config import config
from aqe.cli._coverage import coverage
from aqe.cli._demo import demo
from aqe.cli._events import events, publish
from aqe.cli._flaky_model import flaky_model
from aqe.cli._flaky_watch import flaky_watch
from aqe.cli._leader import leader
from aqe.cli._learn import learn, prioritize, subset_
from aqe.cli._mcp import mcp
from aqe.cli._patterns import patterns
from aqe.cli._perf import bench, perf
from aqe.cli._projections import consume, projections, replay
from aqe.cli._report import report
from aqe.cli._runners import agent
from aqe.cli._sandbox import sandbox
from aqe.cli._serve import serve
from aqe.cli._server import server
from aqe.cli._skills import skills
from aqe.cli._streams import streams
from aqe.cli._tasks import tasks, topology
from aqe.cli._testgen import testgen
from aqe.cli._tests import broken, flaky, history, ingest, quarantine, runs, unquarantine
from aqe.cli._vote import vote
from aqe.cli._workflows import workflow, workflows
from aqe.errors import AqeError

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="aqe")
@click.option(
    "--data-dir",
    metavar="DIR",
    help="Where projections and the embedded server keep their files [env AQE_DATA_DIR; "
    "default .aqe in the project root: see `aqe config`].",
)
@click.option(
    "--nats-url",
    metavar="URL",
    help="NATS server or cluster (comma-separated) to use instead of the embedded server "
    "[env AQE_NATS_URL]. Auth and TLS: AQE_NATS_USER/PASSWORD, AQE_NATS_TOKEN, AQE_NATS_CREDS, "
    "AQE_NATS_TLS_CA/CERT/KEY.",
)
@click.pass_context
def cli(ctx: click.Context, data_dir: str | None, nats_url: str | None) -> None:
    """aqe: the event backbone of an agentic quality-engineering fleet.

    Every fact (a test ran, an agent joined, a pattern was added) is an immutable event
    in NATS JetStream; every view is a projection rebuilt by replaying the log. With no
    --nats-url, aqe starts and reuses its own nats-server under the data directory.

    Start with `aqe demo`.
    """
    ctx.obj = AppContext(data_dir, nats_url)


cli.add_command(demo)
cli.add_command(config)
cli.add_command(publish)
cli.add_command(events)
cli.add_command(consume)
cli.add_command(replay)
cli.add_command(projections)
cli.add_command(streams)
cli.add_command(server)
cli.add_command(ingest)
cli.add_command(history)
cli.add_command(flaky)
cli.add_command(flaky_watch)
cli.add_command(flaky_model)
cli.add_command(broken)
cli.add_command(runs)
cli.add_command(quarantine)
cli.add_command(unquarantine)
cli.add_command(patterns)
cli.add_command(learn)
cli.add_command(prioritize)
cli.add_command(subset_)
cli.add_command(agents)
cli.add_command(leader)
cli.add_command(vote)
cli.add_command(tasks)
cli.add_command(topology)
cli.add_command(bridge)
cli.add_command(agent)
cli.add_command(workflows)
cli.add_command(workflow)
cli.add_command(sandbox)
cli.add_command(audit)
cli.add_command(perf)
cli.add_command(bench)
cli.add_command(coverage)
cli.add_command(testgen)
cli.add_command(report)
cli.add_command(serve)
cli.add_command(skills)
cli.add_command(mcp)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``aqe`` script."""
    try:
        rv = cli.main(args=argv, prog_name="aqe", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aqe: aborted", err=True)
        sys.exit(130)
    except click.BadParameter as exc:
        # A wrong value (a missing file, a bad date): one line, like every aqe error.
        click.echo(f"aqe: error: {exc.format_message()}", err=True)
        sys.exit(2)
    except click.UsageError as exc:
        exc.show()  # a wrong command or option: the usage text helps
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"aqe: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except AqeError as exc:
        click.echo(f"aqe: error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("aqe: interrupted", err=True)
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)
