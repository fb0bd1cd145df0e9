"""Bridge replication between independent JetStream servers, one per cluster.

The transport is :func:`aqe.bridge.channel.memory_pair` behind a small in-test
:class:`MemoryConnector` that can cut its connection (after a number of data frames, or
on demand) and refuse to reconnect; everything else is real: nats-servers, streams
from ``streams/*.json``, atomic batches and the markers' conditions.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import nats
import pytest

from aqe.bridge._tasks import cancel_and_wait
from aqe.bridge.channel import FrameStream, StreamHandler, memory_pair
from aqe.bridge.frames import (
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
from aqe.bridge.replication import Holdings, SourceLink, TargetSide, is_marker, marker_subject
from aqe.errors import ConcurrencyError, LinkDownError, LogUnavailableError, StreamClosedError
from aqe.events import BridgeApplied, Envelope, Headers, PatternAdded, TestCaseExecuted
from aqe.log import NewEvent, load_stream_specs
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.projections.deadletter import MemoryDeadLetters
from aqe.projections.history import HistoryProjection, classify
from aqe.projections.runner import ProjectionRunner
from aqe.projections.store import SnapshotStore
from aqe.server import NatsServerProcess
from support.processes import paused
from support.waiting import until

pytestmark = [pytest.mark.nats, pytest.mark.timeout(120)]

STREAMS = ("AQE_TESTS", "AQE_PATTERNS")
GUARD_S = 60.0
"""Only a failure guard: how long a wait may take before the test gives up."""

T = TypeVar("T")


# -- clusters -------------------------------------------------------------------------------


class Cluster:
    def __init__(self, name: str, log: JetStreamEventLog) -> None:
        self.name = name
        self.log = log


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Callable[[str], NatsServerProcess]]:
    started: list[NatsServerProcess] = []

    def start(name: str) -> NatsServerProcess:
        server = NatsServerProcess.start_sync(
            tmp_path / name / "js", log_file=tmp_path / f"{name}.log"
        )
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop_sync(timeout=5.0)


@pytest.fixture
async def cluster(
    servers: Callable[[str], NatsServerProcess],
) -> AsyncIterator[Callable[[str], Awaitable[Cluster]]]:
    logs: list[JetStreamEventLog] = []

    async def make(name: str) -> Cluster:
        nc = await nats.connect(servers(name).url)
        specs = load_stream_specs()
        await apply_streams(nc, specs)
        log = JetStreamEventLog(nc, specs)
        logs.append(log)
        return Cluster(name, log)

    yield make
    for log in logs:
        await asyncio.wait_for(log.close(), GUARD_S)


# -- an in-memory connector whose connection can be cut ----------------------------------------


class _Connection:
    def __init__(self) -> None:
        self.closed = asyncio.Event()
        self.handlers: set[asyncio.Task[None]] = set()


class _CutStream:
    """A stream end that fails at once when its connection is cut (as on a dead link)."""

    def __init__(self, inner: FrameStream, conn: _Connection, on_recv: Any = None) -> None:
        self._inner = inner
        self._conn = conn
        self._on_recv = on_recv

    @property
    def peer(self) -> str:
        return self._inner.peer

    async def send(self, frame: Frame) -> None:
        await self._race(self._inner.send(frame))

    async def recv(self) -> Frame:
        frame = await self._race(self._inner.recv())
        if self._on_recv is not None:
            self._on_recv(frame)
        if self._conn.closed.is_set():
            raise StreamClosedError("link cut")
        return frame

    async def close(self, error: Error | None = None) -> None:
        if not self._conn.closed.is_set():
            with contextlib.suppress(StreamClosedError):
                await self._race(self._inner.close(error))

    async def _race(self, op: Coroutine[Any, Any, T]) -> T:
        if self._conn.closed.is_set():
            op.close()
            raise StreamClosedError("link cut")
        task = asyncio.ensure_future(op)
        cut = asyncio.ensure_future(self._conn.closed.wait())
        try:
            await asyncio.wait({task, cut}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            cut.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, StreamClosedError):
                    await task
        if task.done() and not task.cancelled():
            return task.result()
        raise StreamClosedError("link cut")


class MemoryConnector:
    """Connector from ``source`` to a stream handler, over :func:`memory_pair`.

    ``cut_after`` cuts the connection once, when the target has received that many data
    frames; ``refuse_after`` cuts it and refuses to connect again. ``up = False``
    refuses to connect until set back.
    """

    def __init__(
        self,
        source: str,
        target: str,
        handler: StreamHandler,
        *,
        cut_after: int | None = None,
        refuse_after: int | None = None,
    ) -> None:
        self.source = source
        self.target = target
        self.handler = handler
        self.up = True
        self.connects = 0
        self.data_frames = 0
        self.cut_after = cut_after
        self.refuse_after = refuse_after
        self.refused = asyncio.Event()
        self._conn: _Connection | None = None

    async def connect(self) -> None:
        if not self.up:
            raise LinkDownError(f"{self.target} unreachable from {self.source}")
        self.cut()
        self._conn = _Connection()
        self.connects += 1

    async def open_stream(self, *, early: bool = False) -> FrameStream:
        conn = self._conn
        if conn is None or conn.closed.is_set():
            raise LinkDownError("not connected")
        ours, theirs = memory_pair(self.source, self.target)
        task = asyncio.create_task(self.handler(_CutStream(theirs, conn, self._count)))
        conn.handlers.add(task)
        task.add_done_callback(conn.handlers.discard)
        return _CutStream(ours, conn)

    def _count(self, frame: Frame) -> None:
        if isinstance(frame, Data):
            self.data_frames += 1
        elif isinstance(frame, DataBatch):
            self.data_frames += len(frame.events)
        else:
            return
        if self.cut_after is not None and self.data_frames >= self.cut_after:
            self.cut_after = None
            self.cut()
        if self.refuse_after is not None and self.data_frames >= self.refuse_after:
            self.refuse_after = None
            self.up = False
            self.cut()
            self.refused.set()

    async def wait_closed(self) -> None:
        conn = self._conn
        if conn is not None:
            await conn.closed.wait()

    async def close(self) -> None:
        self.cut()

    def cut(self) -> None:
        conn = self._conn
        if conn is not None:
            conn.closed.set()
            for task in list(conn.handlers):
                task.cancel()

    async def shutdown(self) -> None:
        conn = self._conn
        self.cut()
        if conn is not None:
            await cancel_and_wait(conn.handlers)

    def stats(self) -> dict[str, int]:
        return {"connects": self.connects, "data_frames": self.data_frames}


class Link:
    """SourceLink in ``src`` -> TargetSide in ``dst`` over a MemoryConnector."""

    def __init__(
        self,
        src: Cluster,
        dst: Cluster,
        *,
        target: TargetSide | None = None,
        connector: dict[str, Any] | None = None,
        **link: Any,
    ) -> None:
        self.target = target or TargetSide(dst.log, dst.name, STREAMS, max_batch=200)
        self.connector = MemoryConnector(
            src.name, dst.name, self.target.handle, **(connector or {})
        )
        link.setdefault("gossip_s", 0.2)
        link.setdefault("reconnect_max_s", 0.2)
        self.source = SourceLink(src.log, src.name, dst.name, self.connector, STREAMS, **link)
        self.task: asyncio.Task[None] | None = None

    def start(self) -> Link:
        self.task = asyncio.create_task(self.source.run())
        return self

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.connector.shutdown()


@pytest.fixture
async def links() -> AsyncIterator[list[Link]]:
    made: list[Link] = []
    yield made
    for link in made:
        await asyncio.wait_for(link.stop(), GUARD_S)


# -- events and comparisons -------------------------------------------------------------------


def executions(prefix: str, runs: int, tests: int) -> list[NewEvent]:
    outcomes = ("passed", "passed", "failed", "passed", "error", "skipped")
    return [
        NewEvent(
            event=TestCaseExecuted(
                test_id=f"{prefix}/test_{t % tests}.py::test_case[{t}]",
                run_id=f"{prefix}-run-{r}",
                outcome=outcomes[(r * 7 + t) % len(outcomes)],  # type: ignore[arg-type]
                duration_s=0.01 * t,
                commit=f"c{r}",
            )
        )
        for r in range(runs)
        for t in range(tests)
    ]


def patterns(prefix: str, n: int) -> list[NewEvent]:
    return [
        NewEvent(event=PatternAdded(pattern_id=f"{prefix}-p{i}", name=f"pattern {i}", code="x"))
        for i in range(n)
    ]


async def append(cluster: Cluster, items: list[NewEvent]) -> None:
    await cluster.log.append_batch(items)


async def events(cluster: Cluster) -> list[Envelope]:
    """Every stored event of the replicated streams, markers left out."""
    out: list[Envelope] = []
    for stream in STREAMS:
        out += [e async for e in cluster.log.read(stream) if not is_marker(e.subject, e.event_type)]
    return out


async def markers(cluster: Cluster) -> list[BridgeApplied]:
    out: list[BridgeApplied] = []
    for stream in STREAMS:
        async for env in cluster.log.read(stream):
            if is_marker(env.subject, env.event_type):
                out.append(msgspec.json.decode(env.data, type=BridgeApplied))
    return out


def local(envs: list[Envelope]) -> list[Envelope]:
    return [e for e in envs if Headers.ORIGIN_CLUSTER not in e.headers]


def copies(envs: list[Envelope], origin: str) -> list[Envelope]:
    return [e for e in envs if e.headers.get(Headers.ORIGIN_CLUSTER) == origin]


def by_subject(envs: list[Envelope]) -> dict[str, list[tuple[str, bytes]]]:
    out: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
    for env in envs:
        out[env.subject].append((env.event_id, env.data))
    return dict(out)


def assert_copied_exactly_once(
    originals: list[Envelope], copied: list[Envelope], origin: str
) -> None:
    """``copied`` holds each original once, same subject/data/id, in origin order per subject."""
    assert len(copied) == len(originals)
    assert by_subject(copied) == by_subject(originals)
    msg_ids = Counter(e.headers[Headers.MSG_ID] for e in copied)
    assert max(msg_ids.values()) == 1
    source = {e.event_id: e for e in originals}
    for env in copied:
        original = source[env.event_id]
        assert env.headers[Headers.ORIGIN_CLUSTER] == origin
        assert env.headers[Headers.ORIGIN_STREAM] == original.stream
        assert env.headers[Headers.ORIGIN_SEQ] == str(original.seq)
        assert env.headers[Headers.EVENT_ID] == original.headers[Headers.MSG_ID]
        assert env.headers[Headers.MSG_ID] == f"{origin}:{original.stream}:{original.seq}"
        assert env.event_type == original.event_type


async def chain_marks(cluster: Cluster, origin: str) -> dict[str, int]:
    """What ``cluster`` holds of ``origin``'s chains (its local events, or its copies)."""
    holdings = Holdings(cluster.log, cluster.name, STREAMS)
    marks = await holdings.refresh()
    return {k: v for k, v in marks.items() if k.startswith(f"{origin}/")}


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GUARD_S
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


