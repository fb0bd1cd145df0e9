"""The process ``aqe bridge run`` starts: one cluster's end of every bridge link.

A :class:`BridgeNode` connects to its cluster's NATS, prepares the bridged streams,
listens for peers (a :class:`~aqe.bridge.quic.QuicServer` whose handler is a
:class:`~aqe.bridge.replication.TargetSide`) and dials each configured peer (one
:class:`~aqe.bridge.replication.SourceLink` over a
:class:`~aqe.bridge.quic.QuicConnector` per peer). The target side and every link share
one :class:`~aqe.bridge.replication.Holdings`, so the chain markers that anti-entropy
gossip is built from are read once per node.

Every ``status_interval_s`` the node replaces ``<data_dir>/status.json`` with a
snapshot (written to a temporary file, then :func:`os.replace`: a reader sees the old
or the new snapshot, never half of one) and logs links that came up or went down.
On ``stop``, SIGTERM or SIGINT it cancels the links, closes the server, writes a last
snapshot with ``state: "stopped"`` and drains its NATS connection.

The node reaches its NATS with the same ``AQE_NATS_*`` authentication and TLS settings
as every aqe command (:mod:`aqe.bridge._nats`); no secret reaches its logs or snapshots.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

import msgspec

from aqe.bridge._nats import nats_settings, redact_urls
from aqe.bridge.config import BridgeConfig
from aqe.bridge.status import SNAPSHOT_VERSION, write_snapshot
from aqe.errors import BridgeConfigError, BridgeError

if TYPE_CHECKING:
    from aqe.bridge.certs import TlsFiles
    from aqe.bridge.quic import QuicConnector, QuicServer
    from aqe.bridge.replication import Holdings, SourceLink, TargetSide
    from aqe.log.jetstream import JetStreamEventLog

__all__ = ["BridgeNode"]

logger = logging.getLogger("aqe.bridge.node")

_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)


class _Running:
    """What exists while the node serves (for snapshots and shutdown)."""

    def __init__(self, log: JetStreamEventLog) -> None:
        self.log = log
        self.holdings: Holdings | None = None
        self.target: TargetSide | None = None
        self.server: QuicServer | None = None
        self.connectors: dict[str, QuicConnector] = {}
        self.links: dict[str, SourceLink] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}


class BridgeNode:
    """One cluster's bridge process.

    Args:
        config: The node's configuration (:func:`aqe.bridge.config.load_config`).
        clock: Wall clock in seconds (for the snapshot's timestamps).
        env: Where the ``AQE_NATS_*`` settings are read from (``os.environ`` if None).
    """

    def __init__(
        self,
        config: BridgeConfig,
        *,
        clock: Callable[[], float] = time.time,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._config = config
        self._env = env
        self._clock = clock
        self._started_at = clock()
        self._running: _Running | None = None
        self._serving = False
        self._connected: dict[str, bool] = {}

    @property
    def config(self) -> BridgeConfig:
        """The node's configuration."""
        return self._config

    @property
    def listen_port(self) -> int | None:
        """The QUIC server's bound UDP port once it listens (useful with port 0)."""
        running = self._running
        if running is None or running.server is None:
            return None
        return running.server.port

    async def run(self, stop: asyncio.Event | None = None, *, handle_signals: bool = True) -> None:
        """Serve until ``stop`` is set (or SIGTERM/SIGINT arrives), then shut down cleanly.

        Args:
            stop: Set it to stop the node; a new event when omitted.
            handle_signals: Set ``stop`` on SIGTERM and SIGINT (needs the main thread).

        Raises:
            ConfigError: a TLS file is missing, a stream definition is refused, or the
                ``AQE_NATS_*`` settings do not validate.
            LogUnavailableError: the cluster's NATS cannot be reached.
            BridgeError: the listen address cannot be bound, or a link failed in a way
                it cannot recover from.
        """
        self._config.check_files()
        stop = stop if stop is not None else asyncio.Event()
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        if handle_signals:
            for sig in _SIGNALS:
                try:
                    loop.add_signal_handler(sig, self._on_signal, sig, stop)
                except (NotImplementedError, RuntimeError, ValueError):
                    break
                installed.append(sig)
        try:
            await self._run_until(stop)
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals, stop: asyncio.Event) -> None:
        logger.info("bridge %s: %s received; stopping", self._config.cluster, sig.name)
        stop.set()

    async def _run_until(self, stop: asyncio.Event) -> None:
        """Serve; a stop during start-up (connecting to NATS, say) cancels the start."""
        serve = asyncio.create_task(self._serve(stop), name=f"bridge-{self._config.cluster}")
        stopped = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({serve, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not serve.done() and not self._serving:
                serve.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serve
        finally:
            stopped.cancel()
            if not serve.done():
                serve.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await serve

    async def _serve(self, stop: asyncio.Event) -> None:
        config = self._config
        try:
            config.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BridgeConfigError(config.path, "data_dir", f"cannot create: {exc}") from exc
        log = await self._connect()
        running = _Running(log)
        self._running = running
        error: BaseException | None = None
        try:
            await self._prepare_streams(log)
            server = self._start_target(running)
            await server.start()
            self._start_links(running)
            self._serving = True
            logger.info(
                "bridge %s: serving %s on %s:%d, %d peer(s)",
                config.cluster,
                ", ".join(config.streams),
                config.listen.host,
                server.port,
                len(config.peers),
            )
            await self._supervise(running, stop)
        except BaseException as exc:
            error = exc
            raise
        finally:
            await self._shutdown(running, error)

    async def _connect(self) -> JetStreamEventLog:
        from aqe.log.jetstream import JetStreamEventLog
        from aqe.log.streams import load_stream_specs
        from aqe.server import open_connection

        config = self._config
        settings = nats_settings(config.nats_url, config.data_dir, self._env)
        nc = await open_connection(settings, name=f"aqe-bridge-{config.cluster}")
        logger.info("bridge %s: connected to %s", config.cluster, settings.nats_url)
        return JetStreamEventLog(nc, load_stream_specs())

    async def _prepare_streams(self, log: JetStreamEventLog) -> None:
        from aqe.log.admin import apply_streams, create_missing_streams

        config = self._config
        specs = [spec for spec in log.specs if spec.name in config.streams]
        if config.apply_streams:
            for change in await apply_streams(log.connection, specs):
                if change.action != "unchanged":
                    logger.info(
                        "bridge %s: stream %s %sd", config.cluster, change.name, change.action
                    )
        else:
            for name in await create_missing_streams(log.connection, specs):
                logger.info("bridge %s: stream %s created", config.cluster, name)

    def _tls(self) -> TlsFiles:
        from aqe.bridge.certs import TlsFiles

        tls = self._config.tls
        return TlsFiles(ca=tls.ca, cert=tls.cert, key=tls.key)

    def _start_target(self, running: _Running) -> QuicServer:
        from aqe.bridge.quic import QuicServer
        from aqe.bridge.replication import Holdings, TargetSide

        config = self._config
        running.holdings = Holdings(
            running.log, config.cluster, config.streams, partitions=config.partitions
        )
        running.target = TargetSide(
            running.log,
            config.cluster,
            config.streams,
            max_batch=config.link.max_batch,
            partitions=config.partitions,
            holdings=running.holdings,
            relays_from=config.trusted_relays,
        )
        running.server = QuicServer(
            host=config.listen.host,
            port=config.listen.port,
            tls=self._tls(),
            handler=running.target.handle,
            idle_timeout_s=config.link.idle_timeout_s,
        )
        return running.server

    def _start_links(self, running: _Running) -> None:
        from aqe.bridge.quic import QuicConnector
        from aqe.bridge.replication import SourceLink

        config, link = self._config, self._config.link
        tls = self._tls()
        for peer in config.peers:
            connector = QuicConnector(
                host=peer.host,
                port=peer.port,
                tls=tls,
                server_name=peer.server_name,
                keepalive_s=link.keepalive_s,
                idle_timeout_s=link.idle_timeout_s,
                connect_timeout_s=link.connect_timeout_s,
            )
            running.connectors[peer.name] = connector
            running.links[peer.name] = SourceLink(
                running.log,
                config.cluster,
                peer.name,
                connector,
                config.streams,
                partitions=config.partitions,
                max_in_flight=link.max_in_flight,
                reconnect_min_s=link.reconnect_min_s,
                reconnect_max_s=link.reconnect_max_s,
                gossip_s=link.gossip_s,
                relay=link.relay,
                repair_after_s=link.repair_after_s,
                holdings=running.holdings,
            )
        for name, source in running.links.items():
            running.tasks[name] = asyncio.create_task(
                source.run(), name=f"bridge-{config.cluster}->{name}"
            )
            self._connected[name] = False

    async def _supervise(self, running: _Running, stop: asyncio.Event) -> None:
        """Write snapshots and log link changes until ``stop``; fail if a link dies."""
        interval = self._config.status_interval_s
        stopped = asyncio.create_task(stop.wait())
        try:
            while True:
                snapshot = self.snapshot()
                self._log_changes(snapshot)
                write_snapshot(self._config.status_path, snapshot)
                if stop.is_set():
                    return
                self._check_links(running)
                await asyncio.wait(
                    {stopped, *running.tasks.values()},
                    timeout=interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
        finally:
            stopped.cancel()

    def _check_links(self, running: _Running) -> None:
        for name, task in running.tasks.items():
            if not task.done():
                continue
            where = f"bridge {self._config.cluster}->{name}"
            if task.cancelled():
                raise BridgeError(f"{where}: the link was cancelled")
            exc = task.exception()
            if exc is None:
                raise BridgeError(f"{where}: the link stopped on its own")
            raise BridgeError(f"{where}: the link failed: {exc}") from exc

    def _log_changes(self, snapshot: Mapping[str, Any]) -> None:
        cluster = self._config.cluster
        for name, stats in snapshot["links"].items():
            connected = bool(stats.get("connected"))
            if connected != self._connected.get(name, False):
                self._connected[name] = connected
                if connected:
                    logger.info("bridge %s->%s: link up (%s)", cluster, name, stats["address"])
                else:
                    why = stats.get("last_error") or "closed"
                    logger.warning("bridge %s->%s: link down: %s", cluster, name, why)

    def snapshot(self, *, state: str = "running", error: str | None = None) -> dict[str, Any]:
        """The status document written to ``status.json`` (JSON-able).

        Args:
            state: ``running``, ``stopped`` (clean exit) or ``failed``.
            error: Why it failed.
        """
        config = self._config
        running = self._running
        links: dict[str, Any] = {}
        server: Any = None
        inbound: Any = None
        if running is not None:
            for name, source in running.links.items():
                links[name] = {"address": config.peer(name).address, **source.stats()}
            if running.server is not None:
                server = running.server.stats()
            if running.target is not None:
                inbound = running.target.stats()
        out: dict[str, Any] = msgspec.to_builtins(
            {
                "version": SNAPSHOT_VERSION,
                "cluster": config.cluster,
                "state": state,
                "error": None if error is None else redact_urls(error),
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "config": str(config.path.resolve()),
                "nats_url": redact_urls(config.nats_url),
                "streams": list(config.streams),
                "partitions": config.partitions,
                "listen": {"host": config.listen.host, "port": self.listen_port},
                "status_interval_s": config.status_interval_s,
                "started_at": self._started_at,
                "updated_at": self._clock(),
                "server": server,
                "inbound": inbound,
                "links": links,
            }
        )
        return out

    async def _shutdown(self, running: _Running, error: BaseException | None) -> None:
        """Stop links, the server and NATS; leave a final snapshot. Never raises."""
        cluster = self._config.cluster
        # ``_serving`` stays True: a stop that arrives now must not cancel this shutdown
        # (``_run_until`` cancels only a start that has not finished).
        for task in running.tasks.values():
            task.cancel()
        await asyncio.gather(*running.tasks.values(), return_exceptions=True)
        for connector in running.connectors.values():
            with contextlib.suppress(BridgeError, OSError):
                await connector.close()
        if running.server is not None:
            with contextlib.suppress(BridgeError, OSError):
                await running.server.close()
        if error is None or isinstance(error, asyncio.CancelledError):
            final = self.snapshot(state="stopped")
        else:
            final = self.snapshot(state="failed", error=str(error) or repr(error))
        try:
            write_snapshot(self._config.status_path, final)
        except BridgeError as exc:
            logger.warning("bridge %s: %s", cluster, exc)
        await running.log.close()
        self._running = None
        self._serving = False
        logger.info("bridge %s: stopped", cluster)
