"""Task dispatch under four topologies, and the fleet that switches between them.

Tasks and outcomes are events (:mod:`aqe.coordination.tasks`); how a pending task becomes
a claim is the topology's business, behind one interface, :class:`Dispatcher`
(``start()``, ``drain()``, ``name``):

* **star** (:class:`StarDispatcher`): one coordinator reads pending tasks from the board,
  picks the agent with the most free slots, claims for it (``assigned_by`` = the
  coordinator) and tells it on ``aqe.work.<fleet>.agent.<id>``;
* **mesh** (:class:`MeshDispatcher`): peers pull from one durable JetStream pull consumer on
  ``AQE_COORD`` filtered to ``aqe.coord.task.*.submitted`` and ``*.abandoned`` (each message
  goes to one puller), claim for themselves and ack;
* **ring** (:class:`~aqe.coordination._ring.RingDispatcher`): a token passes agent to agent
  over core NATS; its holder claims up to ``k`` pending tasks, then passes it on;
* **hierarchical** (:class:`~aqe.coordination._hierarchical.HierarchicalDispatcher`): a root
  routes tasks to groups whose elected leaders assign them to members.

Whatever the topology, a claim is conditional on the task's subjects, so at most one claim
per attempt is stored and a worker runs a task only after its own claim is. That one rule
is why a fleet can switch topologies under load (:class:`Fleet`): it drains the old
dispatcher (no new claims; claims in flight finish and reach their workers; running tasks
go on), starts the new one, and the new one picks up whatever is still pending. Even a
claimer of the old topology that has not heard of the switch cannot make a task run twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Final

import msgspec

from aqe.coordination._hierarchical import HierarchicalDispatcher
from aqe.coordination._loads import Loads
from aqe.coordination._ring import RingDispatcher
from aqe.coordination._runtime import (
    DispatchConfig,
    DispatchContext,
    Dispatcher,
    Follower,
    LiveBoard,
    TaskHandler,
    Worker,
    subscribe_worker,
)
from aqe.coordination.bus import Bus, Subscription, WorkItem, WorkQueue
from aqe.coordination.lease import LeaderElection
from aqe.coordination.tasks import COORD_STREAM, Claim, TaskEntry
from aqe.coordination.topology import (
    DEFAULT_MODEL,
    DEFAULT_POLICY,
    CostModel,
    Decision,
    Hysteresis,
    measure,
    select,
    selection_event,
    topology_subject,
)
from aqe.errors import ConcurrencyError, EventDecodeError, LogError
from aqe.events import (
    Envelope,
    Event,
    TaskAbandoned,
    TaskCompleted,
    TaskSubmitted,
    TopologySelected,
)
from aqe.events.coordination import Topology
from aqe.log.port import AppendResult, EventLog

__all__ = [
    "DISPATCHERS",
    "AutoSelect",
    "DispatchConfig",
    "DispatchContext",
    "Dispatcher",
    "Fleet",
    "HierarchicalDispatcher",
    "LiveBoard",
    "MeshDispatcher",
    "RingDispatcher",
    "StarDispatcher",
    "SwitchRecord",
    "TaskHandler",
    "Worker",
    "record_topology",
]

_log = logging.getLogger("aqe.coordination.dispatch")

MESH_SUBJECTS: Final = ("aqe.coord.task.*.submitted", "aqe.coord.task.*.abandoned")
"""What mesh peers pull: a task becoming claimable."""


# -- star -----------------------------------------------------------------------------------


class StarDispatcher(Dispatcher):
    """One coordinator assigns every task to the agent with the most free slots.

    With ``DispatchConfig.star_lease`` (the default) the coordinator holds a lease
    (:class:`~aqe.coordination.lease.LeaderElection`, one group per epoch) and assigns
    only while it leads, so fleets running in several processes have one coordinator at
    a time. The lease decides *who* coordinates; exactly-once does not rest on it: a
    deposed coordinator's late claim is still conditional on the task, so it is either
    refused or the one claim the task gets.
    """

    name = "star"

    def __init__(self, ctx: DispatchContext, epoch: int) -> None:
        super().__init__(ctx, epoch)
        self.coordinator = f"star:{ctx.fleet}:{uuid.uuid4().hex[:6]}"
        self._loads = Loads({w.agent_id: w.capacity for w in ctx.workers})
        self._unlisten: Callable[[], None] | None = None
        self._election: LeaderElection | None = None
        self._elect_stop = asyncio.Event()
        self._campaign: asyncio.Task[None] | None = None

    async def _start(self) -> None:
        self._loads.seed(self.ctx.board.board)
        self._unlisten = self.ctx.board.listen(self._on_event)
        if self.ctx.config.star_lease:
            self._election = LeaderElection(
                self.ctx.log,
                f"{self.ctx.fleet}.star.{self.epoch}",
                self.coordinator,
                lease_ms=self.ctx.config.lease_ms,
            )
            self._campaign = asyncio.create_task(self._election.run(self._elect_stop))
        self.spawn(self._assign_loop())

    async def _stop(self) -> None:
        if self._unlisten is not None:
            self._unlisten()
        if self._campaign is not None:
            self._elect_stop.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._campaign), 5.0)
            except (TimeoutError, LogError):
                self._campaign.cancel()
                with contextlib.suppress(asyncio.CancelledError, LogError):
                    await self._campaign

    @property
    def leading(self) -> bool:
        """Whether this coordinator may assign now (it holds the lease, or needs none)."""
        return self._election is None or self._election.is_leader

    def _on_event(self, env: Envelope, event: Event, entry: TaskEntry | None) -> None:
        if isinstance(event, TaskCompleted | TaskAbandoned):
            self._loads.done(event.task_id)

    async def _assign_loop(self) -> None:
        board = self.ctx.board
        while not self.stopping.is_set():
            if not self.leading:
                await asyncio.sleep(0.02)
                continue
            live = frozenset(w.agent_id for w in self.ctx.workers if not w.down)
            for entry in self.claimable(board.board.pending_entries()):
                agent = self._loads.pick(live)
                if agent is None:
                    break
                self._loads.add(entry.task_id, agent)
                claiming = self.spawn_claim(
                    entry, agent_id=agent, assigned_by=self.coordinator, deliver=self.notify
                )
                claiming.add_done_callback(self._settled(entry.task_id))
            await board.changed(0.25)

    def _settled(self, task_id: str) -> Callable[[asyncio.Task[Any]], None]:
        def settled(claiming: asyncio.Task[Any]) -> None:
            if (
                claiming.cancelled()
                or claiming.exception() is not None
                or claiming.result() is None
            ):
                self._loads.done(task_id)

        return settled


# -- mesh -----------------------------------------------------------------------------------


def mesh_queue_name(fleet: str, epoch: int) -> str:
    """The durable consumer of one mesh epoch (a name any server accepts)."""
    digest = hashlib.sha256(fleet.encode()).hexdigest()[:12]
    return f"aqe-mesh-{digest}-{epoch}"


class MeshDispatcher(Dispatcher):
    """Peers pull claimable task messages from one work queue and claim for themselves."""

    name = "mesh"

    def __init__(self, ctx: DispatchContext, epoch: int) -> None:
        super().__init__(ctx, epoch)
        self.queue_name = mesh_queue_name(ctx.fleet, epoch)
        self._pullers: list[WorkQueue] = []
        self._taking: dict[str, int] = {w.agent_id: 0 for w in ctx.workers}
        self._took = {w.agent_id: asyncio.Event() for w in ctx.workers}
        self.skipped = 0

    async def _start(self) -> None:
        board = self.ctx.board.board
        # From the oldest message that may still be claimable: nothing pending is missed,
        # and what the board has not seen yet starts after applied_seq anyway.
        start = min((e.last_seq for e in board.pending_entries()), default=board.applied_seq + 1)
        await self.ctx.bus.create_work_queue(
            COORD_STREAM,
            self.queue_name,
            MESH_SUBJECTS,
            start_seq=min(start, board.applied_seq + 1),
            ack_wait_s=self.ctx.config.mesh_ack_wait_s,
        )
        for worker in self.ctx.workers:
            puller = await self.ctx.bus.open_work_queue(COORD_STREAM, self.queue_name)
            self._pullers.append(puller)
            self.spawn(self._peer(worker, puller))

    async def _stop(self) -> None:
        for puller in self._pullers:
            await puller.close()
        self._pullers.clear()
        with contextlib.suppress(LogError):
            await self.ctx.bus.delete_work_queue(COORD_STREAM, self.queue_name)

    async def _peer(self, worker: Worker, puller: WorkQueue) -> None:
        timeout = self.ctx.config.mesh_fetch_timeout_s
        agent = worker.agent_id
        while not self.stopping.is_set():
            free = worker.free - self._taking[agent]
            if free <= 0:
                if self._taking[agent]:  # our own claims in flight hold the slots
                    self._took[agent].clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._took[agent].wait(), timeout)
                else:
                    await worker.wait_free(timeout)
                continue
            try:
                items = await puller.fetch(free, timeout)
            except LogError as exc:
                _log.info("%s: fetch failed: %s", self, exc)
                await asyncio.sleep(timeout)
                continue
            for item in items:
                self._taking[agent] += 1
                self.spawn(self._take(worker, item), claim=True)

    async def _take(self, worker: Worker, item: WorkItem) -> None:
        try:
            await self._claim_item(worker, item.envelope)
        finally:
            self._taking[worker.agent_id] -= 1
            self._took[worker.agent_id].set()
        with contextlib.suppress(LogError):
            await item.ack()

    async def _claim_item(self, worker: Worker, env: Envelope) -> None:
        if self.stopping.is_set():
            return
        try:
            event = env.decode()
        except EventDecodeError:
            return
        live = self.ctx.board
        if isinstance(event, TaskAbandoned):
            await live.reach(env.seq, 5.0)
        entry = live.board.tasks.get(getattr(event, "task_id", ""))
        if live.board.applied_seq >= env.seq and (
            entry is None or entry.status != "pending" or entry.last_seq != env.seq
        ):
            self.skipped += 1  # claimed (or completed) since: nothing to do
            return
        if isinstance(event, TaskSubmitted):
            task, attempt = event, 1
        elif isinstance(event, TaskAbandoned) and entry is not None:
            task, attempt = entry.submitted(), event.attempt + 1
        else:
            return
        await self.claim(task, after_seq=env.seq, attempt=attempt, agent_id=worker.agent_id)


DISPATCHERS: Final[dict[Topology, type[Dispatcher]]] = {
    "star": StarDispatcher,
    "mesh": MeshDispatcher,
    "ring": RingDispatcher,
    "hierarchical": HierarchicalDispatcher,
}


# -- recording a topology -----------------------------------------------------------------------


async def record_topology(
    log: EventLog, event: TopologySelected, *, expected_epoch: int | None
) -> AppendResult:
    """Record a topology decision; conditional on the fleet's current epoch when given.

    The event id names the epoch it follows, so star → mesh → star records three facts
    while a retried append of one of them is stored once.

    Raises:
        ConcurrencyError: another decision was recorded after ``expected_epoch``.
    """
    subject = topology_subject(event.fleet)
    after = expected_epoch if expected_epoch is not None else await log.last_subject_seq(subject)
    event_id = f"topology-{hashlib.sha256(event.fleet.encode()).hexdigest()[:12]}-{after}"
    return await log.append(event, event_id=f"{event_id}-{event.topology}", expected_last_seq=after)


# -- the fleet ---------------------------------------------------------------------------------


class SwitchRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One topology change the fleet made."""

    epoch: int
    topology: Topology
    previous: Topology | None
    drain_ms: float
    """How long the old dispatcher took to stop claiming and settle its claims."""
    start_ms: float


