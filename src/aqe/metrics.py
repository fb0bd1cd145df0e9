"""Prometheus metrics of aqe's long-running processes (``prometheus_client``).

One :class:`AqeMetrics` per process holds what that process sees and renders it at
scrape time (a custom collector, so derived values such as lag and checkpoint age are
computed when asked, never stale):

=====================================  =========  ======================================
metric                                 type       labels / meaning
=====================================  =========  ======================================
``aqe_events_appended_total``          counter    ``stream``: events appended to the
                                                  stream (its last sequence)
``aqe_events_folded_total``            counter    ``projection``, ``stream``: events this
                                                  process folded
``aqe_projection_checkpoint``          gauge      ``projection``, ``stream``: the last
                                                  sequence folded
``aqe_consumer_lag_events``            gauge      ``projection``, ``stream``: appended
                                                  minus checkpoint
``aqe_projection_checkpoint_age_seconds``  gauge  ``projection``, ``stream``: seconds since
                                                  the checkpoint last moved
``aqe_dead_letters_total``             counter    events parked on ``AQE_DLQ``
``aqe_workflow_instances``             gauge      ``workflow``, ``state``: instances
                                                  (state ``running`` until they end)
``aqe_bridge_lag_events``              gauge      ``peer``: events not yet acknowledged
``aqe_bridge_lag_seconds``             gauge      ``peer``: age of the oldest unacked one
``aqe_bridge_rtt_seconds``             gauge      ``peer``: the link's smoothed round trip
=====================================  =========  ======================================

:func:`watch_log` polls the log's heads and the dead-letter stream; projection runners
report folds through :meth:`AqeMetrics.folded`; a bridge node's status snapshot feeds
:meth:`AqeMetrics.bridge`. :func:`start_exporter` serves ``/metrics`` on a port (the
``--metrics-port`` of ``aqe consume``, ``aqe agent run`` and ``aqe bridge run``);
``aqe serve`` answers ``/metrics`` itself (:meth:`AqeMetrics.render`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from aqe.log.port import EventLog
    from aqe.projections.runner import Progress

__all__ = [
    "CONTENT_TYPE",
    "DLQ_STREAM",
    "METRIC_NAMES",
    "AqeMetrics",
    "start_exporter",
    "watch_log",
]

DLQ_STREAM = "AQE_DLQ"

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format's media type."""

METRIC_NAMES = (
    "aqe_events_appended",
    "aqe_events_folded",
    "aqe_projection_checkpoint",
    "aqe_consumer_lag_events",
    "aqe_projection_checkpoint_age_seconds",
    "aqe_dead_letters",
    "aqe_workflow_instances",
    "aqe_bridge_lag_events",
    "aqe_bridge_lag_seconds",
    "aqe_bridge_rtt_seconds",
)
"""Family names as the Prometheus parser reports them (counters without ``_total``)."""


