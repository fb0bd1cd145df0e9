"""aqe: the event backbone of an agentic quality-engineering fleet.

Every fact is an immutable event appended to NATS JetStream; every view is a
projection folded from that log and rebuildable by replay.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
