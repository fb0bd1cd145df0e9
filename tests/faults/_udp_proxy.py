"""A UDP relay between a QUIC client and server that a test can cut and restore.

The client is configured to dial the proxy's port; every datagram is forwarded to the
server and every answer back to the client. ``cut()`` drops datagrams both ways (a
network partition: both ends see silence, not a refusal) until ``restore()``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, cast


class _Upstream(asyncio.DatagramProtocol):
    """The proxy's socket towards the server, one per client address."""

    def __init__(self, proxy: UdpProxy, client: tuple[str, int]) -> None:
        self.proxy = proxy
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self.proxy.is_cut or self.proxy.listener is None:
            self.proxy.dropped += 1
            return
        self.proxy.listener.sendto(data, self.client)
        self.proxy.forwarded += 1


class UdpProxy(asyncio.DatagramProtocol):
    """Listen on ``127.0.0.1:port`` and relay to ``target``; ``cut()`` / ``restore()``."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener: asyncio.DatagramTransport | None = None
        self.upstreams: dict[tuple[str, int], _Upstream] = {}
        self.is_cut = False
        self.forwarded = 0
        self.dropped = 0

    async def start(self, port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=("127.0.0.1", port)
        )
        self.listener = transport
        return int(transport.get_extra_info("sockname")[1])

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self.is_cut:
            self.dropped += 1
            return
        client = (str(addr[0]), int(addr[1]))
        upstream = self.upstreams.get(client)
        if upstream is None:
            upstream = _Upstream(self, client)
            self.upstreams[client] = upstream
            loop = asyncio.get_running_loop()
            task = loop.create_task(
                loop.create_datagram_endpoint(lambda: upstream, remote_addr=self.target)
            )
            task.add_done_callback(lambda _t, d=data, u=upstream: self._send(u, d))
            return
        self._send(upstream, data)

    def _send(self, upstream: _Upstream, data: bytes) -> None:
        if upstream.transport is not None and not self.is_cut:
            upstream.transport.sendto(data)
            self.forwarded += 1

    def cut(self) -> None:
        self.is_cut = True

    def restore(self) -> None:
        self.is_cut = False

    def close(self) -> None:
        for upstream in self.upstreams.values():
            if upstream.transport is not None:
                with contextlib.suppress(Exception):
                    upstream.transport.close()
        if self.listener is not None:
            self.listener.close()
