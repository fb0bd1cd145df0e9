"""The target side of a link: apply a chain's data frames to the local streams, once.

One :meth:`TargetSide.handle` call serves one stream a peer opened. A data stream
(``Open`` first) carries one chain; the chain's state is not kept in memory but read
back from the target's own stream: the last :class:`~aqe.events.BridgeApplied` marker
on the chain's marker subject. Each batch of copies is stored in ONE atomic batch with
a new marker, conditional on the previous marker still being the chain's last, so two
streams applying the same chain (a ghost of a dropped connection, a relay, a second
link) can never both store an event: the loser re-reads the marker and goes on. A
batch is whatever arrived while the previous one was being stored (``Data`` frames
and the events of ``DataBatch`` frames alike), up to ``max_batch`` events.

A peer's identity is the cluster name its verified certificate carries
(``stream.peer``). A peer may open only chains of its own origin, except a peer this
cluster trusts as a relay (``relays_from``), which may also open chains of third
clusters to repair a gap (anti-entropy). Any other ``Open`` naming a foreign origin is
refused with an ``Error`` frame (code ``untrusted-relay``) before anything is read or
stored: otherwise one cluster could store forged events under another's message ids,
and the real events would later be dropped as duplicates.

A control stream (``Hello`` first) is answered with this cluster's own ``Marks``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection, Sequence
from typing import Any

import msgspec

from aqe.bridge._chains import (
    ApplyPlan,
    CopyError,
    ReplicaLog,
    copy_headers,
    is_marker,
    marker_subject,
    plan_batch,
    stream_domain,
)
from aqe.bridge._holdings import Holdings
from aqe.bridge._tasks import cancel_and_wait
from aqe.bridge.channel import FrameStream
from aqe.bridge.frames import (
    UNTRUSTED_RELAY,
    Ack,
    Data,
    DataBatch,
    Error,
    Frame,
    Gap,
    Hello,
    Marks,
    Open,
    Resume,
    chain_key,
    partition_of,
)
from aqe.errors import (
    BridgeError,
    ConcurrencyError,
    ConfigError,
    LogError,
    LogUnavailableError,
    PayloadTooLargeError,
    StreamClosedError,
)
from aqe.events import BridgeApplied, Headers
from aqe.log.port import MAX_BATCH, BatchResult
from aqe.log.retry import while_unavailable
from aqe.log.streams import StreamSpec
from aqe.log.subjects import subject_matches

__all__ = ["ChainStats", "TargetSide"]

_log = logging.getLogger(__name__)
_MAX_CONFLICTS = 100
"""Conflicts on one batch before the stream is refused (each one is another writer
moving the chain on, so this many in a row means something else writes its markers)."""
_MARKER_HEADERS = {
    Headers.EVENT_TYPE: BridgeApplied.type_tag(),
    Headers.ENVELOPE: "1",
}
_MARKER_TAG = BridgeApplied.type_tag()
_GOSSIP_WAIT_S = 0.2
"""How long a ``Marks`` answer waits for fresh marks before it sends the last ones."""
_CHECKED_MAX = 16_384
"""Subjects a served chain remembers as checked (cleared when full)."""

_Raw = tuple[str, bytes, dict[str, str]]
"""One message of an atomic batch: subject, data, headers."""


class ChainStats(msgspec.Struct, kw_only=True):
    """What the target has done for one chain since it started (JSON-able)."""

    applied_seq: int = 0
    batches: int = 0
    events: int = 0
    duplicates_skipped: int = 0
    gaps: int = 0
    conflicts: int = 0
    commit_retries: int = 0
    """Batches sent again because no commit reply came in time (or no stream answered):
    the first try may have been stored, which the retry tells (see ``_apply``)."""
    last_applied_at_ns: int = 0
    peer: str = ""


class _RefusedError(BridgeError):
    """Why a stream is refused: sent to the peer as an ``Error`` frame."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Chain:
    """One served chain: where its markers live and where it stands."""

    def __init__(self, opened: Open, domain: str) -> None:
        self.opened = opened
        self.key = chain_key(opened.origin, opened.stream, opened.partition)
        self.subject = marker_subject(domain, self.key)
        self.applied = 0
        self.marker_seq = 0
        self.marker_id = ""
        self.in_gap = False
        # Subjects already found to belong to this chain (in the stream, in the
        # partition, not a marker subject): most events repeat a recent subject.
        self.checked: set[str] = set()


class _Closed:
    """The pump's last queue item: the peer finished or the link dropped."""


_CLOSED = _Closed()


