"""Hierarchical dispatch: a root routes tasks to groups, elected leaders assign within them.

Workers are split, in id order, into groups of about ``√n``. Every member of a group
campaigns in the group's election (:class:`~aqe.coordination.lease.LeaderElection`, one
lease group per topology epoch); the winner subscribes to the group's core subject
``aqe.work.<fleet>.group.<i>`` and assigns what arrives there to its members with free
slots, claiming for them (``assigned_by`` = the leader) and telling them on their
subjects, as a star coordinator does.

The root (one per fleet) reads pending tasks from the board and routes each to the group
with the most free slots by a core request the leader acknowledges; a group without a
leader does not answer and the root tries another. A task still unclaimed
``reroute_s`` after it was routed (its leader died or was deposed with it queued) is
routed again.

Safety does not rest on the leaders: every claim is conditional on the task's subjects
(:func:`~aqe.coordination.tasks.claim_task`), so two leaders that both believe they lead,
or a task routed twice, still yield one claim. The lease decides *who* assigns; a leader
checks it is still the leader before each claim, and stops at deposition.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable

import msgspec

from aqe.coordination._loads import Loads
from aqe.coordination._runtime import DispatchContext, Dispatcher
from aqe.coordination.bus import BusMessage, Subscription
from aqe.coordination.lease import LeaderElection, Lease
from aqe.coordination.tasks import TaskEntry
from aqe.errors import DeposedError
from aqe.events import Envelope, Event, TaskAbandoned, TaskClaimed, TaskCompleted, TaskSubmitted

__all__ = ["HierarchicalDispatcher", "Route", "split_groups"]

_LEADERLESS_BACKOFF_S = 0.05
_ELECTION_STOP_S = 5.0


def split_groups(agent_ids: list[str], group_size: int | None = None) -> list[tuple[str, ...]]:
    """Agents in id order, cut into groups of ``group_size`` (default about ``√n``, >= 2)."""
    ids = sorted(agent_ids)
    size = group_size or max(2, round(math.sqrt(len(ids))))
    return [tuple(ids[i : i + size]) for i in range(0, len(ids), size)]


class Route(msgspec.Struct, frozen=True, kw_only=True):
    """A task the root hands to a group leader, with the state it was pending in."""

    task: TaskSubmitted
    after_seq: int
    attempt: int


class _Group:
    def __init__(self, ctx: DispatchContext, epoch: int, index: int, members: tuple[str, ...]):
        self.index = index
        self.name = f"g{index}"
        self.members = members
        self.election_group = f"{ctx.fleet}.hierarchical.{epoch}.g{index}"
        self.subject = ctx.subject("group", self.name)
        self.capacity = sum(ctx.worker(m).capacity for m in members)


class _Leadership:
    """One leader's term over its group: the routes it holds and its members' loads."""

    def __init__(self, group: _Group, leader: str, election: LeaderElection, loads: Loads):
        self.group = group
        self.leader = leader
        self.election = election
        self.loads = loads
        self.queue: deque[Route] = deque()
        self.wake = asyncio.Event()
        self.sub: Subscription | None = None
        self.loop: asyncio.Task[None] | None = None


class HierarchicalDispatcher(Dispatcher):
    """A root over groups, each with an elected leader."""

    name = "hierarchical"

    def __init__(self, ctx: DispatchContext, epoch: int) -> None:
        super().__init__(ctx, epoch)
        cut = split_groups([w.agent_id for w in ctx.workers], ctx.config.group_size)
        self.groups = [_Group(ctx, epoch, i, members) for i, members in enumerate(cut)]
        self.root_id = f"root:{ctx.fleet}"
        self._group_of = {m: g.name for g in self.groups for m in g.members}
        self._routes = Loads({g.name: g.capacity for g in self.groups})
        self._routed: dict[str, tuple[float, int]] = {}
        self._leaderless: dict[str, float] = {}
        self._leading: dict[str, _Leadership] = {}
        self._elect_stop = asyncio.Event()
        self._elections: list[asyncio.Task[None]] = []
        self._unlisten: Callable[[], None] | None = None
        self.routed = 0
        self.elections_won = 0

    # -- lifecycle ------------------------------------------------------------------------

    async def _start(self) -> None:
        board = self.ctx.board
        self._routes.seed(board.board, self._group_of)
        self._unlisten = board.listen(self._on_event)
        for group in self.groups:
            for member in group.members:
                election = LeaderElection(
                    self.ctx.log, group.election_group, member, lease_ms=self.ctx.config.lease_ms
                )
                self._elections.append(
                    asyncio.create_task(
                        election.run(
                            self._elect_stop,
                            on_elected=self._on_elected(group, member, election),
                            on_deposed=self._on_deposed(group, member),
                        )
                    )
                )
        self.spawn(self._root())

    async def _stop(self) -> None:
        if self._unlisten is not None:
            self._unlisten()
        self._elect_stop.set()
        for lead in list(self._leading.values()):
            await self._step_down(lead)
        if self._elections:
            _, pending = await asyncio.wait(self._elections, timeout=_ELECTION_STOP_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._elections, return_exceptions=True)

    def _on_event(self, env: Envelope, event: Event, entry: TaskEntry | None) -> None:
        if isinstance(event, TaskCompleted | TaskAbandoned):
            self._routes.done(event.task_id)
            self._routed.pop(event.task_id, None)
            for lead in self._leading.values():
                lead.loads.done(event.task_id)
                lead.wake.set()
        elif isinstance(event, TaskClaimed):
            self._routed.pop(event.task_id, None)

    # -- the root -------------------------------------------------------------------------

    async def _root(self) -> None:
        board = self.ctx.board
        while not self.stopping.is_set():
            now = time.monotonic()
            leaderless = frozenset(g for g, until in self._leaderless.items() if until > now)
            candidates = frozenset(g.name for g in self.groups) - leaderless
            for entry in self.claimable(board.board.pending_entries()):
                routed = self._routed.get(entry.task_id)
                if routed is not None and routed[1] == entry.last_seq and now < routed[0]:
                    continue
                self._routes.done(entry.task_id)  # a re-route frees the old group's slot
                group = self._routes.pick(candidates)
                if group is None:
                    break
                self._routes.add(entry.task_id, group)
                self._routed[entry.task_id] = (now + self.ctx.config.reroute_s, entry.last_seq)
                route = Route(
                    task=entry.submitted(), after_seq=entry.last_seq, attempt=entry.attempt + 1
                )
                self.spawn(self._route(group, route), claim=True)
            await board.changed(0.1 if leaderless else 0.25)

    async def _route(self, group_name: str, route: Route) -> None:
        group = next(g for g in self.groups if g.name == group_name)
        reply = await self.ctx.bus.request(group.subject, msgspec.json.encode(route), 0.5)
        if reply is None:  # no leader yet (or it just died): try again elsewhere soon
            self._routes.done(route.task.task_id)
            self._routed.pop(route.task.task_id, None)
            self._leaderless[group_name] = time.monotonic() + _LEADERLESS_BACKOFF_S
        else:
            self.routed += 1

    # -- leaders --------------------------------------------------------------------------

    def _on_elected(
        self, group: _Group, member: str, election: LeaderElection
    ) -> Callable[[Lease], Awaitable[None]]:
        async def elected(lease: Lease) -> None:
            if self.stopping.is_set():
                return
            loads = Loads({m: self.ctx.worker(m).capacity for m in group.members})
            loads.seed(self.ctx.board.board)
            lead = _Leadership(group, member, election, loads)
            self._leading[group.name] = lead
            self.elections_won += 1
            self._leaderless.pop(group.name, None)

            async def on_route(message: BusMessage) -> None:
                try:
                    route = msgspec.json.decode(message.data, type=Route)
                except msgspec.ValidationError:
                    return
                if self._leading.get(group.name) is not lead or not election.is_leader:
                    return  # not the leader any more: stay silent, the root re-routes
                await message.respond(b"ok")
                lead.queue.append(route)
                lead.wake.set()

            lead.sub = await self.ctx.bus.subscribe(group.subject, on_route)
            lead.loop = self.spawn(self._lead(lead))

        return elected

    def _on_deposed(self, group: _Group, member: str) -> Callable[[DeposedError], Awaitable[None]]:
        async def deposed(error: DeposedError) -> None:
            lead = self._leading.get(group.name)
            if lead is not None and lead.leader == member:
                await self._step_down(lead)

        return deposed

    async def _step_down(self, lead: _Leadership) -> None:
        if self._leading.get(lead.group.name) is lead:
            del self._leading[lead.group.name]
        if lead.sub is not None:
            await lead.sub.unsubscribe()
            lead.sub = None
        if lead.loop is not None and lead.loop is not asyncio.current_task():
            lead.loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lead.loop

    async def _lead(self, lead: _Leadership) -> None:
        board = self.ctx.board.board
        while not self.stopping.is_set() and self._leading.get(lead.group.name) is lead:
            while lead.queue and not self.stopping.is_set():
                live = frozenset(m for m in lead.group.members if not self.ctx.worker(m).down)
                member = lead.loads.pick(live)
                if member is None:
                    break
                route = lead.queue.popleft()
                entry = board.tasks.get(route.task.task_id)
                if entry is not None and entry.last_seq != route.after_seq:
                    continue  # claimed, completed or re-pending since it was routed
                if route.task.task_id in self._claiming:
                    continue
                lead.loads.add(route.task.task_id, member)
                self._claiming.add(route.task.task_id)
                self.spawn(self._assign(lead, route, member), claim=True)
            lead.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lead.wake.wait(), 0.25)

    async def _assign(self, lead: _Leadership, route: Route, member: str) -> None:
        if not lead.election.is_leader:
            self._claiming.discard(route.task.task_id)
            lead.loads.done(route.task.task_id)
            return
        claim = await self.claim(
            route.task,
            after_seq=route.after_seq,
            attempt=route.attempt,
            agent_id=member,
            assigned_by=lead.leader,
            deliver=self.notify,
        )
        if claim is None:
            lead.loads.done(route.task.task_id)