async def caught_up(dst: Cluster, src: Cluster) -> None:
    """Wait until ``dst`` holds every chain of ``src``'s own events up to its end."""
    want = await chain_marks(src, src.name)
    tracker = Holdings(dst.log, dst.name, STREAMS)

    async def check() -> bool:
        held = await tracker.refresh()
        return all(held.get(k, 0) >= v for k, v in want.items())

    await eventually(check, f"{dst.name} to hold {src.name}'s events")


# -- the log additions the bridge relies on ----------------------------------------------------


async def test_append_raw_batch_is_atomic_conditional_and_keeps_event_ids(
    cluster: Callable[[str], Awaitable[Cluster]],
) -> None:
    c = await cluster("A")
    log = c.log
    subject = "aqe.tests.case.t1.executed"
    guard = "aqe.tests.bridge.chain.applied"
    data = TestCaseExecuted(test_id="t1", run_id="r1", outcome="passed").to_json()
    messages = [
        (subject, data, {Headers.MSG_ID: "A:AQE_TESTS:1", Headers.EVENT_ID: "evt-1"}),
        (subject, data, {Headers.MSG_ID: "plain-2", "X-Extra": " kept \r\n"}),
        (guard, b"{}", {Headers.MSG_ID: "m1", Headers.EXPECTED_LAST_SUBJECT_SEQ: "0"}),
    ]
    result = await log.append_raw_batch("AQE_TESTS", messages)
    assert (result.first_seq, result.last_seq, result.count, result.duplicates) == (1, 3, 3, 0)
    stored = [e async for e in log.read("AQE_TESTS")]
    assert [e.event_id for e in stored] == ["evt-1", "plain-2", "m1"]
    assert stored[0].headers[Headers.MSG_ID] == "A:AQE_TESTS:1"
    assert stored[1].headers["X-Extra"] == "kept"
    assert (await log.get("AQE_TESTS", 1)).event_id == "evt-1"
    last = await log.last(subject)
    assert last is not None
    assert last.event_id == "plain-2"

    # A failed condition stores nothing of the batch.
    again = [(subject, data, {Headers.MSG_ID: "x-1"}), messages[2]]
    with pytest.raises(ConcurrencyError) as info:
        await log.append_raw_batch("AQE_TESTS", again)
    assert info.value.subject == guard
    assert info.value.expected == 0
    assert await log.last_seq("AQE_TESTS") == 3

    # Ids already stored: re-sent one by one and reported as duplicates.
    resent = await log.append_raw_batch(
        "AQE_TESTS", [messages[0], (subject, data, {Headers.MSG_ID: "fresh-4"})]
    )
    assert (resent.duplicates, resent.first_seq, resent.last_seq) == (1, 4, 4)

    with pytest.raises(ValueError, match="one stream"):
        await log.append_raw_batch("AQE_TESTS", [("aqe.patterns.pattern.p.added", b"{}", {})])
    with pytest.raises(ValueError, match="at most"):
        await log.append_raw_batch("AQE_TESTS", [(subject, b"{}", {})] * 1001)
    with pytest.raises(ValueError, match="header name"):
        await log.append_raw_batch("AQE_TESTS", [(subject, b"{}", {"bad name": "x"})])


