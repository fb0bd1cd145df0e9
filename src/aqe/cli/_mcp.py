"""``aqe mcp``: serve the fleet to AI agents over the Model Context Protocol."""

from __future__ import annotations

import click

from aqe.app import AppContext
from aqe.cli._context import pass_app


@click.command(short_help="Serve the fleet and the skills to AI agents over MCP.")
@click.option(
    "--transport",
    type=click.Choice(["stdio", "http"]),
    default="stdio",
    show_default=True,
    help="stdio (an agent runtime starts `aqe mcp` itself) or streamable HTTP.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="HTTP: address to bind.")
@click.option(
    "--port", default=8765, show_default=True, type=click.IntRange(1, 65535), help="HTTP: port."
)
@click.option("--path", default="/mcp", show_default=True, help="HTTP: the endpoint's path.")
@pass_app
def mcp(app: AppContext, transport: str, host: str, port: int, path: str) -> None:
    """Serve the fleet over MCP: history, flaky/broken tests, pattern search, prioritise
    and subset, publish events, start workflows; skills as resources with their levels.

    Tools answer what the matching command's --json answers; a tool's error (an unknown
    test, a payload that fails its schema) is an MCP error result, not a crash.
    Example client config: {"command": "aqe", "args": ["mcp"]}.
    """
    import anyio

    from aqe.mcp_server.server import build_server

    server = build_server(app)
    if transport == "stdio":
        anyio.run(server.run_stdio_async)
    else:
        click.echo(f"aqe mcp: streamable HTTP on http://{host}:{port}{path}", err=True)
        anyio.run(
            lambda: server.run_streamable_http_async(
                host=host, port=port, streamable_http_path=path
            )
        )
