"""A local JetStream cluster of nats-server processes on loopback, for tests and benchmarks.

The layout is ``ops/cluster/`` 's (nodes ``n1``..``nN`` in cluster ``aqe-local``, every
node routing to every other) but on free ports and under a directory of the caller's
choosing, so several can run side by side. Nodes can be killed (SIGKILL, as a crash)
and restarted on the same ports and store, which is what failover tests need; they can
be paused (SIGSTOP) and resumed.

With a ``route_proxy`` hook every node dials every other node's route port through a
port the hook returns (a TCP proxy the caller runs), so that cutting those proxies
partitions the cluster. Nodes then advertise an unreachable route address: a route
learnt by gossip would otherwise go around a cut proxy, straight to the listen port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from aqe.errors import ServerError
from aqe.server._process import NatsServerProcess

__all__ = ["LocalCluster"]

CLUSTER_NAME = "aqe-local"

RouteProxy = Callable[[str, str, int], int]
"""``(source node, target node, target route port) -> port`` that ``source`` dials."""


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (held open together while picked)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


class LocalCluster:
    """``size`` clustered nats-servers with JetStream; start with :meth:`start_sync`.

    Example:
        ::

            with LocalCluster.start_sync(tmp / "cluster") as cluster:
                urls = cluster.urls          # every node, for a client's server list
                cluster.kill("n2")           # crash one node
                cluster.restart("n2")        # same ports, same store
    """

    def __init__(
        self,
        directory: Path,
        size: int,
        client_ports: Sequence[int],
        route_ports: Sequence[int],
        route_proxy: RouteProxy | None = None,
    ) -> None:
        """Describe a cluster; :meth:`start_sync` builds and starts one."""
        self.directory = directory
        self.size = size
        self.names: tuple[str, ...] = tuple(f"n{i + 1}" for i in range(size))
        self.client_ports = dict(zip(self.names, client_ports, strict=True))
        self.route_ports = dict(zip(self.names, route_ports, strict=True))
        self.nodes: dict[str, NatsServerProcess | None] = dict.fromkeys(self.names)
        self.paused: set[str] = set()
        # (source, target) -> the port source dials to reach target's route port.
        self.route_dial: dict[tuple[str, str], int] = {}
        if route_proxy is not None:
            for source in self.names:
                for target in self.names:
                    if source != target:
                        port = route_proxy(source, target, self.route_ports[target])
                        self.route_dial[source, target] = port

    # -- lifecycle ---------------------------------------------------------------------

    @classmethod
    def start_sync(
        cls,
        directory: Path,
        *,
        size: int = 3,
        ready_timeout: float = 15.0,
        route_proxy: RouteProxy | None = None,
    ) -> LocalCluster:
        """Write one config per node under ``directory``, start them all, wait until ready.

        Args:
            directory: Configs, stores and logs go here.
            size: Number of nodes.
            ready_timeout: Seconds to wait for a JetStream meta leader.
            route_proxy: Called once per ordered pair of nodes before any starts; the
                port it returns is the one the source node dials for that route.

        Raises:
            ServerError: a node did not start, or no JetStream meta leader was elected
                within ``ready_timeout`` seconds.
        """
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        ports = _free_ports(2 * size)
        cluster = cls(Path(directory).absolute(), size, ports[:size], ports[size:], route_proxy)
        cluster.directory.mkdir(parents=True, exist_ok=True)
        try:
            for name in cluster.names:
                cluster._write_config(name)
                cluster.restart(name)
            cluster.wait_for_meta_leader(ready_timeout)
        except BaseException:
            cluster.stop_sync()
            raise
        return cluster

    @classmethod
    async def start(
        cls,
        directory: Path,
        *,
        size: int = 3,
        ready_timeout: float = 15.0,
        route_proxy: RouteProxy | None = None,
    ) -> LocalCluster:
        """:meth:`start_sync` without blocking the event loop."""
        return await asyncio.to_thread(
            cls.start_sync,
            directory,
            size=size,
            ready_timeout=ready_timeout,
            route_proxy=route_proxy,
        )

    def _config_path(self, name: str) -> Path:
        return self.directory / f"{name}.conf"

    def _write_config(self, name: str) -> None:
        if self.route_dial:
            dial = [self.route_dial[name, n] for n in self.names if n != name]
            # Port 1 on loopback refuses: gossip cannot open a route around the proxies.
            advertise = "    advertise: 127.0.0.1:1\n"
        else:
            dial = [self.route_ports[n] for n in self.names]
            advertise = ""
        routes = "\n".join(f"        nats-route://127.0.0.1:{port}" for port in dial)
        self._config_path(name).write_text(
            f"""# Written by aqe.server.LocalCluster (layout of ops/cluster/{name}.conf).