async def test_append_raw_batch_to_a_missing_stream_is_an_outage(
    servers: Callable[[str], NatsServerProcess],
) -> None:
    nc = await nats.connect(servers("A").url)
    specs = load_stream_specs()
    await apply_streams(nc, [s for s in specs if s.name != "AQE_PATTERNS"])
    log = JetStreamEventLog(nc, specs)
    try:
        with pytest.raises(LogUnavailableError):
            await log.append_raw_batch(
                "AQE_PATTERNS", [("aqe.patterns.pattern.p.added", b"{}", {})]
            )
    finally:
        await log.close()


# -- phase 1: one direction ---------------------------------------------------------------------


async def test_thousand_events_replicate_exactly_once_in_order(
    cluster: Callable[[str], Awaitable[Cluster]], links: list[Link]
) -> None:
    a, b = await cluster("A"), await cluster("B")
    await append(a, executions("a", runs=20, tests=45))
    await append(a, patterns("a", 100))
    link = Link(a, b, max_in_flight=256).start()
    links.append(link)
    await caught_up(b, a)

    originals, held = await events(a), await events(b)
    assert len(originals) == 1000
    assert len({partition_of(e.subject, 8) for e in originals}) == 8
    assert_copied_exactly_once(originals, held, "A")
    marks = await markers(b)
    assert sum(m.count for m in marks) == 1000
    for stream in STREAMS:
        for p in range(8):
            chain = [m for m in marks if m.stream == stream and m.partition == p]
            # Each chain's markers form a gap-free list from 0.
            assert [m.prev_seq for m in chain] == [0] + [m.last_seq for m in chain[:-1]]
            assert all(m.via == "A" and m.origin == "A" for m in chain)

    stats = link.source.stats()
    assert stats["connected"]
    assert stats["peer"] == "B"
    assert stats["totals"]["in_flight"] == 0
    assert stats["totals"]["lag_events"] == 0
    assert stats["transport"]["data_frames"] >= 1000
    chains = link.target.stats()["chains"]
    assert sum(c["events"] for c in chains.values()) == 1000
    assert all(c["peer"] == "A" for c in chains.values())
    msgspec.json.encode(stats)  # JSON-able
    msgspec.json.encode(link.target.stats())


