"""What a cluster holds of every chain, read from its own streams (anti-entropy marks).

Gossip compares high-water marks: for every chain (origin cluster, stream, partition)
the highest origin sequence stored here. Local events count under this cluster's own
chains, bridged copies under their origin's (``Aqe-Origin-*`` headers); markers are
skipped. :class:`Holdings` reads each stream once and then only what was appended
since, so a refresh per gossip round is cheap. For chains of other origins it also
remembers where each copy sits locally, so a relay can start reading right before the
first copy a lagging peer lacks.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Sequence

from aqe.bridge._chains import CopyError, ReplicaLog, is_marker, origin_of
from aqe.bridge.frames import chain_key, partition_of

__all__ = ["Holdings"]


class _Index:
    """Origin sequences of one foreign chain's copies and their local stream sequences."""

    __slots__ = ("local", "origin")

    def __init__(self) -> None:
        self.origin: list[int] = []
        self.local: list[int] = []


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
        self._position = dict.fromkeys(self._streams, 0)
        self._marks: dict[str, int] = {}
        self._copies: dict[str, _Index] = {}
        self._lock = asyncio.Lock()

    @property
    def partitions(self) -> int:
        """The number of partitions chains are keyed by."""
        return self._partitions

    async def refresh(self) -> dict[str, int]:
        """Read what was appended since the last refresh; the marks afterwards.

        Raises:
            LogError: the log could not be read (the marks stay as they were).
        """
        async with self._lock:
            for stream in self._streams:
                async for env in self._log.read(stream, after_seq=self._position[stream]):
                    self._position[stream] = env.seq
                    if is_marker(env.subject, env.event_type):
                        continue
                    try:
                        origin, origin_stream, origin_seq = origin_of(env, self._cluster)
                    except CopyError:
                        continue
                    key = chain_key(
                        origin, origin_stream, partition_of(env.subject, self._partitions)
                    )
                    if origin_seq > self._marks.get(key, 0):
                        self._marks[key] = origin_seq
                        if origin != self._cluster:
                            index = self._copies.setdefault(key, _Index())
                            index.origin.append(origin_seq)
                            index.local.append(env.seq)
            return dict(self._marks)

    def marks(self) -> dict[str, int]:
        """The marks as of the last refresh."""
        return dict(self._marks)

    def copies_after(self, key: str, origin_seq: int) -> int | None:
        """The local sequence to read after for a foreign chain's copies past ``origin_seq``.

        None when this cluster holds no copy of that chain past ``origin_seq``.
        """
        index = self._copies.get(key)
        if index is None:
            return None
        at = bisect.bisect_right(index.origin, origin_seq)
        if at == len(index.origin):
            return None
        return index.local[at] - 1