class AutoSelect(msgspec.Struct, frozen=True, kw_only=True):
    """Let the fleet choose its own topology from measured signals, every ``interval_s``."""

    interval_s: float = 5.0
    window_s: float = 60.0
    model: CostModel = DEFAULT_MODEL
    policy: Hysteresis = DEFAULT_POLICY
    min_claims: int = 20
    """Decide only once this many claims were measured in the window."""


class Fleet:
    """Workers plus the dispatcher of the topology in force, switching when it changes.

    The topology in force is the fleet's last :class:`TopologySelected` (its sequence is
    the epoch); with none, ``initial`` at epoch 0. The fleet follows those events, so a
    decision recorded by anyone (``aqe topology select --record``, :meth:`select`, the
    fleet's own :class:`AutoSelect`) switches every process running the fleet.

    Args:
        log: the event log.
        bus: core messaging and work queues.
        workers: the fleet's in-process agents.
        fleet: the fleet's name (subjects and topology decisions are per fleet).
        config: topology tunables.
        initial: the topology before any decision is recorded.
        auto: choose topologies from measured signals (None: only follow decisions).
    """

    def __init__(
        self,
        log: EventLog,
        bus: Bus,
        workers: Sequence[Worker],
        *,
        fleet: str = "default",
        config: DispatchConfig | None = None,
        initial: Topology = "star",
        auto: AutoSelect | None = None,
    ) -> None:
        self.log = log
        self.bus = bus
        self.board = LiveBoard(log)
        self.ctx = DispatchContext(fleet, log, bus, self.board, workers, config or DispatchConfig())
        self.initial: Topology = initial
        self.auto = auto
        self.dispatcher: Dispatcher | None = None
        self.epoch = 0
        self.switches: list[SwitchRecord] = []
        self.decisions: list[Decision] = []
        self._subs: list[Subscription] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._switching = asyncio.Lock()
        self._epoch_changed = asyncio.Event()
        self._unseen: dict[tuple[str, int], float] = {}
        self._decisions: Follower | None = None

    @property
    def fleet(self) -> str:
        """The fleet's name."""
        return self.ctx.fleet

    @property
    def workers(self) -> tuple[Worker, ...]:
        """The fleet's workers."""
        return self.ctx.workers

    @property
    def topology(self) -> Topology | None:
        """The topology dispatching now."""
        return self.dispatcher.name if self.dispatcher is not None else None

    async def start(self) -> None:
        """Catch up with the log, start the topology in force and follow decisions."""
        await self.board.start()
        await self.board.catch_up()
        for worker in self.workers:
            self._subs.append(await subscribe_worker(self.ctx, worker))
        last = await self.log.last(topology_subject(self.fleet))
        topology: Topology = self.initial
        epoch = 0
        if last is not None:
            event = last.decode()
            if isinstance(event, TopologySelected):
                topology, epoch = event.topology, last.seq
        await self._switch(topology, epoch)
        self._decisions = Follower(
            self.log, topology_subject(self.fleet), self._on_decision, after_seq=epoch
        )
        self._decisions.start()
        self._tasks.append(asyncio.create_task(self._reconcile()))
        if self.auto is not None:
            self._tasks.append(asyncio.create_task(self._auto_select(self.auto)))

    async def stop(self, *, wait_workers: bool = True) -> None:
        """Drain the dispatcher, let running tasks finish (unless told not to), let go."""
        if self._decisions is not None:
            await self._decisions.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        async with self._switching:
            if self.dispatcher is not None:
                await self.dispatcher.drain()
        if wait_workers:
            for worker in self.workers:
                await worker.drain()
        for sub in self._subs:
            await sub.unsubscribe()
        self._subs.clear()
        await self.board.stop()

    async def __aenter__(self) -> Fleet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- switching ------------------------------------------------------------------------

    async def select(
        self,
        topology: Topology,
        *,
        reasons: Sequence[str] = (),
        signals: dict[str, float] | None = None,
    ) -> AppendResult:
        """Record a decision for this fleet (conditional on the epoch it saw); it switches.

        Raises:
            ConcurrencyError: another decision was recorded first.
        """
        event = TopologySelected(
            fleet=self.fleet,
            topology=topology,
            previous=self.topology,
            signals=signals or {},
            reasons=tuple(reasons),
        )
        return await record_topology(self.log, event, expected_epoch=self.epoch)

    async def wait_epoch(self, epoch: int, timeout_s: float = 10.0) -> bool:
        """Wait until the fleet runs epoch ``epoch`` (or a later one)."""
        deadline = time.monotonic() + timeout_s
        while self.epoch < epoch:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._epoch_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._epoch_changed.wait(), left)
        return True

    async def _switch(self, topology: Topology, epoch: int) -> None:
        async with self._switching:
            if epoch < self.epoch:
                return
            previous = self.topology
            began = time.perf_counter()
            if self.dispatcher is not None:
                await self.dispatcher.drain()
            drained = time.perf_counter()
            dispatcher = DISPATCHERS[topology](self.ctx, epoch)
            try:
                await dispatcher.start()
            except BaseException:
                # Half started (the server failing over): undo; the decision is retried.
                with contextlib.suppress(LogError):
                    await dispatcher.drain()
                raise
            self.dispatcher = dispatcher
            self.epoch = epoch
            self.switches.append(
                SwitchRecord(
                    epoch=epoch,
                    topology=topology,
                    previous=previous,
                    drain_ms=(drained - began) * 1000,
                    start_ms=(time.perf_counter() - drained) * 1000,
                )
            )
            self._epoch_changed.set()
            _log.info("fleet %s: %s -> %s (epoch %d)", self.fleet, previous, topology, epoch)

    async def _on_decision(self, env: Envelope) -> None:
        try:
            event = env.decode()
        except EventDecodeError:
            return
        if isinstance(event, TopologySelected):
            await self._switch(event.topology, env.seq)

    async def _reconcile(self) -> None:
        """Run claims a worker holds in the log but was never told about (lost notices)."""
        grace = self.ctx.config.notify_grace_s
        board = self.board.board
        while True:
            await asyncio.sleep(grace / 2)
            now = time.monotonic()
            seen: set[tuple[str, int]] = set()
            for worker in self.workers:
                for task_id in list(board.by_agent.get(worker.agent_id, ())):
                    entry = board.tasks[task_id]
                    key = (task_id, entry.attempt)
                    if worker.has_accepted(*key):
                        continue
                    seen.add(key)
                    first = self._unseen.setdefault(key, now)
                    if now - first >= grace:
                        worker.accept(_claim_of(entry))
            self._unseen = {k: v for k, v in self._unseen.items() if k in seen}

    async def _auto_select(self, auto: AutoSelect) -> None:
        previous: Decision | None = None
        while True:
            await asyncio.sleep(auto.interval_s)
            signals = measure(self.board.board, agents=len(self.workers), window_s=auto.window_s)
            if signals.claims < auto.min_claims:
                continue
            decision = select(
                signals, self.topology, previous, model=auto.model, policy=auto.policy
            )
            self.decisions.append(decision)
            previous = decision
            if decision.switch and decision.topology != self.topology:
                try:
                    await record_topology(
                        self.log, selection_event(self.fleet, decision), expected_epoch=self.epoch
                    )
                except ConcurrencyError:
                    continue  # someone recorded a decision first; follow theirs
                except LogError as exc:
                    _log.info("fleet %s: could not record a decision: %s", self.fleet, exc)


def _claim_of(entry: TaskEntry) -> Claim:
    """The stored claim an entry shows (for a worker that was not told)."""
    if entry.agent is None or entry.topology is None:
        raise ValueError(f"task {entry.task_id} is not claimed")
    return Claim(
        task=entry.submitted(),
        agent_id=entry.agent,
        attempt=entry.attempt,
        seq=entry.claim_seq,
        epoch=entry.epoch,
        topology=entry.topology,
        assigned_by=entry.assigned_by,
    )