async def test_resume_after_a_cut_and_after_a_restart_from_the_markers(
    cluster: Callable[[str], Awaitable[Cluster]], links: list[Link]
) -> None:
    a, b = await cluster("A"), await cluster("B")
    await append(a, executions("a", runs=12, tests=50))
    # The first link loses its connection once (and reconnects, resending what was in
    # flight), then is cut for good mid-stream and stopped.
    first = Link(a, b, max_in_flight=64, connector={"cut_after": 150, "refuse_after": 400}).start()
    links.append(first)
    await asyncio.wait_for(first.connector.refused.wait(), GUARD_S)
    await first.stop()
    assert first.source.stats()["reconnects"] >= 1
    partial = await events(b)
    assert 0 < len(partial) < 600

    await append(a, executions("b", runs=8, tests=50))
    second = Link(a, b).start()  # a new source and target: state comes from the markers
    links.append(second)
    await caught_up(b, a)
    assert_copied_exactly_once(await events(a), await events(b), "A")
    # The new pair applied only what the markers said was missing (a batch the first
    # target had sent when it was stopped may have committed after `partial` was read).
    applied = sum(c["events"] for c in second.target.stats()["chains"].values())
    assert 400 <= applied <= 1000 - len(partial)
    assert second.target.stats()["chains"]
    assert all(c["duplicates_skipped"] == 0 for c in second.target.stats()["chains"].values())


