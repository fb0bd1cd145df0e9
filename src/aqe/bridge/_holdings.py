"""What a cluster holds of every chain, read from its own streams (anti-entropy marks).

Gossip compares high-water marks: for every chain (origin cluster, stream, partition)
the highest origin sequence stored here. A chain of another origin is held exactly as
far as its last :class:`~aqe.events.BridgeApplied` marker says (every copy is stored
in one atomic batch with its chain's marker), so :meth:`Holdings.refresh_copies` reads
only the markers: one message per stored batch instead of one per event, which keeps
gossip from reading every event of the stream a second time. It also remembers where
each batch sits locally, so a relay can start reading right before the first copy a
lagging peer lacks.

This cluster's own chains are marked by the highest local sequence of their subjects;
only :meth:`Holdings.refresh` reads the events for those (nobody relays a chain to its
origin, so gossip does not need them). Each read goes on from where the last one of
its kind stopped.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections.abc import Sequence

import msgspec

from aqe.bridge._chains import ReplicaLog, is_marker, marker_filter, stream_domain
from aqe.bridge.frames import chain_key, partition_of
from aqe.errors import ConfigError
from aqe.events import BridgeApplied, Headers

__all__ = ["Holdings"]


class _Index:
    """Where one foreign chain's batches sit: per marker, its last origin sequence and
    the local sequence after which its copies lie (the chain's previous marker)."""

    __slots__ = ("local", "origin", "previous")

    def __init__(self) -> None:
        self.origin: list[int] = []
        self.local: list[int] = []
        self.previous = 0


class Holdings:
    """High-water marks of every chain this cluster holds, per stream.

    Args:
        log: The cluster's event log.
        cluster: This cluster's name (the origin of events without origin headers).
        streams: The streams to track.
        partitions: How subjects are split into chains.
    """

    def __init__(
        self, log: ReplicaLog, cluster: str, streams: Sequence[str], *, partitions: int = 8
    ) -> None:
        self._log = log
        self._cluster = cluster
        self._streams = tuple(streams)
        self._partitions = partitions
        # Markers live in streams of the form aqe.<domain>.> (the target refuses others).
        self._filters: dict[str, str] = {}
        for spec in log.specs:
            if spec.name in self._streams:
                with contextlib.suppress(ConfigError):
                    self._filters[spec.name] = marker_filter(stream_domain(spec))
        self._marker_position = dict.fromkeys(self._streams, 0)
        self._local_position = dict.fromkeys(self._streams, 0)
        self._local: dict[str, int] = {}
        self._copies: dict[str, int] = {}
        self._index: dict[str, _Index] = {}
        self._lock = asyncio.Lock()
        self._reading: asyncio.Future[None] | None = None

    @property
    def partitions(self) -> int:
        """The number of partitions chains are keyed by."""
        return self._partitions

    async def refresh(self) -> dict[str, int]:
        """Read what was appended since the last refresh; the marks of every chain.

        Raises:
            LogError: the log could not be read (the marks stay as they were).
        """
        async with self._lock:
            for stream in self._streams:
                await self._read_markers(stream)
                await self._read_local(stream)
            return {**self._copies, **self._local}

    async def refresh_copies(self, *, wait_s: float | None = None) -> dict[str, int]:
        """Read the markers stored since the last read; the marks of other origins' chains.

        Callers at the same time share one read. With ``wait_s``, a read that takes
        longer (a server busy storing batches can take seconds to set up a consumer)
        goes on in the background and the marks as of the last read are returned:
        gossip answers promptly with marks a moment old rather than late.

        Raises:
            LogError: the log could not be read (the marks stay as they were).
        """
        reading = self._reading
        if reading is None or reading.done():
            reading = self._reading = asyncio.ensure_future(self._read_all_markers())
            reading.add_done_callback(_retrieve)
        if wait_s is None:
            await asyncio.shield(reading)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(reading), wait_s)
        return dict(self._copies)

    async def _read_all_markers(self) -> None:
        async with self._lock:
            for stream in self._streams:
                await self._read_markers(stream)

    def marks(self) -> dict[str, int]:
        """The marks as of the last refresh (own chains only after :meth:`refresh`)."""
        return {**self._copies, **self._local}

    def copies_after(self, key: str, origin_seq: int) -> int | None:
        """The local sequence to read after for a foreign chain's copies past ``origin_seq``.

        None when this cluster holds no copy of that chain past ``origin_seq``.
        """
        index = self._index.get(key)
        if index is None:
            return None
        at = bisect.bisect_right(index.origin, origin_seq)
        if at == len(index.origin):
            return None
        return index.local[at]

    async def _read_markers(self, stream: str) -> None:
        filter_ = self._filters.get(stream)
        if filter_ is None:
            return
        position = self._marker_position[stream]
        async for env in self._log.read(stream, after_seq=position, subjects=filter_):
            self._marker_position[stream] = env.seq
            try:
                marker = msgspec.json.decode(env.data, type=BridgeApplied)
            except msgspec.DecodeError:
                continue
            if marker.partitions != self._partitions or marker.origin == self._cluster:
                continue
            key = chain_key(marker.origin, marker.stream, marker.partition)
            index = self._index.get(key)
            if index is None:
                index = self._index[key] = _Index()
            # A batch's copies were stored after the chain's previous marker (its
            # condition), whether in the batch itself or one by one before it.
            if marker.last_seq > self._copies.get(key, 0):
                self._copies[key] = marker.last_seq
                index.origin.append(marker.last_seq)
                index.local.append(index.previous)
            index.previous = env.seq

    async def _read_local(self, stream: str) -> None:
        position = self._local_position[stream]
        async for env in self._log.read(stream, after_seq=position):
            self._local_position[stream] = env.seq
            if Headers.ORIGIN_CLUSTER in env.headers or is_marker(env.subject, env.event_type):
                continue
            key = chain_key(self._cluster, stream, partition_of(env.subject, self._partitions))
            if env.seq > self._local.get(key, 0):
                self._local[key] = env.seq


def _retrieve(reading: asyncio.Future[None]) -> None:
    """Mark a background read's failure as seen (a later refresh reports its own)."""
    if not reading.cancelled():
        reading.exception()