class AqeMetrics:
    """What one process knows, exposed as Prometheus metrics (thread-safe)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        from prometheus_client import CollectorRegistry

        self._clock = clock
        self._lock = threading.Lock()
        self._appended: dict[str, int] = {}
        self._folded: dict[tuple[str, str], int] = {}
        self._checkpoint: dict[tuple[str, str], int] = {}
        self._moved_at: dict[tuple[str, str], float] = {}
        self._dead_letters = 0
        self._workflows: dict[tuple[str, str], int] = {}
        self._bridge: dict[str, tuple[float, float, float | None]] = {}
        self._bridge_status: Path | None = None
        self.registry: CollectorRegistry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    # -- updates ----------------------------------------------------------------------

    def appended(self, stream: str, last_seq: int) -> None:
        """The stream's head: ``last_seq`` events have been appended to it."""
        with self._lock:
            self._appended[stream] = max(self._appended.get(stream, 0), last_seq)

    def folded(self, projection: str, stream: str, seq: int, count: int = 1) -> None:
        """``projection`` folded ``count`` more events of ``stream``, up to ``seq``."""
        key = (projection, stream)
        with self._lock:
            self._folded[key] = self._folded.get(key, 0) + count
            if seq > self._checkpoint.get(key, -1):
                self._checkpoint[key] = seq
                self._moved_at[key] = self._clock()
            self._appended[stream] = max(self._appended.get(stream, 0), seq)

    def checkpoint(self, projection: str, stream: str, seq: int) -> None:
        """Where ``projection`` starts on ``stream`` (its saved checkpoint), nothing folded yet."""
        key = (projection, stream)
        with self._lock:
            self._checkpoint.setdefault(key, seq)
            self._folded.setdefault(key, 0)
            self._moved_at.setdefault(key, self._clock())

    def progress(self) -> Callable[[Progress], None]:
        """An ``on_progress`` callback for a :class:`~aqe.projections.ProjectionRunner`.

        Events folded are counted from the sequence reached before; register where the
        runner starts with :meth:`checkpoint` first, or the first report only sets it.
        """

        def update(p: Progress) -> None:
            key = (p.projection, p.stream)
            with self._lock:
                before = self._checkpoint.get(key)
            if before is None:
                self.checkpoint(p.projection, p.stream, p.seq)
            elif p.seq > before:
                self.folded(p.projection, p.stream, p.seq, p.seq - before)

        return update

    def dead_letters(self, total: int) -> None:
        """Events parked on the dead-letter stream so far."""
        with self._lock:
            self._dead_letters = max(self._dead_letters, total)

    def workflows(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Instances per ``(workflow, state)``; replaces the previous counts."""
        with self._lock:
            self._workflows = dict(counts)

    def bridge(self, snapshot: Mapping[str, Any]) -> None:
        """A bridge node's status snapshot (``status.json``): its links' lag and RTT."""
        links: dict[str, tuple[float, float, float | None]] = {}
        for peer, stats in (snapshot.get("links") or {}).items():
            totals = stats.get("totals") or {}
            rtt_ms = (stats.get("transport") or {}).get("rtt_ms")
            links[str(peer)] = (
                float(totals.get("lag_events", 0)),
                float(totals.get("lag_ms", 0.0)) / 1000.0,
                None if rtt_ms is None else float(rtt_ms) / 1000.0,
            )
        with self._lock:
            self._bridge = links

    def read_bridge_status(self, path: Path) -> None:
        """Read a bridge node's ``status.json`` at every scrape (``aqe bridge run``)."""
        self._bridge_status = path

    # -- collector --------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        """The metric families, computed now (``prometheus_client``'s collector protocol)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        if self._bridge_status is not None:
            from aqe.bridge.status import read_snapshot
            from aqe.errors import AqeError

            with contextlib.suppress(AqeError):  # not written yet: the last values stay
                self.bridge(read_snapshot(self._bridge_status))
        with self._lock:
            now = self._clock()
            appended = CounterMetricFamily(
                "aqe_events_appended",
                "Events appended to the stream (its last sequence).",
                labels=["stream"],
            )
            for stream, seq in sorted(self._appended.items()):
                appended.add_metric([stream], seq)
            pair = ["projection", "stream"]
            folded = CounterMetricFamily(
                "aqe_events_folded", "Events folded by this process.", labels=pair
            )
            checkpoint = GaugeMetricFamily(
                "aqe_projection_checkpoint", "Last sequence folded.", labels=pair
            )
            lag = GaugeMetricFamily(
                "aqe_consumer_lag_events", "Events appended, not yet folded.", labels=pair
            )
            age = GaugeMetricFamily(
                "aqe_projection_checkpoint_age_seconds",
                "Seconds since the checkpoint moved.",
                labels=pair,
            )
            for key in sorted(self._checkpoint):
                seq = self._checkpoint[key]
                folded.add_metric(list(key), self._folded.get(key, 0))
                checkpoint.add_metric(list(key), seq)
                lag.add_metric(list(key), max(0, self._appended.get(key[1], 0) - seq))
                age.add_metric(list(key), max(0.0, now - self._moved_at.get(key, now)))
            dead = CounterMetricFamily(
                "aqe_dead_letters", "Events parked on the dead-letter stream."
            )
            dead.add_metric([], self._dead_letters)
            flows = GaugeMetricFamily(
                "aqe_workflow_instances",
                "Workflow instances by state.",
                labels=["workflow", "state"],
            )
            for (workflow, state), n in sorted(self._workflows.items()):
                flows.add_metric([workflow, state], n)
            b_lag = GaugeMetricFamily(
                "aqe_bridge_lag_events", "Events not yet acknowledged.", labels=["peer"]
            )
            b_age = GaugeMetricFamily(
                "aqe_bridge_lag_seconds", "Age of the oldest unacknowledged event.", labels=["peer"]
            )
            b_rtt = GaugeMetricFamily(
                "aqe_bridge_rtt_seconds", "Smoothed round-trip time.", labels=["peer"]
            )
            for peer, (events, seconds, rtt) in sorted(self._bridge.items()):
                b_lag.add_metric([peer], events)
                b_age.add_metric([peer], seconds)
                if rtt is not None:
                    b_rtt.add_metric([peer], rtt)
        yield from (appended, folded, checkpoint, lag, age, dead, flows, b_lag, b_age, b_rtt)

    def render(self) -> bytes:
        """The text exposition format, as ``/metrics`` serves it."""
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))


async def watch_log(
    log: EventLog,
    metrics: AqeMetrics,
    streams: Iterable[str],
    *,
    interval_s: float = 1.0,
) -> None:
    """Poll the streams' heads and the dead-letter stream into ``metrics`` until cancelled.

    A stream that does not exist (yet) or a server that does not answer is skipped
    for this round; the metrics keep their last values.
    """
    from aqe.errors import AqeError

    names = [*dict.fromkeys(streams)]
    while True:
        for stream in [*names, DLQ_STREAM]:
            with contextlib.suppress(AqeError):
                head = await log.last_seq(stream)
                if stream == DLQ_STREAM:
                    metrics.dead_letters(head)
                else:
                    metrics.appended(stream, head)
        await asyncio.sleep(interval_s)


def start_exporter(metrics: AqeMetrics, port: int, host: str = "127.0.0.1") -> tuple[str, int]:
    """Serve ``/metrics`` from a daemon thread; returns ``(host, port)`` (port 0 picks one)."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    bound = server.server_address
    return str(bound[0]), int(bound[1])