async def test_two_links_for_one_pair_still_copy_exactly_once(
    cluster: Callable[[str], Awaitable[Cluster]], links: list[Link]
) -> None:
    a, b = await cluster("A"), await cluster("B")
    await append(a, executions("a", runs=10, tests=40))
    one, two = Link(a, b, max_in_flight=128).start(), Link(a, b, max_in_flight=128).start()
    links += [one, two]
    await append(a, executions("b", runs=10, tests=40))
    await caught_up(b, a)
    assert_copied_exactly_once(await events(a), await events(b), "A")
    applied = [
        sum(c["events"] for c in link.target.stats()["chains"].values()) for link in (one, two)
    ]
    assert sum(applied) == 800


async def test_source_resends_from_where_a_gap_says(
    cluster: Callable[[str], Awaitable[Cluster]],
) -> None:
    a = await cluster("A")
    await append(a, executions("a", runs=4, tests=12))
    accepted: dict[tuple[str, int], list[int]] = defaultdict(list)

    async def forgetful(fs: FrameStream) -> None:
        """Applies frames in chain order, but once forgets all but a chain's first."""
        with contextlib.suppress(StreamClosedError):
            opened = await fs.recv()
            if not isinstance(opened, Open):
                while True:  # a control stream: never answered
                    await fs.recv()
            chain = accepted[(opened.stream, opened.partition)]
            await fs.send(Resume(applied_seq=0))
            applied, forgot = 0, False
            while True:
                received = await fs.recv()
                assert isinstance(received, Data | DataBatch)
                for data in received.events if isinstance(received, DataBatch) else [received]:
                    if data.seq <= applied or data.prev != applied:
                        continue
                    chain.append(data.seq)
                    applied = data.seq
                    if len(chain) == 2 and not forgot:
                        forgot = True
                        del chain[1:]
                        applied = chain[0]
                        gap = Gap(applied_seq=applied, got_prev=data.prev, got_seq=data.seq)
                        await fs.send(gap)
                    else:
                        await fs.send(Ack(applied_seq=applied))

    want: dict[tuple[str, int], list[int]] = defaultdict(list)
    for env in await events(a):
        want[(env.stream, partition_of(env.subject, 8))].append(env.seq)
    connector = MemoryConnector("A", "B", forgetful)
    link = SourceLink(a.log, "A", "B", connector, STREAMS, gossip_s=0)
    task = asyncio.create_task(link.run())
    try:

        async def check() -> bool:
            return {k: v for k, v in accepted.items() if v} == dict(want)

        await eventually(check, "every chain to be applied in order after its gap")
        stats = link.stats()
        assert sum(c["rewinds"] for c in stats["chains"].values()) == sum(
            1 for seqs in want.values() if len(seqs) >= 2
        )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await connector.shutdown()


# -- a hand-crafted peer ----------------------------------------------------------------------


class Peer:
    """Talks to a TargetSide directly over one memory stream."""

    def __init__(self, target: TargetSide, claims: str) -> None:
        self.ours, theirs = memory_pair(claims, target.cluster)
        self.task = asyncio.create_task(target.handle(theirs))

    async def ask(self, *frames: Frame) -> Frame:
        for frame in frames:
            await self.ours.send(frame)
        return await asyncio.wait_for(self.ours.recv(), GUARD_S)

    async def closed(self) -> bool:
        """Whether the target finished the stream (and its handler returned)."""
        try:
            await asyncio.wait_for(self.ours.recv(), GUARD_S)
        except StreamClosedError:
            await asyncio.wait_for(self.task, GUARD_S)
            return True
        return False


def open_frame(**kw: Any) -> Open:
    fields: dict[str, Any] = {
        "origin": "A",
        "stream": "AQE_TESTS",
        "partition": 0,
        "partitions": 8,
        "source": "A",
    }
    fields.update(kw)
    return Open(**fields)


def subject_in(partition: int, partitions: int = 8) -> str:
    return next(
        s
        for i in range(1000)
        if partition_of(s := f"aqe.tests.case.t{i}.executed", partitions) == partition
    )


