"""The ring: a token passes agent to agent; its holder claims up to ``k`` pending tasks.

The token is a core NATS request to the next agent's ``aqe.work.<fleet>.ring.<id>``,
which acknowledges it at once; it carries the ring order, the topology epoch and its
identity ``(generation, origin)``.

**Skipping.** A pass nobody acknowledges within ``ring_pass_timeout_s`` (the next agent
is gone) goes to the agent after it, and the passer bumps the generation first, so a
slow agent that wakes up later with the old token holds a copy every agent downstream
has already seen superseded.

**Regeneration.** An agent that has not seen the token for ``token_timeout_s`` (plus a
stagger by its position, so the first agent in ring order goes first) makes a new one of
the next generation: the holder died with it.

**Duplicates are harmless.** Every agent drops a token older than the newest
``(generation, origin)`` it has seen, so extra tokens die out within a lap; until then
two holders may claim at once, which is exactly as safe as one: claims are conditional
on the task's subjects, so no task is claimed twice whatever the tokens do.
"""

from __future__ import annotations

import asyncio
import time
from itertools import islice

import msgspec

from aqe.coordination._runtime import DispatchContext, Dispatcher
from aqe.coordination.bus import BusMessage, Handler, Subscription

__all__ = ["RingDispatcher", "Token"]


class Token(msgspec.Struct, frozen=True, kw_only=True):
    """The ring's token; ``(generation, origin)`` orders copies, the newest wins."""

    epoch: int
    generation: int
    origin: str
    order: tuple[str, ...]
    hops: int = 0
    idle: int = 0
    """Consecutive holders that claimed nothing (a full idle lap slows the token down)."""

    @property
    def key(self) -> tuple[int, str]:
        """The identity copies are compared by."""
        return (self.generation, self.origin)


class RingDispatcher(Dispatcher):
    """Token ring over the fleet's workers in id order."""

    name = "ring"

    def __init__(self, ctx: DispatchContext, epoch: int) -> None:
        super().__init__(ctx, epoch)
        self.order = tuple(sorted(w.agent_id for w in ctx.workers))
        self._best: dict[str, tuple[int, str]] = {}
        self._seen_at = dict.fromkeys(self.order, time.monotonic())
        self._subs: list[Subscription] = []
        n = len(self.order)
        # An idle lap holds the token ring_hold_s per agent: never time out on that.
        self.token_timeout_s = max(ctx.config.token_timeout_s, 4 * n * ctx.config.ring_hold_s)
        self.passes = 0
        self.skips = 0
        self.dropped = 0
        self.regenerated = 0

    async def _start(self) -> None:
        for agent in self.order:
            self._subs.append(
                await self.ctx.bus.subscribe(self.ctx.subject("ring", agent), self._handler(agent))
            )
        for position, agent in enumerate(self.order):
            self.spawn(self._watchdog(agent, position))
        first = self.order[0]
        self._receive(first, Token(epoch=self.epoch, generation=1, origin=first, order=self.order))

    async def _stop(self) -> None:
        for sub in self._subs:
            await sub.unsubscribe()
        self._subs.clear()

    def _handler(self, agent: str) -> Handler:
        async def on_token(message: BusMessage) -> None:
            await message.respond(b"ok")
            try:
                token = msgspec.json.decode(message.data, type=Token)
            except msgspec.ValidationError:
                return
            self._receive(agent, token)

        return on_token

    def _receive(self, agent: str, token: Token) -> bool:
        """Take the token at ``agent`` unless it is stale; whether it was taken."""
        if self.stopping.is_set() or token.epoch != self.epoch:
            return False
        best = self._best.get(agent)
        if best is not None and token.key < best:
            self.dropped += 1
            return False
        self._best[agent] = token.key
        self._seen_at[agent] = time.monotonic()
        self.spawn(self._hold(agent, token))
        return True

    async def _hold(self, agent: str, token: Token) -> None:
        config = self.ctx.config
        worker = self.ctx.worker(agent)
        board = self.ctx.board
        idle_lap = token.idle >= len(token.order)
        claims: list[asyncio.Task[object]] = []
        free = worker.free
        if free > 0:
            picks = list(
                islice(self.claimable(board.board.pending_entries()), min(config.ring_batch, free))
            )
            if not picks and idle_lap:
                await board.changed(config.ring_hold_s)
                picks = list(
                    islice(
                        self.claimable(board.board.pending_entries()), min(config.ring_batch, free)
                    )
                )
            for entry in picks:
                if self.stopping.is_set():
                    break
                claims.append(self.spawn_claim(entry, agent_id=agent, assigned_by=agent))
        elif idle_lap:
            await worker.wait_free(config.ring_hold_s)
        results = await asyncio.gather(*claims, return_exceptions=True)
        if self.stopping.is_set() or self._best.get(agent) != token.key:
            return  # drained, or a newer token went past while we held this one
        claimed = sum(1 for r in results if r is not None and not isinstance(r, BaseException))
        nxt = msgspec.structs.replace(
            token, hops=token.hops + 1, idle=0 if claimed else token.idle + 1
        )
        await self._pass(agent, nxt)

    async def _pass(self, agent: str, token: Token) -> None:
        order = token.order
        start = order.index(agent) if agent in order else 0
        data = msgspec.json.encode(token)
        for step in range(1, len(order)):
            if self.stopping.is_set():
                return
            nxt = order[(start + step) % len(order)]
            subject = self.ctx.subject("ring", nxt)
            if (
                await self.ctx.bus.request(subject, data, self.ctx.config.ring_pass_timeout_s)
                is not None
            ):
                self.passes += 1
                return
            # Nobody answered: skip it, superseding any copy it might still act on.
            self.skips += 1
            token = msgspec.structs.replace(token, generation=token.generation + 1, origin=agent)
            self._best[agent] = token.key
            data = msgspec.json.encode(token)
        # Alone in the ring (or everyone else is gone): keep the token.
        await asyncio.sleep(self.ctx.config.ring_hold_s)
        self._receive(agent, token)

    async def _watchdog(self, agent: str, position: int) -> None:
        timeout = self.token_timeout_s * (1 + 0.25 * position)
        while not self.stopping.is_set():
            await asyncio.sleep(self.token_timeout_s / 4)
            if time.monotonic() - self._seen_at[agent] < timeout:
                continue
            # Only this agent's own knowledge: the newest token it has seen.
            generation = self._best.get(agent, (0, ""))[0] + 1
            self.regenerated += 1
            self._receive(
                agent,
                Token(epoch=self.epoch, generation=generation, origin=agent, order=self.order),
            )
