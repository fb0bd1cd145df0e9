"""Replication over a bridge link: each event copied once, in order, with no loops.

The two sides of a link, built on the transport Protocols of :mod:`aqe.bridge.channel`
and the wire protocol of :mod:`aqe.bridge.frames`:

* :class:`SourceLink` (the dialling cluster) follows its local streams and sends each
  event that originated there to the peer, one QUIC stream per *chain* (origin
  cluster, stream, subject partition). Frames stay in flight until acknowledged and
  are resent on a new connection; a bounded window holds the reader back.
* :class:`TargetSide` (the peer's stream handler) stores each chain's copies with a
  :class:`~aqe.events.BridgeApplied` marker in one atomic batch, conditional on the
  chain's previous marker, and reads its position back from that marker after any
  restart. The condition makes the copy exactly-once even when two links, a ghost of
  a dropped connection, or a relay apply the same chain at once.

A copy keeps the event's subject, data and headers; it gains ``Aqe-Origin-Cluster``,
``Aqe-Origin-Stream``, ``Aqe-Origin-Seq`` and ``Aqe-Event-Id`` (the event's own id),
and its ``Nats-Msg-Id`` becomes ``<origin>:<stream>:<origin seq>``, the same on every
cluster. Only events that originated in the source cluster are sent, so nothing is
sent back where it came from; with ``relay=True`` a link also repairs chains of third
clusters that its peer is missing (gossiped marks, :class:`Holdings`).
"""

from __future__ import annotations

from aqe.bridge._chains import (
    ApplyPlan,
    ReplicaLog,
    SourceChain,
    copy_headers,
    copy_msg_id,
    is_marker,
    marker_subject,
    plan_batch,
)
from aqe.bridge._holdings import Holdings
from aqe.bridge._source import SourceLink
from aqe.bridge._target import ChainStats, TargetSide

__all__ = [
    "ApplyPlan",
    "ChainStats",
    "Holdings",
    "ReplicaLog",
    "SourceChain",
    "SourceLink",
    "TargetSide",
    "copy_headers",
    "copy_msg_id",
    "is_marker",
    "marker_subject",
    "plan_batch",
]