class TargetSide:
    """Serves the streams a peer opens: applies chains, answers gossip.

    Args:
        log: The local cluster's event log.
        cluster: This cluster's name.
        streams: The streams this cluster accepts copies for.
        max_batch: Most data frames stored in one atomic batch (plus one marker).
        partitions: Partitions used to name local chains in ``Marks`` answers.
        holdings: Shared tracker of what this cluster holds (one is made if None).
        relays_from: Peers trusted to relay chains of other origins; every other
            peer may only open chains of its own origin.

    Raises:
        ConfigError: an unknown stream, a stream whose subjects are not
            ``aqe.<domain>.>``, or ``max_batch`` outside ``1..MAX_BATCH - 1``.
    """

    def __init__(
        self,
        log: ReplicaLog,
        cluster: str,
        streams: Sequence[str],
        *,
        max_batch: int = 500,
        partitions: int = 8,
        holdings: Holdings | None = None,
        relays_from: Collection[str] = (),
    ) -> None:
        if not 1 <= max_batch < MAX_BATCH:
            raise ConfigError(f"max_batch must be within 1..{MAX_BATCH - 1}, got {max_batch}")
        specs = {spec.name: spec for spec in log.specs}
        unknown = sorted(set(streams) - set(specs))
        if unknown:
            raise ConfigError(f"bridge target {cluster}: unknown streams {unknown}")
        self._log = log
        self._cluster = cluster
        self._specs = {name: specs[name] for name in streams}
        self._domains = {name: stream_domain(spec) for name, spec in self._specs.items()}
        self._max_batch = max_batch
        self._holdings = holdings or Holdings(log, cluster, streams, partitions=partitions)
        self._stats: dict[str, ChainStats] = {}
        self._peer_marks: dict[str, dict[str, int]] = {}
        self._relays_from = frozenset(relays_from)
        self._refused = 0

    @property
    def cluster(self) -> str:
        """This cluster's name."""
        return self._cluster

    async def handle(self, stream: FrameStream) -> None:
        """Serve one stream until the peer finishes it or it is refused.

        Never raises for what a peer sends: a frame it cannot handle gets an
        ``Error`` and that stream is closed; other streams go on.
        """
        try:
            first = await stream.recv()
            if isinstance(first, Open):
                await self._serve_chain(stream, first)
            elif isinstance(first, Hello):
                await self._serve_control(stream, first)
            else:
                raise _RefusedError("protocol", f"expected Open or Hello first, got {_name(first)}")
        except _RefusedError as exc:
            self._refused += 1
            _log.warning(
                "bridge %s: refused a stream from %s: %s", self._cluster, _peer(stream), exc
            )
            await _close(stream, Error(code=exc.code, message=str(exc)))
        except StreamClosedError:
            pass
        except LogError as exc:
            _log.warning(
                "bridge %s: local log failed serving %s: %s", self._cluster, _peer(stream), exc
            )
            code = "unavailable" if isinstance(exc, LogUnavailableError) else "log"
            await _close(stream, Error(code=code, message=f"target {self._cluster}: {exc}"))
        finally:
            await _close(stream)

    # -- data streams -----------------------------------------------------------------

    async def _serve_chain(self, stream: FrameStream, opened: Open) -> None:
        chain = self._accept(stream, opened)
        marker = await self._reload(chain)
        if marker is not None and marker.partitions != opened.partitions:
            raise _RefusedError(
                "partitions",
                f"chain {chain.key} was applied with {marker.partitions} partitions, "
                f"{opened.source} sends {opened.partitions}",
            )
        stats = self._stats.setdefault(chain.key, ChainStats())
        stats.peer = stream.peer
        stats.applied_seq = max(stats.applied_seq, chain.applied)
        await stream.send(Resume(applied_seq=chain.applied))
        queue: asyncio.Queue[Frame | _Closed] = asyncio.Queue(self._max_batch * 2)
        pump = asyncio.create_task(_pump(stream, queue))
        try:
            waiting: list[Data] = []
            ended = False
            while not ended:
                if not waiting:
                    ended = self._take(stream, chain, await queue.get(), waiting)
                while not ended and len(waiting) < self._max_batch and not queue.empty():
                    ended = self._take(stream, chain, queue.get_nowait(), waiting)
                # What came in while the last batch was stored is the next batch.
                while waiting and (ended or len(waiting) >= self._max_batch or queue.empty()):
                    batch, waiting = waiting[: self._max_batch], waiting[self._max_batch :]
                    await self._apply(stream, chain, stats, batch)
        finally:
            await cancel_and_wait([pump])

    def _take(
        self, stream: FrameStream, chain: _Chain, item: Frame | _Closed, into: list[Data]
    ) -> bool:
        """Add a queued frame's events to ``into``; True when the stream has ended."""
        if isinstance(item, Data):
            into.append(item)
        elif isinstance(item, DataBatch):
            into += item.events
        elif isinstance(item, _Closed):
            return True
        elif isinstance(item, Error):
            _log.info(
                "bridge %s: %s closed %s: %s", self._cluster, stream.peer, chain.key, item.message
            )
            return True
        else:
            raise _RefusedError("protocol", f"chain {chain.key}: unexpected {_name(item)}")
        return False

    def _accept(self, stream: FrameStream, opened: Open) -> _Chain:
        """Check an ``Open`` against the peer and the configuration."""
        if stream.peer != opened.source:
            raise _RefusedError("peer", f"peer {stream.peer} claims to send as {opened.source}")
        if opened.origin == self._cluster:
            raise _RefusedError(
                "loop",
                f"chain {opened.origin}/{opened.stream}/{opened.partition} originates "
                f"here ({self._cluster}); {opened.source} would send it back",
            )
        if opened.stream not in self._specs:
            raise _RefusedError(
                "unknown-stream",
                f"stream {opened.stream} is not replicated to {self._cluster} "
                f"(accepted: {sorted(self._specs)})",
            )
        if opened.partitions < 1 or not 0 <= opened.partition < opened.partitions:
            raise _RefusedError(
                "bad-open", f"partition {opened.partition} of {opened.partitions} is not valid"
            )
        if not opened.origin or "/" in opened.origin:
            raise _RefusedError("bad-open", f"origin {opened.origin!r} is not a cluster name")
        if opened.origin != stream.peer and stream.peer not in self._relays_from:
            raise _RefusedError(
                UNTRUSTED_RELAY,
                f"peer {stream.peer} may only open chains of its own origin, not "
                f"{opened.origin}/{opened.stream}/{opened.partition}: it is not a trusted "
                f"relay of {self._cluster}",
            )
        return _Chain(opened, self._domains[opened.stream])

    async def _reload(self, chain: _Chain) -> BridgeApplied | None:
        """Read the chain's position back from its last marker."""
        env = await while_unavailable(lambda: self._log.last(chain.subject))
        if env is None:
            chain.applied = chain.marker_seq = 0
            chain.marker_id = ""
            return None
        try:
            marker = msgspec.json.decode(env.data, type=BridgeApplied)
        except msgspec.DecodeError as exc:
            raise _RefusedError(
                "bad-marker",
                f"{env.stream} seq {env.seq} on {chain.subject} is not a marker: {exc}",
            ) from exc
        chain.applied = marker.last_seq
        chain.marker_seq = env.seq
        chain.marker_id = env.headers.get(Headers.MSG_ID, "")
        return marker

    async def _apply(
        self, stream: FrameStream, chain: _Chain, stats: ChainStats, frames: list[Data]
    ) -> None:
        """Store what extends the chain (one atomic batch), then Ack and maybe Gap."""
        conflicts = 0
        while True:
            plan = plan_batch(frames, chain.applied, chain.in_gap)
            if not plan.accepted:
                break
            messages = self._messages(stream, chain, plan)
            tries = 0

            async def store(messages: list[_Raw] = messages) -> BatchResult:
                nonlocal tries
                tries += 1
                if tries > 1:  # the last try got no commit reply, or no stream answered
                    stats.commit_retries += 1
                return await self._log.append_raw_batch(chain.opened.stream, messages)

            try:
                result = await while_unavailable(store)
            except ConcurrencyError:
                await self._reload(chain)
                if tries > 1 and chain.marker_id == messages[-1][2][Headers.MSG_ID]:
                    # A try that got no commit reply was stored after all: JetStream
                    # checks the marker's condition before deduplication, so the retry
                    # failed it. This batch is applied, by this stream (or by a ghost
                    # that sent the very same batch): no duplicates, no conflict.
                    chain.applied = plan.cursor
                    self._count_applied(stats, plan)
                    break
                # Another stream applied this chain meanwhile: plan the same frames
                # again from where it stands (what it stored are duplicates now).
                stats.conflicts += 1
                conflicts += 1
                if conflicts > _MAX_CONFLICTS:
                    raise _RefusedError(
                        "conflict",
                        f"chain {chain.key}: {conflicts} conditional appends in a row failed",
                    ) from None
                continue
            except ValueError as exc:  # a header the server would not take
                code = "too-large" if isinstance(exc, PayloadTooLargeError) else "bad-frame"
                raise _RefusedError(code, f"chain {chain.key}: {exc}") from exc
            chain.applied = plan.cursor
            if result.duplicates:  # re-sent message by message: find the marker again
                await self._reload(chain)
            else:
                chain.marker_seq = result.last_seq
                chain.marker_id = messages[-1][2][Headers.MSG_ID]
            self._count_applied(stats, plan)
            break
        chain.in_gap = plan.in_gap
        stats.applied_seq = max(stats.applied_seq, chain.applied)
        stats.duplicates_skipped += plan.duplicates
        if plan.accepted or plan.duplicates:
            await stream.send(Ack(applied_seq=chain.applied))
        if plan.gap is not None:
            stats.gaps += 1
            got_prev, got_seq = plan.gap
            await stream.send(Gap(applied_seq=chain.applied, got_prev=got_prev, got_seq=got_seq))

    @staticmethod
    def _count_applied(stats: ChainStats, plan: ApplyPlan) -> None:
        stats.batches += 1
        stats.events += len(plan.accepted)
        stats.last_applied_at_ns = time.time_ns()

    def _messages(self, stream: FrameStream, chain: _Chain, plan: ApplyPlan) -> list[_Raw]:
        """The batch's copies and the chain's next marker, conditional on the last."""
        opened = chain.opened
        spec = self._specs[opened.stream]
        messages: list[_Raw] = []
        checked = chain.checked
        for frame in plan.accepted:
            subject = frame.subject
            if subject not in checked:
                self._check_subject(chain, spec, frame)
            if frame.headers.get(Headers.EVENT_TYPE) == _MARKER_TAG:
                where = f"chain {chain.key} seq {frame.seq} ({subject})"
                raise _RefusedError("bad-frame", f"{where}: bridge markers are never copied")
            try:
                headers = copy_headers(frame.headers, opened.origin, opened.stream, frame.seq)
            except CopyError as exc:
                raise _RefusedError("bad-frame", str(exc)) from exc
            # The size against the server's limit is checked by append_raw_batch.
            messages.append((subject, frame.data, headers))
        marker = BridgeApplied(
            chain=chain.key,
            origin=opened.origin,
            stream=opened.stream,
            partition=opened.partition,
            partitions=opened.partitions,
            first_seq=plan.accepted[0].seq,
            last_seq=plan.cursor,
            prev_seq=chain.applied,
            count=len(plan.accepted),
            via=stream.peer,
        )
        headers = {
            **_MARKER_HEADERS,
            Headers.MSG_ID: f"{chain.key}:applied:{plan.cursor}",
            Headers.EXPECTED_LAST_SUBJECT_SEQ: str(chain.marker_seq),
        }
        messages.append((chain.subject, marker.to_json(), headers))
        return messages

    @staticmethod
    def _check_subject(chain: _Chain, spec: StreamSpec, frame: Data) -> None:
        """Refuse a subject outside the chain; remember one that belongs to it."""
        opened, subject = chain.opened, frame.subject
        where = f"chain {chain.key} seq {frame.seq} ({subject})"
        if not any(subject_matches(p, subject) for p in spec.subjects):
            raise _RefusedError("bad-frame", f"{where}: subject is not in stream {spec.name}")
        if partition_of(subject, opened.partitions) != opened.partition:
            raise _RefusedError("bad-frame", f"{where}: subject is in another partition")
        if is_marker(subject):
            raise _RefusedError("bad-frame", f"{where}: bridge markers are never copied")
        if len(chain.checked) >= _CHECKED_MAX:
            chain.checked.clear()
        chain.checked.add(subject)

    # -- control streams --------------------------------------------------------------

    async def _serve_control(self, stream: FrameStream, hello: Hello) -> None:
        """Answer each ``Marks`` from the peer with this cluster's own."""
        if hello.cluster != stream.peer:
            raise _RefusedError("peer", f"peer {stream.peer} says hello as {hello.cluster}")
        while True:
            frame = await stream.recv()
            if isinstance(frame, Marks):
                self._peer_marks[stream.peer] = dict(frame.marks)
                marks = await self._holdings.refresh_copies(wait_s=_GOSSIP_WAIT_S)
                await stream.send(Marks(cluster=self._cluster, marks=marks))
            elif isinstance(frame, Error):
                return
            else:
                raise _RefusedError("protocol", f"control stream: unexpected {_name(frame)}")

    def stats(self) -> dict[str, Any]:
        """Per-chain counters and positions, JSON-able."""
        return {
            "cluster": self._cluster,
            "refused_streams": self._refused,
            "chains": {key: msgspec.to_builtins(s) for key, s in sorted(self._stats.items())},
            "peer_marks": {peer: dict(m) for peer, m in self._peer_marks.items()},
        }


async def _pump(stream: FrameStream, queue: asyncio.Queue[Frame | _Closed]) -> None:
    """Move frames from the stream into the queue, so the applier sees what is waiting."""
    try:
        while True:
            await queue.put(await stream.recv())
    except StreamClosedError:
        await queue.put(_CLOSED)


async def _close(stream: FrameStream, error: Error | None = None) -> None:
    with contextlib.suppress(BridgeError):
        await stream.close(error)


def _name(frame: object) -> str:
    return type(frame).__name__


def _peer(stream: FrameStream) -> str:
    try:
        return stream.peer
    except BridgeError:  # pragma: no cover - a transport that lost its peer's name
        return "?"