def frame(seq: int, prev: int, subject: str) -> Data:
    event = TestCaseExecuted(test_id="t", run_id=f"r{seq}", outcome="passed")
    return Data(
        seq=seq,
        prev=prev,
        subject=subject,
        data=event.to_json(),
        headers={Headers.MSG_ID: f"id-{seq}", Headers.EVENT_TYPE: event.type_tag()},
    )


async def test_target_reports_gaps_and_refuses_what_it_cannot_take(
    cluster: Callable[[str], Awaitable[Cluster]],
) -> None:
    b = await cluster("B")
    target = TargetSide(b.log, "B", STREAMS)
    # In partition 2 of 8 and of 4, so that an Open with 4 partitions names the same chain.
    subject = next(
        s
        for i in range(1000)
        if partition_of(s := f"aqe.tests.case.t{i}.executed", 8) == 2 and partition_of(s, 4) == 2
    )

    peer = Peer(target, "A")
    assert await peer.ask(open_frame(partition=2)) == Resume(applied_seq=0)
    assert await peer.ask(frame(5, 3, subject)) == Gap(applied_seq=0, got_prev=3, got_seq=5)
    assert await peer.ask(frame(5, 0, subject)) == Ack(applied_seq=5)
    assert await peer.ask(frame(5, 0, subject)) == Ack(applied_seq=5)  # a duplicate
    assert await peer.ask(frame(9, 5, subject)) == Ack(applied_seq=9)
    reply = await peer.ask(frame(12, 9, subject_in(3)))  # not this chain's partition
    assert isinstance(reply, Error)
    assert reply.code == "bad-frame"
    assert await peer.closed()
    stored = await events(b)
    assert [e.headers[Headers.ORIGIN_SEQ] for e in stored] == ["5", "9"]
    assert [e.event_id for e in stored] == ["id-5", "id-9"]
    chain = target.stats()["chains"][chain_key("A", "AQE_TESTS", 2)]
    assert (chain["applied_seq"], chain["events"], chain["gaps"]) == (9, 2, 1)
    assert chain["duplicates_skipped"] == 1
    last = await b.log.last(marker_subject("tests", chain_key("A", "AQE_TESTS", 2)))
    assert last is not None

    # A restarted stream resumes from the marker.
    again = Peer(target, "A")
    assert await again.ask(open_frame(partition=2)) == Resume(applied_seq=9)
    await again.ours.close()
    await asyncio.wait_for(again.task, GUARD_S)

    refusals = {
        "unknown-stream": (open_frame(stream="AQE_COORD"), "A"),
        "loop": (open_frame(origin="B"), "A"),
        "peer": (open_frame(source="A"), "C"),
        "partitions": (open_frame(partition=2, partitions=4), "A"),
        "bad-open": (open_frame(partition=8), "A"),
        "protocol": (frame(1, 0, subject), "A"),
    }
    for code, (first, claims) in refusals.items():
        peer = Peer(target, claims)
        reply = await peer.ask(first)
        assert isinstance(reply, Error), code
        assert reply.code == code
        assert await peer.closed()
    assert target.stats()["refused_streams"] == len(refusals) + 1

    # Hello from a peer that claims to be another cluster is refused too; a true one
    # gets this cluster's marks.
    liar = Peer(target, "C")
    reply = await liar.ask(Hello(cluster="A"))
    assert isinstance(reply, Error)
    assert reply.code == "peer"
    honest = Peer(target, "A")
    await honest.ours.send(Hello(cluster="A"))
    marks = await honest.ask(Marks(cluster="A", marks={}))
    assert isinstance(marks, Marks)
    assert marks.cluster == "B"
    assert marks.marks[chain_key("A", "AQE_TESTS", 2)] == 9
    await honest.ours.close()
    await asyncio.wait_for(honest.task, GUARD_S)


