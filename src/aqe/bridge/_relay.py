"""Anti-entropy repair: relay a third cluster's chain that the peer is missing.

A source link only sends events that originated in its own cluster, so when the link
from cluster O to cluster C is cut, C stops getting O's events. Every link gossips
high-water marks (:mod:`aqe.bridge._holdings`). When this cluster (B) holds more of a
chain of O than the peer C, and C has not reached what B held for ``repair_after_s``,
B opens that chain on its link to C (``Open(origin=O, source=B)``) and sends O's
events from its own copies, in O's sequence space, until C has acknowledged all B
held; then it closes the relay stream. The target applies a relayed chain exactly as
a direct one: the chain's marker condition serialises B's relay and O's own link, so
when O's link comes back nothing is stored twice.

C accepts a relayed chain only from a peer it trusts as a relay (``trusted_relay`` in
its config); otherwise it answers the ``Open`` with an ``Error`` (``untrusted-relay``)
and B stops relaying to C until the link reconnects, instead of retrying every
``repair_after_s``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import logging
import time
from collections.abc import Sequence
from typing import Any

from aqe.bridge._chains import PACK_EVENTS, CopyError, ReplicaLog, origin_of, pack_frames
from aqe.bridge._holdings import Holdings
from aqe.bridge._tasks import cancel_and_wait
from aqe.bridge.channel import Connector, FrameStream
from aqe.bridge.frames import UNTRUSTED_RELAY, Ack, Data, Error, Open, Resume, partition_of
from aqe.errors import BridgeError, LogError, StreamClosedError
from aqe.events import Headers

__all__ = ["Relays"]

_log = logging.getLogger(__name__)
_CLOSE_TIMEOUT_S = 1.0


class Relays:
    """The relay chains one link runs for third clusters' events (see module doc).

    Args:
        log: This cluster's event log.
        cluster: This cluster's name.
        peer: The link's peer.
        connector: The link's connector (relay streams share its connection).
        streams: The streams replicated.
        holdings: What this cluster holds (refreshed by the link's gossip).
        enabled: Whether to relay at all.
        repair_after_s: How long the peer must stay behind before a relay starts.
        window: Most relayed frames in flight per relay.
    """

    def __init__(
        self,
        log: ReplicaLog,
        cluster: str,
        peer: str,
        connector: Connector,
        streams: Sequence[str],
        holdings: Holdings,
        *,
        enabled: bool,
        repair_after_s: float,
        window: int,
    ) -> None:
        self._log = log
        self._cluster = cluster
        self._peer = peer
        self._connector = connector
        self._streams = frozenset(streams)
        self._holdings = holdings
        self._enabled = enabled
        self._repair_after_s = repair_after_s
        self._window = max(1, window)
        self._behind: dict[str, tuple[int, float]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._untrusted = False
        self._started = 0
        self._finished = 0
        self._events = 0

    def consider(self, peer_marks: dict[str, int]) -> None:
        """Start relays for chains the peer has stayed behind on (gossip just arrived)."""
        if not self._enabled or self._untrusted:
            return
        now = time.monotonic()
        for key, held in self._holdings.marks().items():
            parts = _parse_key(key)
            if parts is None:
                continue
            origin, stream, partition = parts
            if origin in (self._cluster, self._peer) or stream not in self._streams:
                continue
            theirs = peer_marks.get(key, 0)
            if theirs >= held:
                self._behind.pop(key, None)
                continue
            behind = self._behind.get(key)
            if behind is None or theirs >= behind[0]:
                self._behind[key] = (held, now)  # progress: start the clock again
                continue
            if now - behind[1] < self._repair_after_s or key in self._tasks:
                continue
            self._behind.pop(key, None)
            self._started += 1
            task = asyncio.create_task(self._relay(key, origin, stream, partition))
            self._tasks[key] = task
            task.add_done_callback(functools.partial(self._forget, key))

    def _forget(self, key: str, _task: asyncio.Task[None]) -> None:
        self._tasks.pop(key, None)

    async def stop(self) -> None:
        """Cancel every relay (the connection is going away)."""
        await cancel_and_wait(list(self._tasks.values()))
        self._tasks.clear()
        self._behind.clear()
        self._untrusted = False  # the peer's configuration may have changed meanwhile

    def stats(self) -> dict[str, Any]:
        """Relays started, finished, events relayed, and the chains relaying now."""
        return {
            "enabled": self._enabled,
            "refused_by_peer": self._untrusted,
            "started": self._started,
            "finished": self._finished,
            "events_sent": self._events,
            "active": sorted(self._tasks),
        }

    async def _relay(self, key: str, origin: str, stream: str, partition: int) -> None:
        partitions = self._holdings.partitions
        try:
            fs = await self._connector.open_stream(early=True)
        except BridgeError as exc:
            _log.info("bridge %s->%s: relay %s: %s", self._cluster, self._peer, key, exc)
            return
        try:
            await fs.send(
                Open(
                    origin=origin,
                    stream=stream,
                    partition=partition,
                    partitions=partitions,
                    source=self._cluster,
                )
            )
            first = await fs.recv()
            if isinstance(first, Error) and first.code == UNTRUSTED_RELAY:
                if not self._untrusted:
                    _log.warning(
                        "bridge %s->%s: the peer does not trust this cluster as a relay "
                        "(add trusted_relay = true to its [[peers]] entry for %s); "
                        "not relaying until the link reconnects",
                        self._cluster,
                        self._peer,
                        self._cluster,
                    )
                self._untrusted = True
                return
            if not isinstance(first, Resume):
                _log.warning(
                    "bridge %s->%s: relay %s refused: %r", self._cluster, self._peer, key, first
                )
                return
            _log.info(
                "bridge %s->%s: relaying %s after %d",
                self._cluster,
                self._peer,
                key,
                first.applied_seq,
            )
            await self._send_chain(fs, key, origin, stream, partition, first.applied_seq)
            self._finished += 1
        except (StreamClosedError, LogError) as exc:
            _log.info("bridge %s->%s: relay %s ended: %s", self._cluster, self._peer, key, exc)
        finally:
            with contextlib.suppress(BridgeError, TimeoutError):
                async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                    await fs.close()

    async def _send_chain(
        self, fs: FrameStream, key: str, origin: str, stream: str, partition: int, applied: int
    ) -> None:
        """Send this cluster's copies of the chain after ``applied``; wait for the acks."""
        after = self._holdings.copies_after(key, applied)
        if after is None:
            return
        acked = applied
        moved = asyncio.Event()

        async def acks() -> None:
            nonlocal acked
            while True:
                frame = await fs.recv()
                if not isinstance(frame, Ack):  # a Gap or an Error: this pass is over
                    _log.info("bridge %s->%s: relay %s: %r", self._cluster, self._peer, key, frame)
                    return
                acked = max(acked, frame.applied_seq)
                moved.set()

        listener = asyncio.create_task(acks())
        unsent: list[Data] = []

        async def flush() -> None:
            for frame in pack_frames(unsent):
                await fs.send(frame)
            self._events += len(unsent)
            unsent.clear()

        try:
            prev = applied
            sent: list[int] = []
            async for env in self._log.read(stream, after_seq=after):
                if listener.done():
                    return
                if Headers.ORIGIN_CLUSTER not in env.headers:
                    continue
                try:
                    o, s, seq = origin_of(env, self._cluster)
                except CopyError:
                    continue
                if o != origin or s != stream or seq <= prev:
                    continue
                if partition_of(env.subject, self._holdings.partitions) != partition:
                    continue
                while len(sent) - bisect.bisect_right(sent, acked) >= self._window:
                    if unsent:  # the window is full of frames not yet sent: send them
                        await flush()
                        continue
                    if listener.done():
                        return
                    await _either(listener, moved)
                unsent.append(
                    Data(
                        seq=seq,
                        prev=prev,
                        subject=env.subject,
                        data=env.data,
                        headers=dict(env.headers),
                        recorded_at_ns=env.recorded_at_ns,
                    )
                )
                if len(unsent) >= PACK_EVENTS:
                    await flush()
                sent.append(seq)
                prev = seq
            await flush()
            while acked < prev and not listener.done():
                await _either(listener, moved)
        finally:
            await cancel_and_wait([listener])


async def _either(task: asyncio.Task[None], event: asyncio.Event) -> None:
    """Wait until ``task`` ends or ``event`` is set (then cleared for the next wait)."""
    event.clear()
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()


def _parse_key(key: str) -> tuple[str, str, int] | None:
    origin, _, rest = key.partition("/")
    stream, _, part = rest.partition("/")
    if not origin or not stream or not part.isdigit():
        return None
    return origin, stream, int(part)
