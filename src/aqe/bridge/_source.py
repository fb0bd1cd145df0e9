"""The source side of a link: send this cluster's events to one peer, each exactly once.

:class:`SourceLink` keeps one connection to the peer (reconnecting with backoff) and
on it one stream per chain of each replicated stream. A reader per stream follows the
local stream and routes each local event to its chain; a sender per stream puts what
the reader routed on each chain's stream whenever the reader waits (or every
``_YIELD_EVERY`` events), several events to a ``DataBatch`` frame when several are
ready. Frames stay in flight until the target acknowledges them, so a new connection
resends them at once (as 0-RTT data when the transport can) and the source's position
only moves on the target's word. A bounded number of frames in flight holds the
reader back when the target is slow.

Only events that originated here are sent (so nothing bounces back, and copies reach
third clusters over their own links). With ``relay=True`` a control stream's gossip
also lets this link repair a third cluster's chain that the peer is missing
(:mod:`aqe.bridge._relay`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Coroutine, Sequence
from typing import Any

from aqe.bridge._chains import PACK_EVENTS, ReplicaLog, SourceChain, is_marker, pack_frames
from aqe.bridge._holdings import Holdings
from aqe.bridge._relay import Relays
from aqe.bridge._tasks import raise_if_cancelling, until_first_exit
from aqe.bridge.channel import Connector, FrameStream
from aqe.bridge.frames import (
    Ack,
    Data,
    Error,
    Gap,
    Hello,
    Marks,
    Open,
    Resume,
    chain_key,
    partition_of,
)
from aqe.errors import (
    BridgeError,
    ConfigError,
    LinkDownError,
    LogError,
    LogUnavailableError,
    StreamClosedError,
)
from aqe.events import BridgeApplied, Envelope, Headers

__all__ = ["SourceLink"]

_log = logging.getLogger(__name__)
_CLOSE_TIMEOUT_S = 1.0
_ROUTES_MAX = 65_536
"""Subjects whose partition a link remembers (cleared when full)."""
_NOT_ROUTED = -1
_YIELD_EVERY = 4 * PACK_EVENTS
"""Events a reader routes before it lets the sender run (when it never has to wait)."""
_MARKER_TAG = BridgeApplied.type_tag()


class _PeerRefusedError(BridgeError):
    """The peer answered a stream with ``Error`` (or broke the protocol)."""


class _Window:
    """A link-wide bound on frames in flight; the reader waits for room."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._room = asyncio.Event()
        self._room.set()

    async def acquire(self) -> None:
        while self.used >= self.limit:
            self._room.clear()
            await self._room.wait()
        self.used += 1

    def release(self, count: int) -> None:
        if count:
            self.used -= count
            self._room.set()


class _Live:
    """A chain on the current connection: its stream and whether it may send."""

    def __init__(self, stream: str, partition: int, chain: SourceChain) -> None:
        self.stream = stream
        self.partition = partition
        self.chain = chain
        self.fs: FrameStream | None = None
        self.ready = False
        self.settled = False
        self.last_error = ""
        # Frames routed (and in flight) that the sender has not put on ``fs`` yet, and
        # the chain generation they were routed in (a reset chain drops them).
        self.unsent: list[Data] = []
        self.unsent_generation = 0