async def test_a_data_batch_is_applied_like_its_frames_in_batches_of_max_batch(
    cluster: Callable[[str], Awaitable[Cluster]],
) -> None:
    b = await cluster("B")
    target = TargetSide(b.log, "B", STREAMS, max_batch=3)
    subject = subject_in(5)
    frames = [frame(seq, seq - 1 if seq > 1 else 0, subject) for seq in range(1, 8)]
    peer = Peer(target, "A")
    assert await peer.ask(open_frame(partition=5)) == Resume(applied_seq=0)
    # One frame of 7 events: stored 3 + 3 + 1. Then a repeat, alone and in a batch.
    await peer.ours.send(DataBatch(events=tuple(frames)))
    acks = [await asyncio.wait_for(peer.ours.recv(), GUARD_S) for _ in range(3)]
    assert acks == [Ack(applied_seq=3), Ack(applied_seq=6), Ack(applied_seq=7)]
    assert await peer.ask(frames[0]) == Ack(applied_seq=7)
    assert await peer.ask(DataBatch(events=tuple(frames[5:]))) == Ack(applied_seq=7)
    await peer.ours.close()
    await asyncio.wait_for(peer.task, GUARD_S)
    stored = await events(b)
    assert [e.headers[Headers.ORIGIN_SEQ] for e in stored] == [str(s) for s in range(1, 8)]
    applied = await markers(b)
    assert [(m.first_seq, m.last_seq, m.count) for m in applied] == [
        (1, 3, 3),
        (4, 6, 3),
        (7, 7, 1),
    ]
    chain = target.stats()["chains"][chain_key("A", "AQE_TESTS", 5)]
    assert (chain["batches"], chain["events"], chain["duplicates_skipped"]) == (3, 7, 3)

    # Gossip marks come from the markers; copies_after points before the batch that
    # holds the first copy past a sequence.
    holdings = Holdings(b.log, "B", STREAMS)
    key = chain_key("A", "AQE_TESTS", 5)
    assert await holdings.refresh_copies() == {key: 7}
    seqs = {int(e.headers[Headers.ORIGIN_SEQ]): e.seq for e in stored}
    assert holdings.copies_after(key, 0) == 0
    for origin_seq in (3, 4, 5):  # the second batch's copies follow the first marker
        after = holdings.copies_after(key, origin_seq)
        assert after is not None
        assert seqs[3] < after < seqs[4]
    assert holdings.copies_after(key, 7) is None
    assert holdings.copies_after("A/AQE_TESTS/1", 0) is None


async def test_holdings_mark_own_chains_only_on_a_full_refresh(
    cluster: Callable[[str], Awaitable[Cluster]],
) -> None:
    a = await cluster("A")
    await append(a, executions("a", runs=2, tests=20))
    holdings = Holdings(a.log, "A", STREAMS)
    assert await holdings.refresh_copies() == {}
    marks = await holdings.refresh()
    want: dict[str, int] = {}
    for env in await events(a):
        key = chain_key("A", env.stream, partition_of(env.subject, 8))
        want[key] = max(want.get(key, 0), env.seq)
    assert marks == want
    assert holdings.marks() == want
    assert await holdings.refresh_copies() == {}


# -- both directions ---------------------------------------------------------------------------


async def test_bidirectional_links_hold_the_union_and_nothing_bounces(
    cluster: Callable[[str], Awaitable[Cluster]], links: list[Link]
) -> None:
    a, b = await cluster("A"), await cluster("B")
    await append(a, executions("a", runs=5, tests=40))
    await append(b, executions("b", runs=5, tests=40))
    links += [Link(a, b).start(), Link(b, a).start()]
    await append(a, patterns("a", 50))
    await append(b, patterns("b", 60))
    await caught_up(b, a)
    await caught_up(a, b)

    in_a, in_b = await events(a), await events(b)
    assert_copied_exactly_once(local(in_a), copies(in_b, "A"), "A")
    assert_copied_exactly_once(local(in_b), copies(in_a, "B"), "B")
    assert len(in_a) == len(in_b) == 2 * 200 + 110
    assert not copies(in_a, "A")
    assert not copies(in_b, "B")
    assert {e.event_id for e in in_a} == {e.event_id for e in in_b}


async def test_projections_on_the_target_give_the_origins_answer(
    cluster: Callable[[str], Awaitable[Cluster]], links: list[Link], tmp_path: Path
) -> None:
    a, b = await cluster("A"), await cluster("B")
    await append(a, executions("a", runs=12, tests=30))
    links.append(Link(a, b).start())
    await caught_up(b, a)

    async def history(c: Cluster) -> dict[str, tuple[Any, ...]]:
        projection = HistoryProjection()
        dead = MemoryDeadLetters()
        runner = ProjectionRunner(
            projection, c.log, SnapshotStore(projection, tmp_path / c.name), dead
        )
        await runner.run()
        assert not dead.parked
        return {
            test_id: (
                t.recent,
                t.runs,
                t.passes,
                t.failures,
                t.commits,
                classify(t.recent, t.flaky_commits),
            )
            for test_id, t in runner.state.tests.items()
        }

    on_a = await history(a)
    assert len(on_a) == 30
    assert await history(b) == on_a


