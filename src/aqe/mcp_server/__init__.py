"""aqe for AI agents: an MCP server (the official ``mcp`` SDK) over the fleet.

Named ``mcp_server``, not ``mcp``, so it is never confused with the SDK's package.
:func:`aqe.mcp_server.server.build_server` makes the server; ``aqe mcp`` runs it over
stdio or streamable HTTP. The SDK is imported only when a server is built.
"""

__all__: list[str] = []
