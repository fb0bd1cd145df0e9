"""The dashboard's live state: projections folded in memory while following the log.

:class:`LiveView` starts the projections of :data:`FOLDED` (history, membership,
experience, coverage, perf: those installed) from their saved snapshots (read, never
written: the dashboard is a reader), follows their streams and ``AQE_WORKFLOWS`` with
ordered consumers from the earliest checkpoint + 1, and folds every event with the
projections' own pure ``apply``; workflow instances are folded by the engine's
``apply_instance``. ``AQE_COORD`` is followed for its counts only. Each event bumps
:attr:`LiveView.version` and wakes the server-sent-event streams, which send the views
computed from the new state.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from aqe.errors import AqeError, EventDecodeError
from aqe.report.html import card_html
from aqe.report.model import Figure, Section, Table

if TYPE_CHECKING:
    from aqe.coordination.lease import Lease
    from aqe.log.port import EventLog
    from aqe.metrics import AqeMetrics
    from aqe.projections.base import Projection
    from aqe.report.fleet_views import Proposal
    from aqe.workflows.engine import Instance

__all__ = ["FOLDED", "FOLLOWED", "LiveView"]

FOLDED = ("history", "membership", "experience", "coverage", "perf")
"""Projections the dashboard folds in memory (each from its saved snapshot, if any)."""

FOLLOWED = (
    "AQE_TESTS",
    "AQE_AGENTS",
    "AQE_WORKFLOWS",
    "AQE_COORD",
    "AQE_LEARNING",
    "AQE_COVERAGE",
    "AQE_PERF",
)
"""Streams the dashboard follows: the folded projections', the workflows', and
``AQE_COORD`` (counted only)."""

_PROJECTION = "dashboard"
"""The projection label of the dashboard's own folds in the metrics."""


class _Fold:
    """One projection folded in memory: its state and, per stream, the last sequence in it."""

    def __init__(self, projection: Projection[Any], root: Path | None) -> None:
        from aqe.projections import SnapshotStore

        self.projection = projection
        self.checkpoints = dict.fromkeys(projection.streams, 0)
        if root is not None and (root / projection.name).exists():
            snap = SnapshotStore(projection, root / projection.name).load()
            self.state: Any = snap.state
            self.checkpoints.update({s: snap.checkpoints.get(s, 0) for s in projection.streams})
        else:
            self.state = projection.initial()

    def apply(self, env: Any, event: Any) -> None:
        if env.seq <= self.checkpoints.get(env.stream, env.seq):
            return  # in the snapshot already (another fold's start is further back)
        # An event the fold refuses is parked by the projections' runner; the view keeps
        # the state as it was (a fold validates before it mutates).
        with contextlib.suppress(Exception):
            self.state = self.projection.apply(self.state, env, event)
        self.checkpoints[env.stream] = env.seq


class _CoordFold:
    """Leases, the task board and proposals, folded from ``AQE_COORD`` with their own folds."""

    def __init__(self) -> None:
        from aqe.coordination.tasks import TaskBoard

        self.leases: dict[str, Lease] = {}
        self.board = TaskBoard()
        self.proposals: dict[str, Proposal] = {}
        self.first_seq = 0

    def apply(self, env: Any, event: Any) -> None:
        from aqe.coordination.lease import LEASE_PREFIX, lease_from
        from aqe.events import ProposalOpened, VoteCast
        from aqe.report.fleet_views import Proposal

        self.first_seq = self.first_seq or env.seq
        with contextlib.suppress(Exception):  # an anomaly leaves the view as it was
            if env.subject.startswith(LEASE_PREFIX + "."):
                lease = lease_from(env)
                if lease is not None:
                    self.leases[lease.group] = lease
            elif env.subject.startswith("aqe.coord.task."):
                self.board.apply(env, event)
            elif isinstance(event, ProposalOpened):
                self.proposals.setdefault(
                    event.proposal_id,
                    Proposal(question=event.question, mode=event.mode, voters=len(event.voters)),
                )
            elif isinstance(event, VoteCast) and event.proposal_id in self.proposals:
                votes = self.proposals[event.proposal_id].votes
                votes[event.choice] = votes.get(event.choice, 0) + 1


