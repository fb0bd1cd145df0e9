"""TCP proxies that can be cut and healed: network partitions without root.

A :class:`ProxyNet` runs every proxy on one asyncio loop in a background thread, so the
proxies keep forwarding while the test's own loop is busy (or blocked in a
``LocalCluster.restart``). Each :class:`Link` listens on a free port on 127.0.0.1 and
forwards every accepted connection to one target port.

Cutting a link is a partition as TCP peers see a crashed switch port that answers with
resets: every connection through it is aborted at once and new ones are accepted and
closed before a byte is forwarded, until it is healed. (A silent black hole would only
be noticed after the peers' ping timeouts: minutes with nats-server's defaults.)

Used as ``LocalCluster.start_sync(..., route_proxy=net.route_proxy)``: one link per
ordered pair of nodes, so a partition is a set of cut links.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["Link", "ProxyNet"]

T = TypeVar("T")
_CHUNK = 64 * 1024


class Link:
    """One listening port forwarding to ``target_port``; lives on a :class:`ProxyNet` loop."""

    def __init__(self, name: str, target_port: int) -> None:
        self.name = name
        self.target_port = target_port
        self.port = 0
        self.cut = False
        self.accepted = 0
        self.refused = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def __repr__(self) -> str:
        state = "cut" if self.cut else "up"
        return f"<Link {self.name} :{self.port}->:{self.target_port} {state}>"

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:
            self.refused += 1
            _abort(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            _abort(writer)  # the node is down: the dialer sees what it would see directly
            return
        if self.cut:  # cut while connecting
            _abort(writer)
            _abort(up_writer)
            return
        self.accepted += 1
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._writers.difference_update((writer, up_writer))
            _abort(writer)
            _abort(up_writer)

    def _set_cut(self, cut: bool) -> None:
        self.cut = cut
        if cut:
            for writer in list(self._writers):
                _abort(writer)

    async def _close(self) -> None:
        self._set_cut(True)
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    _abort(writer)


def _abort(writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    if not transport.is_closing():
        transport.abort()


class ProxyNet:
    """Proxies on a background loop; :meth:`cut` / :meth:`heal` partition them by name.

    Example:
        ::

            with ProxyNet() as net:
                port = net.add("n1->n2", target_port=6222)
                net.cut(["n1->n2", "n2->n1"])
                net.heal_all()
    """

    def __init__(self) -> None:
        self.links: dict[str, Link] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="proxy-net", daemon=True
        )
        self._thread.start()

    def _call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=10)

    def _do(self, fn: Any, *args: Any) -> None:
        async def run() -> None:
            fn(*args)

        self._call(run())

    def add(self, name: str, target_port: int) -> int:
        """Start link ``name`` forwarding to ``target_port``; returns its listening port."""
        if name in self.links:
            raise ValueError(f"link {name} exists")
        link = Link(name, target_port)
        self._call(link._start())
        self.links[name] = link
        return link.port

    def route_proxy(self, source: str, target: str, target_port: int) -> int:
        """A ``LocalCluster`` route hook: node ``source`` dials ``target`` through a link."""
        return self.add(f"{source}->{target}", target_port)

    def cut(self, names: Iterable[str]) -> None:
        """Abort every connection through these links and refuse new ones."""
        for name in names:
            self._do(self.links[name]._set_cut, True)

    def heal(self, names: Iterable[str]) -> None:
        """Let these links forward again."""
        for name in names:
            self._do(self.links[name]._set_cut, False)

    def heal_all(self) -> None:
        """Heal every link."""
        self.heal(list(self.links))

    def cut_links(self) -> list[str]:
        """Names of the links cut now."""
        return sorted(n for n, link in self.links.items() if link.cut)

    def close(self) -> None:
        """Close every link, end their connections' tasks and stop the loop."""

        async def shut() -> None:
            for link in self.links.values():
                await link._close()
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self._call(shut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> ProxyNet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