# -- phase 2: anti-entropy over a mesh ------------------------------------------------------------


async def test_a_cut_link_is_repaired_by_a_relay_and_restored_without_duplicates(
    cluster: Callable[[str], Awaitable[Cluster]], links: list[Link]
) -> None:
    a, b, c = await cluster("A"), await cluster("B"), await cluster("C")
    gossip = {"gossip_s": 0.1, "repair_after_s": 0.3}
    a_to_c = Link(a, c, **gossip)
    a_to_c.connector.up = False  # the A-C link is cut from the start
    links += [
        Link(a, b, **gossip).start(),
        Link(
            b,
            c,
            target=TargetSide(c.log, c.name, STREAMS, max_batch=200, relays_from=["B"]),
            relay=True,
            **gossip,
        ).start(),
        a_to_c.start(),
    ]
    await append(a, executions("a", runs=6, tests=50))
    await caught_up(c, a)  # only B's relay can have brought them
    assert a_to_c.connector.connects == 0
    relayed = await markers(c)
    assert relayed
    assert all(m.via == "B" for m in relayed)

    a_to_c.connector.up = True
    await append(a, executions("b", runs=4, tests=50))
    await caught_up(c, a)
    await caught_up(b, a)
    originals = await events(a)
    assert_copied_exactly_once(originals, await events(c), "A")
    assert_copied_exactly_once(originals, await events(b), "A")
    assert sum(m.count for m in await markers(c)) == 500
    # The restored direct link resumes from what C holds (some of it relayed by B).
    want = await chain_marks(a, "A")

    async def direct_caught_up() -> bool:
        chains = a_to_c.source.stats()["chains"]
        return all(chains[k]["acked_seq"] >= v for k, v in want.items())

    await eventually(direct_caught_up, "the restored A->C link to catch up")
    assert_copied_exactly_once(originals, await events(c), "A")


class _CountingLog(JetStreamEventLog):
    """The real log; counts the atomic batches the target sends (a retry is a second)."""

    sent = 0

    async def append_raw_batch(self, stream: str, messages: Any) -> Any:
        self.sent += 1
        return await super().append_raw_batch(stream, messages)


async def test_a_commit_reply_timeout_is_a_retry_not_a_duplicate(
    servers: Callable[[str], NatsServerProcess],
) -> None:
    # The server is paused while the target commits a batch: no commit reply within the
    # ack timeout, so the target sends the batch again. Once resumed, the server stores
    # the first try, and the retry's condition on the chain's marker fails. That stored
    # batch is this target's own: counted as applied and as a commit retry, never as
    # duplicates skipped or a conflict, and every event is stored once and acked.
    server = servers("B")
    nc = await nats.connect(server.url)
    specs = load_stream_specs()
    await apply_streams(nc, specs)
    log = _CountingLog(nc, specs, ack_timeout_s=0.5)
    try:
        target = TargetSide(log, "B", STREAMS)
        subject = subject_in(5)
        frames = [frame(seq, seq - 1, subject) for seq in range(1, 5)]
        peer = Peer(target, "A")
        assert await peer.ask(open_frame(partition=5)) == Resume(applied_seq=0)
        assert await peer.ask(frames[0]) == Ack(applied_seq=1)
        with paused(server.pid):
            await peer.ours.send(DataBatch(events=tuple(frames[1:])))
            await until(lambda: log.sent >= 3, "the batch sent again", timeout_s=GUARD_S)
        assert await asyncio.wait_for(peer.ours.recv(), GUARD_S) == Ack(applied_seq=4)
        await peer.ours.close()
        await asyncio.wait_for(peer.task, GUARD_S)

        stored = await events(Cluster("B", log))
        assert [e.headers[Headers.ORIGIN_SEQ] for e in stored] == ["1", "2", "3", "4"]
        assert [(m.first_seq, m.last_seq) for m in await markers(Cluster("B", log))] == [
            (1, 1),
            (2, 4),
        ]
        chain = target.stats()["chains"][chain_key("A", "AQE_TESTS", 5)]
        assert chain["commit_retries"] >= 1
        assert (chain["batches"], chain["events"], chain["applied_seq"]) == (2, 4, 4)
        assert (chain["duplicates_skipped"], chain["conflicts"]) == (0, 0)
    finally:
        await log.close()
