"""The bridge's bookkeeping event: which bridged events a cluster has applied.

A QUIC link (``aqe.bridge``) copies events from one cluster's streams to another's.
Each copy lands in an atomic batch together with one :class:`BridgeApplied` marker in
the same stream, on a subject of its own per *chain* (origin cluster, origin stream,
partition): ``aqe.<domain>.bridge.<chain-token>.applied``. The marker is appended on
condition that the chain's previous marker is still the last one, so two links (or a
restarted link and its ghost) can never both apply the same events, and reading the
chain's last marker back tells a restarted link where to resume.

Markers are local to the cluster that stores them: links never copy them, projections
ignore them, and comparing two clusters' event sets leaves them out.
"""

from __future__ import annotations

from typing import ClassVar

from aqe.events._base import Event

__all__ = ["BridgeApplied"]


class BridgeApplied(Event, frozen=True, kw_only=True, tag="bridge.chain.applied.v1"):
    """A batch of one chain's events, origin sequences ``first_seq..last_seq``, was applied.

    ``prev_seq`` is the chain's last applied origin sequence before this batch (0 for the
    first batch), so the markers of a chain form a gap-free list. ``via`` names the
    cluster the batch came from (the origin itself, or a relay during anti-entropy).
    """

    id_field: ClassVar[str] = "chain"

    chain: str
    """``<origin>/<stream>/<partition>``: the chain's key."""
    origin: str
    stream: str
    partition: int
    partitions: int
    first_seq: int
    last_seq: int
    prev_seq: int
    count: int
    via: str