class LiveView:
    """Folds the followed streams in memory and tells waiters when something changed."""

    def __init__(
        self,
        log: EventLog,
        projections_root: Path | None,
        metrics: AqeMetrics | None = None,
        *,
        bridge_status: Path | None = None,
    ) -> None:
        from aqe.projections import get_projection

        self._log = log
        self._metrics = metrics
        self._bridge_status = bridge_status
        self.folds: dict[str, _Fold] = {}
        for name in FOLDED:
            try:
                projection = get_projection(name)
            except (AqeError, ImportError):
                continue  # a capability this installation does not have
            self.folds[name] = _Fold(projection, projections_root)
        self.instances: dict[str, Instance] = {}
        self.coord = _CoordFold()
        # Each stream is read from the earliest start of the folds that read it.
        self.last_seq: dict[str, int] = {}
        for stream in FOLLOWED:
            starts = [f.checkpoints[stream] for f in self.folds.values() if stream in f.checkpoints]
            self.last_seq[stream] = min(starts, default=0)
        self.events_seen = 0
        self.last_event = ""
        self.last_event_at = 0.0
        self.version = 0
        self.closed = False
        """Set when the server stops: event streams end instead of waiting."""
        self._changed = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []

    def state(self, name: str) -> Any:
        """A folded projection's state (None when it is not folded here)."""
        fold = self.folds.get(name)
        return None if fold is None else fold.state

    def checkpoint(self, name: str, stream: str) -> int:
        """The last sequence of ``stream`` in projection ``name``'s state."""
        fold = self.folds.get(name)
        return 0 if fold is None else fold.checkpoints.get(stream, 0)

    # -- following -------------------------------------------------------------------

    def start(self) -> None:
        """Start following every stream (tasks end with :meth:`stop`)."""
        for stream in FOLLOWED:
            self._tasks.append(asyncio.create_task(self._follow(stream), name=f"follow {stream}"))
            if self._metrics is not None:
                self._metrics.checkpoint(_PROJECTION, stream, self.last_seq[stream])

    async def stop(self) -> None:
        """Cancel the followers."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    async def _follow(self, stream: str) -> None:
        while True:
            try:
                async for env in self._log.read(
                    stream, after_seq=self.last_seq[stream], follow=True
                ):
                    await self._apply(stream, env)
            except AqeError:
                # The stream is missing (not created yet) or the server went away: retry.
                await asyncio.sleep(1.0)

    async def _apply(self, stream: str, env: Any) -> None:
        from aqe.workflows._store import fact_of
        from aqe.workflows.engine import apply_instance

        try:
            event = env.decode()
        except EventDecodeError:
            event = None  # the projections' runner parks it; the dashboard only counts it
        if event is not None:
            for fold in self.folds.values():
                if stream in fold.checkpoints:
                    fold.apply(env, event)
            if stream == "AQE_COORD":
                self.coord.apply(env, event)
            if stream == "AQE_WORKFLOWS":
                fact = fact_of(env)
                instance_id = getattr(event, "instance_id", None)
                if fact is not None and isinstance(instance_id, str):
                    folded = apply_instance(self.instances.get(instance_id), fact)
                    if folded is not None:
                        self.instances[instance_id] = folded
        self.last_seq[stream] = env.seq
        self.events_seen += 1
        self.last_event = f"{env.event_type} at {stream} seq {env.seq}"
        self.last_event_at = time.time()
        if self._metrics is not None:
            self._metrics.folded(_PROJECTION, stream, env.seq)
            if stream == "AQE_WORKFLOWS":
                self._metrics.workflows(self.workflow_counts())
        async with self._changed:
            self.version += 1
            self._changed.notify_all()

    async def wait_change(self, after: int, timeout_s: float) -> int:
        """Wait until :attr:`version` passes ``after`` (or the timeout, or :meth:`close`)."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.closed or self.version > after), timeout_s
                )
            return self.version

    async def close(self) -> None:
        """End every event stream (waiters wake at once and see :attr:`closed`)."""
        async with self._changed:
            self.closed = True
            self._changed.notify_all()

    # -- views -----------------------------------------------------------------------

    def workflow_counts(self) -> dict[tuple[str, str], int]:
        """Instances per ``(workflow, state)``."""
        return dict(Counter((i.workflow, i.status or "running") for i in self.instances.values()))

    def sections(self) -> list[Section]:
        """The dashboard's views of the current state (the report's, plus the fleet)."""
        from aqe.report.fleet_views import (
            coordination_tables,
            fleet_section,
            learning_section,
            workflows_section,
        )
        from aqe.report.quality_views import coverage_section, perf_section
        from aqe.report.tests_views import history_sections

        sections = history_sections(
            self.state("history"), self.checkpoint("history", "AQE_TESTS"), None
        )
        optional = [
            workflows_section(
                self.instances, 1 if self.instances else 0, self.last_seq["AQE_WORKFLOWS"]
            ),
        ]
        if self.state("experience") is not None:
            optional.append(
                learning_section(
                    self.state("experience"), self.checkpoint("experience", "AQE_LEARNING")
                )
            )
        if self.state("coverage") is not None:
            optional.append(
                coverage_section(self.state("coverage"), dict(self.folds["coverage"].checkpoints))
            )
        if self.state("perf") is not None:
            optional.append(perf_section(self.state("perf"), self.checkpoint("perf", "AQE_PERF")))
        sections.extend(s for s in optional if s is not None)
        coord = coordination_tables(
            self.coord.leases,
            self.coord.board,
            self.coord.proposals,
            self.coord.first_seq,
            self.last_seq["AQE_COORD"],
        )
        sections.append(
            fleet_section(
                self.state("membership"),
                self.checkpoint("membership", "AQE_AGENTS"),
                [*coord, *self._bridge_tables()],
            )
        )
        return sections

    def refresh_bridge(self) -> dict[str, Any]:
        """Read the bridge node's status snapshot and export its links' lag and RTT.

        Raises:
            BridgeError: there is no snapshot (or it is not one); the message names it.
        """
        from aqe.bridge.status import read_snapshot

        assert self._bridge_status is not None  # noqa: S101 - callers check
        snapshot = read_snapshot(self._bridge_status)
        if self._metrics is not None:
            self._metrics.bridge(snapshot)
        return snapshot

    def _bridge_tables(self) -> list[Table]:
        if self._bridge_status is None:
            return []
        from aqe.bridge.status import link_views
        from aqe.report.model import Source

        try:
            snapshot = self.refresh_bridge()
        except AqeError as exc:
            return [
                Table(
                    key="bridge-links",
                    title="Bridge links",
                    source=Source(events=(), stream="status.json", first_seq=0, last_seq=0),
                    columns=[],
                    rows=[],
                    note=str(exc),
                )
            ]
        views = link_views(snapshot)
        return [
            Table(
                key="bridge-links",
                title=f"Bridge links ({len(views)})",
                source=Source(
                    events=("bridge node status snapshot",),
                    stream=str(self._bridge_status),
                    first_seq=0,
                    last_seq=0,
                ),
                columns=[
                    "peer",
                    "address",
                    "connected",
                    "lag events",
                    "lag ms",
                    "in flight",
                    "acked",
                ],
                rows=[
                    [
                        v.peer,
                        v.address,
                        "yes" if v.connected else "no",
                        f"{v.lag_events:,}",
                        f"{v.lag_ms:.0f}",
                        f"{v.in_flight:,}",
                        f"{v.events_acked:,}",
                    ]
                    for v in views
                ],
            )
        ]

    def payload(self, sent: dict[str, bytes] | None = None) -> bytes:
        """One update for the page: counters and every section's cards and figures.

        Args:
            sent: What this page was sent before, by item key (updated in place): items
                whose encoding did not change since are left out, so the page redraws
                only what moved.
        """
        sections = []
        for section in self.sections():
            items = []
            for item in section.items:
                entry: dict[str, Any] = {
                    "key": item.key,
                    "kind": "figure" if isinstance(item, Figure) else "table",
                    "html": card_html(item),
                }
                if isinstance(item, Figure):
                    entry["data"] = item.data
                    entry["layout"] = item.layout
                encoded = msgspec.json.encode(entry)
                if sent is not None:
                    if sent.get(item.key) == encoded:
                        continue
                    sent[item.key] = encoded
                items.append(msgspec.Raw(encoded))
            sections.append({"key": section.key, "title": section.title, "items": items})
        return msgspec.json.encode(
            {
                "version": self.version,
                "events": self.events_seen,
                "last_seq": self.last_seq,
                "last_event": self.last_event,
                "sections": sections,
            }
        )