class SourceLink:
    """Sends this cluster's events of ``streams`` to ``peer`` until cancelled.

    Args:
        log: This cluster's event log.
        cluster: This cluster's name.
        peer: The peer's name (as its certificate says).
        connector: Dials the peer.
        streams: The streams replicated.
        partitions: Chains per stream (``crc32(subject) % partitions``); every
            cluster of a mesh must use the same number.
        max_in_flight: Most frames sent and not yet acknowledged, over the link.
        reconnect_min_s: First delay after a failed connect or a lost link.
        reconnect_max_s: Longest delay (doubling, with jitter, in between).
        gossip_s: Seconds between ``Marks`` on the control stream (0: no control
            stream).
        relay: Repair chains of third clusters that the peer lacks.
        repair_after_s: How long the peer must stay behind before a relay starts.
        holdings: Shared tracker of what this cluster holds (one is made if None).

    Raises:
        ConfigError: ``peer`` is this cluster, an unknown stream, or a bound below 1.
    """

    def __init__(
        self,
        log: ReplicaLog,
        cluster: str,
        peer: str,
        connector: Connector,
        streams: Sequence[str],
        *,
        partitions: int = 8,
        max_in_flight: int = 4096,
        reconnect_min_s: float = 0.05,
        reconnect_max_s: float = 2.0,
        gossip_s: float = 1.0,
        relay: bool = False,
        repair_after_s: float = 3.0,
        holdings: Holdings | None = None,
    ) -> None:
        if peer == cluster:
            raise ConfigError(f"bridge link {cluster}: the peer cannot be this cluster")
        known = {spec.name for spec in log.specs}
        unknown = sorted(set(streams) - known)
        if unknown:
            raise ConfigError(f"bridge link {cluster}->{peer}: unknown streams {unknown}")
        if partitions < 1 or max_in_flight < 1:
            raise ConfigError(
                f"bridge link {cluster}->{peer}: partitions and max_in_flight must be >= 1"
            )
        self._log = log
        self._cluster = cluster
        self._peer = peer
        self._connector = connector
        self._streams = tuple(streams)
        self._partitions = partitions
        self._min_s = reconnect_min_s
        self._max_s = max(reconnect_max_s, reconnect_min_s)
        self._gossip_s = gossip_s
        self._window = _Window(max_in_flight)
        self._live = {
            (s, p): _Live(s, p, SourceChain(chain_key(cluster, s, p)))
            for s in self._streams
            for p in range(partitions)
        }
        self._holdings = holdings or Holdings(log, cluster, self._streams, partitions=partitions)
        self._relays = Relays(
            log,
            cluster,
            peer,
            connector,
            self._streams,
            self._holdings,
            enabled=relay,
            repair_after_s=repair_after_s,
            window=max_in_flight,
        )
        self._connected = False
        self._resumed = False
        self._reconnects = 0
        self._last_error = ""
        self._peer_marks: dict[str, int] = {}
        self._routes: dict[str, int] = {}

    @property
    def peer(self) -> str:
        """The peer cluster's name."""
        return self._peer

    async def run(self) -> None:
        """Connect, replicate, reconnect with backoff when the link drops; until cancelled."""
        delay = self._min_s
        attempts = 0
        while True:
            raise_if_cancelling()
            self._reconnects = attempts
            attempts += 1
            try:
                await self._connector.connect()
            except LinkDownError as exc:
                self._last_error = str(exc)
                _log.info("bridge %s->%s: connect failed: %s", self._cluster, self._peer, exc)
                await asyncio.sleep(_jitter(delay))
                delay = min(delay * 2, self._max_s)
                continue
            self._connected = True
            self._resumed = False
            try:
                await self._session()
            except (BridgeError, LogError) as exc:
                self._last_error = str(exc)
                _log.info("bridge %s->%s: link lost: %s", self._cluster, self._peer, exc)
            finally:
                self._connected = False
                for live in self._live.values():
                    live.fs, live.ready, live.settled = None, False, False
                    live.chain.down()
                with contextlib.suppress(BridgeError):
                    await self._connector.close()
            if self._resumed:  # the peer answered on this connection: start over fast
                delay = self._min_s
            await asyncio.sleep(_jitter(delay))
            delay = min(delay * 2, self._max_s)

    async def _session(self) -> None:
        """One connection's life: ends (raising) when the link or a local log fails."""
        jobs: list[Coroutine[Any, Any, None]] = [self._watch()]
        jobs += [self._stream_session(s) for s in self._streams]
        if self._gossip_s > 0:
            jobs.append(self._control())
        try:
            await until_first_exit(jobs)
        finally:
            await self._relays.stop()

    async def _watch(self) -> None:
        await self._connector.wait_closed()
        raise LinkDownError(f"connection to {self._peer} closed")

    # -- data streams -----------------------------------------------------------------

    async def _stream_session(self, stream: str) -> None:
        lives = [self._live[(stream, p)] for p in range(self._partitions)]
        rewind = asyncio.Event()
        routed = asyncio.Event()
        jobs = [self._chain_loop(live, rewind) for live in lives]
        jobs.append(self._reader_loop(stream, lives, rewind, routed))
        jobs.append(self._sender(lives, routed))
        await until_first_exit(jobs)

    async def _chain_loop(self, live: _Live, rewind: asyncio.Event) -> None:
        """Keep the chain's stream open: Open, resend what is in flight, handle answers."""
        chain = live.chain
        delay = self._min_s
        while True:
            raise_if_cancelling()
            fs = await self._connector.open_stream(early=True)
            live.fs = fs
            try:
                await fs.send(
                    Open(
                        origin=self._cluster,
                        stream=live.stream,
                        partition=live.partition,
                        partitions=self._partitions,
                        source=self._cluster,
                    )
                )
                for early in pack_frames(chain.in_flight):  # 0-RTT: before the Resume
                    await fs.send(early)
                first = await fs.recv()
                if not isinstance(first, Resume):
                    raise _refusal(first, chain.key)
                self._window.release(chain.on_resume(first.applied_seq))
                live.ready = live.settled = True
                live.last_error = ""
                self._resumed = True
                rewind.set()
                delay = self._min_s
                while True:
                    frame = await fs.recv()
                    if isinstance(frame, Ack):
                        self._window.release(chain.on_ack(frame.applied_seq))
                    elif isinstance(frame, Gap):
                        released, restart = chain.on_gap(frame)
                        self._window.release(released)
                        if restart:
                            _log.info(
                                "bridge %s->%s: %s gap at %d (got prev %d seq %d): resending",
                                self._cluster,
                                self._peer,
                                chain.key,
                                frame.applied_seq,
                                frame.got_prev,
                                frame.got_seq,
                            )
                            rewind.set()
                    else:
                        raise _refusal(frame, chain.key)
            except StreamClosedError as exc:
                live.last_error = str(exc)
            except _PeerRefusedError as exc:
                live.last_error = str(exc)
                _log.warning("bridge %s->%s: %s", self._cluster, self._peer, exc)
            finally:
                live.fs = None
                live.ready = False
                live.settled = True
                live.unsent = []  # still in flight: resent on the next stream
                chain.down()
                rewind.set()
                await _close_quietly(fs)
            await asyncio.sleep(_jitter(delay))
            delay = min(delay * 2, self._max_s)

    async def _reader_loop(
        self, stream: str, lives: list[_Live], rewind: asyncio.Event, routed: asyncio.Event
    ) -> None:
        """Run the stream's reader, restarting it where a rewound or reopened chain needs."""
        delay = self._min_s
        while True:
            raise_if_cancelling()
            while not all(live.settled for live in lives) or not any(live.ready for live in lives):
                rewind.clear()
                await rewind.wait()
            start = min(live.chain.floor for live in lives if live.ready)
            # Only chains that take part from the start may have their floor raised.
            generations = [live.chain.generation if live.ready else -1 for live in lives]
            scanned = [start]
            rewind.clear()
            try:
                await until_first_exit([self._read(stream, lives, scanned, routed), rewind.wait()])
                delay = self._min_s
            except LogUnavailableError as exc:
                _log.info("bridge %s->%s: reading %s: %s", self._cluster, self._peer, stream, exc)
                await asyncio.sleep(_jitter(delay))
                delay = min(delay * 2, self._max_s)
            finally:
                for live, generation in zip(lives, generations, strict=True):
                    live.chain.advance(scanned[0], generation)

    async def _read(
        self, stream: str, lives: list[_Live], scanned: list[int], routed: asyncio.Event
    ) -> None:
        """Route the stream's local events from ``scanned[0]`` on; ``scanned[0]`` follows."""
        count = 0
        async for env in self._log.read(stream, after_seq=scanned[0], follow=True):
            if await self._route(env, lives):
                routed.set()
                count += 1
                if count % _YIELD_EVERY == 0:
                    # A long backlog reads without waiting: let the sender go now and
                    # then, so frames leave while the reader goes on.
                    await asyncio.sleep(0)
            scanned[0] = env.seq

    async def _route(self, env: Envelope, lives: list[_Live]) -> bool:
        """Queue a local event on its chain, unless the chain has it or is down.

        Returns whether it was queued for the sender.
        """
        partition = self._routes.get(env.subject)
        if partition is None:
            partition = self._route_of(env.subject)
        if partition == _NOT_ROUTED or not _local(env):
            return False
        live = lives[partition]
        chain = live.chain
        if env.seq > chain.high_water:
            chain.high_water = env.seq
        if not live.ready or env.seq <= chain.sent:
            return False
        generation = chain.generation
        await self._window.acquire()
        # While waiting for room the chain may have been rewound or lost its stream;
        # then this reader is about to restart and must not send out of order.
        if live.fs is None or not live.ready or chain.generation != generation:
            self._window.release(1)
            return False
        if live.unsent_generation != generation:
            live.unsent = []
            live.unsent_generation = generation
        live.unsent.append(chain.push(env))
        return True

    def _route_of(self, subject: str) -> int:
        """The partition of a subject's events (:data:`_NOT_ROUTED` for markers)."""
        if len(self._routes) >= _ROUTES_MAX:
            self._routes.clear()
        partition = _NOT_ROUTED if is_marker(subject) else partition_of(subject, self._partitions)
        self._routes[subject] = partition
        return partition

    async def _sender(self, lives: list[_Live], routed: asyncio.Event) -> None:
        """Put each chain's routed frames on its stream, batched, whenever the reader waits."""
        while True:
            await routed.wait()
            routed.clear()
            for live in lives:
                if live.unsent:
                    await self._send_unsent(live)

    async def _send_unsent(self, live: _Live) -> None:
        frames, live.unsent = live.unsent, []
        fs = live.fs
        # A chain reset since (a rewind, a new stream) dropped or will resend them.
        if fs is None or not live.ready or live.chain.generation != live.unsent_generation:
            return
        # A failed send leaves the frames in flight; the chain's loop notices the
        # closed stream, reopens it and resends.
        with contextlib.suppress(StreamClosedError):
            for frame in pack_frames(frames):
                await fs.send(frame)

    # -- control stream -----------------------------------------------------------------

    async def _control(self) -> None:
        """Gossip marks with the peer; feed its marks to the relays."""
        delay = self._min_s
        while True:
            raise_if_cancelling()
            fs = await self._connector.open_stream(early=False)
            try:
                await fs.send(Hello(cluster=self._cluster))
                await until_first_exit([self._gossip_out(fs), self._gossip_in(fs)])
            except StreamClosedError:
                pass
            except _PeerRefusedError as exc:
                _log.warning("bridge %s->%s: control stream: %s", self._cluster, self._peer, exc)
            except LogUnavailableError as exc:
                _log.info("bridge %s->%s: marks: %s", self._cluster, self._peer, exc)
            finally:
                await _close_quietly(fs)
            await asyncio.sleep(_jitter(delay))
            delay = min(delay * 2, self._max_s)

    async def _gossip_out(self, fs: FrameStream) -> None:
        while True:
            # Marks a moment old beat late ones: a slow read finishes in the background.
            marks = await self._holdings.refresh_copies(wait_s=self._gossip_s / 2)
            await fs.send(Marks(cluster=self._cluster, marks=marks))
            await asyncio.sleep(self._gossip_s)

    async def _gossip_in(self, fs: FrameStream) -> None:
        while True:
            frame = await fs.recv()
            if not isinstance(frame, Marks):
                raise _refusal(frame, "control")
            self._peer_marks = dict(frame.marks)
            self._relays.consider(self._peer_marks)

    # -- observation --------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Where the link stands, JSON-able: per chain, totals, relays, transport."""
        now = time.time_ns()
        chains: dict[str, dict[str, Any]] = {}
        for live in self._live.values():
            chain = live.chain
            oldest = chain.oldest_unacked_ns()
            chains[chain.key] = {
                "sent_seq": chain.sent,
                "acked_seq": chain.acked,
                "in_flight": len(chain.in_flight),
                "lag_events": max(0, chain.high_water - chain.acked),
                "lag_ms": max(0.0, (now - oldest) / 1e6) if oldest else 0.0,
                "frames_sent": chain.frames_sent,
                "events_acked": chain.events_acked,
                "rewinds": chain.rewinds,
                "ready": live.ready,
                "last_error": live.last_error,
            }
        values = list(chains.values())
        out: dict[str, Any] = {
            "cluster": self._cluster,
            "peer": self._peer,
            "connected": self._connected,
            "reconnects": self._reconnects,
            "last_error": self._last_error,
            "chains": chains,
            "totals": {
                "frames_sent": sum(c["frames_sent"] for c in values),
                "events_acked": sum(c["events_acked"] for c in values),
                "in_flight": sum(c["in_flight"] for c in values),
                "lag_events": sum(c["lag_events"] for c in values),
                "lag_ms": max((c["lag_ms"] for c in values), default=0.0),
            },
            "relays": self._relays.stats(),
            "peer_marks": dict(self._peer_marks),
        }
        transport = getattr(self._connector, "stats", None)
        if callable(transport):
            out["transport"] = transport()
        return out


def _local(env: Envelope) -> bool:
    """An event that originated in this cluster (not a copy, not a marker).

    Marker subjects are left out by the caller (:meth:`SourceLink._route_of`).
    """
    return Headers.ORIGIN_CLUSTER not in env.headers and env.event_type != _MARKER_TAG


def _refusal(frame: object, where: str) -> BridgeError:
    if isinstance(frame, Error):
        return _PeerRefusedError(f"{where}: peer refused ({frame.code}): {frame.message}")
    return _PeerRefusedError(f"{where}: unexpected {type(frame).__name__} from the peer")


async def _close_quietly(fs: FrameStream) -> None:
    """Finish a stream without waiting long on a link that is going away."""
    with contextlib.suppress(BridgeError, TimeoutError):
        async with asyncio.timeout(_CLOSE_TIMEOUT_S):
            await fs.close()


def _jitter(delay: float) -> float:
    """A delay between half and all of ``delay`` (so links do not retry in step)."""
    return delay * (0.5 + random.random() / 2)  # noqa: S311 - not for security