server_name: {name}
jetstream {{
    max_memory_store: 256MB
    max_file_store: 4GB
}}
cluster {{
    name: {CLUSTER_NAME}
    listen: 127.0.0.1:{self.route_ports[name]}
{advertise}    routes: [
{routes}
    ]
}}
""",
            encoding="utf-8",
        )

    def restart(self, name: str, *, ready_timeout: float = 10.0) -> NatsServerProcess:
        """Start node ``name`` (again) on its ports with its store; it must be down."""
        node = self.nodes[name]
        if node is not None and node.is_running():
            raise ServerError(f"node {name} is already running")
        proc = NatsServerProcess.start_sync(
            self.directory / name,
            log_file=self.directory / f"{name}.log",
            port=self.client_ports[name],
            config_file=self._config_path(name),
            ready_timeout=ready_timeout,
        )
        self.nodes[name] = proc
        return proc

    def kill(self, name: str) -> None:
        """SIGKILL node ``name`` (a crash: no clean shutdown, no leadership hand-off)."""
        node = self.nodes[name]
        self.paused.discard(name)
        if node is not None:
            node.kill_sync()

    def pause(self, name: str) -> None:
        """SIGSTOP node ``name``: it holds its sockets but answers nothing until resumed."""
        node = self.nodes[name]
        if node is None or not node.is_running():
            raise ServerError(f"node {name} is not running")
        os.kill(node.pid, signal.SIGSTOP)
        self.paused.add(name)

    def resume(self, name: str) -> None:
        """SIGCONT node ``name`` after :meth:`pause`."""
        node = self.nodes[name]
        self.paused.discard(name)
        if node is not None and node.is_running():
            os.kill(node.pid, signal.SIGCONT)

    def stop_sync(self, timeout: float = 5.0) -> None:
        """Stop every node that runs (SIGTERM, then SIGKILL); paused ones are resumed first."""
        for name in list(self.paused):
            self.resume(name)
        for node in self.nodes.values():
            if node is not None and node.is_running():
                node.stop_sync(timeout=timeout)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_sync()

    # -- addresses and state -------------------------------------------------------------

    def url(self, name: str) -> str:
        """Client URL of one node."""
        return f"nats://127.0.0.1:{self.client_ports[name]}"

    @property
    def urls(self) -> list[str]:
        """Client URLs of every node (up or not), for a client's server list."""
        return [self.url(n) for n in self.names]

    def running(self) -> list[str]:
        """Names of the nodes whose process is alive."""
        return [n for n, p in self.nodes.items() if p is not None and p.is_running()]

    def wait_for_meta_leader(self, timeout: float = 15.0) -> None:
        """Block until a client can reach JetStream (a meta leader is elected).

        Raises:
            ServerError: none within ``timeout`` seconds.
        """
        asyncio.run(self._await_meta_leader(timeout))

    async def _await_meta_leader(self, wait_s: float) -> None:
        import nats
        import nats.errors
        import nats.js.errors

        deadline = time.monotonic() + wait_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                nc = await nats.connect(self.urls, connect_timeout=1, max_reconnect_attempts=0)
            except Exception as exc:  # pragma: no cover - nodes just started
                last = exc
                await asyncio.sleep(0.2)
                continue
            try:
                await nc.jetstream().account_info()
                return
            except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
                last = exc
                await asyncio.sleep(0.2)
            finally:
                with contextlib.suppress(Exception):
                    await nc.close()
        raise ServerError(
            f"no JetStream meta leader after {wait_s:g} s ({last!r}); see {self.directory}/n*.log"
        )

    async def stream_leader(self, stream: str, *, wait_s: float = 15.0) -> str:
        """The node leading ``stream``'s Raft group (waits while it is being elected).

        Raises:
            ServerError: no leader within ``wait_s`` seconds.
        """
        import nats

        deadline = time.monotonic() + wait_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            urls = [self.url(n) for n in self.running()]
            try:
                nc = await nats.connect(urls, connect_timeout=1, max_reconnect_attempts=0)
                try:
                    info = await nc.jetstream().stream_info(stream)
                finally:
                    await nc.close()
                leader = info.cluster.leader if info.cluster else None
                if leader:
                    return str(leader)
            except Exception as exc:
                last = exc
            await asyncio.sleep(0.2)
        raise ServerError(f"stream {stream} has no leader after {wait_s:g} s ({last!r})")
