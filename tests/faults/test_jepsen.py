"""A Jepsen-style fault suite: aqe's clients on a 3-node cluster under crashes, pauses
and partitions, then a heal and a check of everything they were told.

The cluster's routes run through TCP proxies (``support.tcp_proxy``), so a partition
is a set of cut proxies. A seeded schedule (``--seed N`` or ``AQE_FAULT_SEED=N``; by
default seeds 1, 2 and 3) injects one fault at a time: SIGKILL and restart of a node,
SIGSTOP and SIGCONT of a node, a node cut off from both others, one route cut. Meanwhile
the workload runs through aqe's own APIs, each client on its own connection to every
node, every operation recorded with its outcome (``support.history_checker``):

* ingesters parse generated JUnit reports and append each run (``append_run``, one
  atomic batch per run) and single ``TestCaseExecuted`` events, retrying while the log
  is unavailable (same event ids, as aqe's commands do);
* a folder runs the catalog and history projections incrementally (the projection
  runner, resuming from its checkpoint each time);
* three candidates campaign for one lease (``LeaderElection``), write fenced
  checkpoints while leading, renew, release or let the lease lapse;
* four voters vote on a stream of proposals (byzantine mode, f = 1) and tally them.

After the heal: no acked event lost, none stored twice, no atomic run stored in part,
no write answered "failed" stored; each projection's rebuild from zero equals its
incremental state at the stream's end; one leader per term, as the log shows it and as
every candidate was told; one verdict per proposal, whoever reads it. A table of the
numbers is printed for every seed; a failure prints the seed, the schedule and the
history, so ``just test-faults -k jepsen --seed N`` replays it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec
import pytest

from aqe.config import Settings
from aqe.coordination.identity import sign_registration
from aqe.coordination.lease import LeaderElection, lease_filter
from aqe.coordination.voting import (
    cast_vote,
    generate_keypair,
    open_proposal,
    sign_vote,
    tally,
)
from aqe.errors import (
    BatchRejectedError,
    CommandRejectedError,
    ConcurrencyError,
    DeposedError,
    LogError,
    LogUnavailableError,
)
from aqe.events import (
    AgentRegistered,
    Envelope,
    LeaseAcquired,
    LeaseReleased,
    LeaseRenewed,
    TestCaseExecuted,
    TestRunFinished,
)
from aqe.events.coordination import LeaderCheckpointed, VoteCast, Voter
from aqe.ingest.junit import parse_junit
from aqe.ingest.runs import append_run, run_events
from aqe.log import load_stream_specs
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.log.retry import while_unavailable
from aqe.projections import (
    MemoryDeadLetters,
    ProjectionRunner,
    SnapshotStore,
    get_projection,
    verify,
)
from aqe.server import LocalCluster
from support.history_checker import (
    History,
    LeaseRecord,
    Op,
    check_events,
    check_leases,
    check_verdicts,
    render_table,
)
from support.tcp_proxy import ProxyNet

pytestmark = [pytest.mark.faults, pytest.mark.cluster, pytest.mark.timeout(420)]

T = TypeVar("T")
DEFAULT_SEEDS = (1, 2, 3)
WORKLOAD_S = float(os.environ.get("AQE_FAULT_WORKLOAD_S", "30"))
OP_RETRY_S = 8.0
"""How long one operation retries while the log is unavailable (longest fault: 5 s)."""
GROUP = "jepsen"
STREAMS = ("AQE_TESTS", "AQE_COORD", "AQE_AGENTS")

DEFINITE = (ConcurrencyError, BatchRejectedError, CommandRejectedError, DeposedError, LogError)
"""Refusals: nothing was stored. (``LogUnavailableError`` is a ``LogError`` but is
caught first, as indeterminate.)"""
INDETERMINATE = (LogUnavailableError, TimeoutError)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "seed" not in metafunc.fixturenames:
        return
    given = metafunc.config.getoption("--seed", None)
    env = os.environ.get("AQE_FAULT_SEED", "")
    seeds = given or [int(s) for s in env.split(",") if s.strip()] or list(DEFAULT_SEEDS)
    metafunc.parametrize("seed", seeds, ids=[f"seed{s}" for s in seeds])


# -- the schedule ---------------------------------------------------------------------------

FaultKind = Literal["kill", "pause", "isolate", "cut-link"]
KINDS: tuple[FaultKind, ...] = ("kill", "pause", "isolate", "cut-link")


@dataclass(frozen=True)
class Fault:
    at: float
    """Seconds after the workload started."""
    kind: FaultKind
    nodes: tuple[str, ...]
    hold: float
    """Seconds until it is healed."""

    def __str__(self) -> str:
        return f"t={self.at:5.1f}s {self.kind:<8} {','.join(self.nodes):<6} for {self.hold:.1f}s"


def make_schedule(seed: int, duration: float, names: tuple[str, ...]) -> list[Fault]:
    """One fault at a time; the first four are the four kinds in a seeded order."""
    rng = random.Random(seed)
    first = list(KINDS)
    rng.shuffle(first)
    out: list[Fault] = []
    t = rng.uniform(2.0, 3.0)
    while t < duration - 3.0:
        kind = first.pop(0) if first else rng.choice(KINDS)
        nodes = tuple(sorted(rng.sample(names, 2))) if kind == "cut-link" else (rng.choice(names),)
        hold = round(rng.uniform(2.0, 5.0), 1)
        out.append(Fault(round(t, 1), kind, nodes, hold))
        t += hold + rng.uniform(1.0, 2.5)
    return out


class Nemesis:
    """Applies a schedule to a cluster whose routes run through ``net``."""

    def __init__(self, cluster: LocalCluster, net: ProxyNet, history: History) -> None:
        self.cluster = cluster
        self.net = net
        self.history = history
        self.applied: Counter[str] = Counter()
        self.log: list[str] = []
        self._killed: set[str] = set()

    def _links(self, fault: Fault) -> list[str]:
        if fault.kind == "cut-link":
            a, b = fault.nodes
            return [f"{a}->{b}", f"{b}->{a}"]
        (node,) = fault.nodes
        return [name for name in self.net.links if node in name.split("->")]

    async def inject(self, fault: Fault) -> None:
        node = fault.nodes[0]
        if fault.kind == "kill":
            await asyncio.to_thread(self.cluster.kill, node)
            self._killed.add(node)
        elif fault.kind == "pause":
            self.cluster.pause(node)
        else:
            self.net.cut(self._links(fault))
        self.applied[fault.kind] += 1
        self.log.append(f"{self.history.now():6.2f} inject {fault}")

    async def heal(self, fault: Fault) -> None:
        if fault.kind == "kill":
            await self._restart(fault.nodes[0])
        elif fault.kind == "pause":
            self.cluster.resume(fault.nodes[0])
        else:
            self.net.heal(self._links(fault))
        self.log.append(f"{self.history.now():6.2f} heal   {fault}")

    async def _restart(self, node: str) -> None:
        await asyncio.to_thread(self.cluster.restart, node, ready_timeout=60.0)
        self._killed.discard(node)

    async def run(self, schedule: list[Fault], started: float) -> None:
        for fault in schedule:
            await asyncio.sleep(max(0.0, started + fault.at - time.monotonic()))
            await self.inject(fault)
            try:
                await asyncio.sleep(fault.hold)
            finally:
                await self.heal(fault)

    async def heal_everything(self) -> None:
        for node in list(self.cluster.paused):
            self.cluster.resume(node)
        for node in list(self._killed):
            await self._restart(node)
        self.net.heal_all()


# -- the workload ---------------------------------------------------------------------------


@dataclass
class Ctx:
    seed: int
    urls: list[str]
    history: History
    workdir: Path
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    logs: list[JetStreamEventLog] = field(default_factory=list)
    verdicts_seen: list[Op] = field(default_factory=list)
    proposals: list[str] = field(default_factory=list)

    def rng(self, name: str) -> random.Random:
        return random.Random(f"{self.seed}:{name}")

    async def connect(self, *urls: str) -> JetStreamEventLog:
        settings = Settings.from_env(env={}, nats_url=",".join(urls or self.urls))
        log = await while_unavailable(lambda: JetStreamEventLog.connect(settings), within_s=30)
        self.logs.append(log)
        return log

    def op(self, process: str, kind: str, key: str, ids: Any = (), **kw: Any) -> Any:
        return self.history.op(
            process,
            kind,
            key,
            ids,
            definite=DEFINITE,
            indeterminate=INDETERMINATE,
            **kw,
        )

    async def pause(self, rng: random.Random, low: float, high: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), rng.uniform(low, high))


def junit_report(rng: random.Random, name: str, n: int) -> bytes:
    """A pytest-style JUnit report with 5-40 cases, some failed or skipped."""
    cases = []
    for i in range(rng.randint(5, 40)):
        roll = rng.random()
        inner = ""
        if roll < 0.1:
            inner = f'<failure message="assert {i} == {i + 1}">AssertionError</failure>'
        elif roll < 0.15:
            inner = '<skipped message="not on this platform"/>'
        module = f"tests.test_{name}_{i % 4}"
        cases.append(
            f'<testcase classname="{module}" name="test_case_{i}[{n}]" '
            f'time="{rng.uniform(0.001, 0.5):.3f}">{inner}</testcase>'
        )
    body = "".join(cases)
    return (
        f'<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" '
        f'tests="{len(cases)}">{body}</testsuite></testsuites>'
    ).encode()


async def ingester(ctx: Ctx, name: str) -> None:
    log = await ctx.connect()
    rng = ctx.rng(name)
    n = 0
    while not ctx.stop.is_set():
        n += 1
        data = junit_report(rng, name, n)
        report = parse_junit(data, path=f"{name}-{n}.xml", digest=hashlib.sha256(data).hexdigest())
        events = run_events([report], run_id=f"s{ctx.seed}-{name}-{n}")
        ids = [e.default_id() for e in events]
        # The run's body lands atomically and its TestRunFinished marker after it (or,
        # before commit markers, all of it in one atomic batch: a stricter case).
        assert isinstance(events[-1], TestRunFinished)
        units = [ids[:-1], ids[-1:]]
        run_id = events[0].run_id  # type: ignore[attr-defined]
        with ctx.op(name, "ingest", run_id, ids, units=units):
            await while_unavailable(lambda ev=events: append_run(log, ev), within_s=OP_RETRY_S)
        single = TestCaseExecuted(
            test_id=f"tests/test_single.py::test_{name}_{n}",
            run_id=f"s{ctx.seed}-{name}-singles",
            outcome=rng.choice(("passed", "failed")),
            duration_s=round(rng.uniform(0, 1), 3),
        )
        eid = single.default_id()
        with ctx.op(name, "append", single.test_id, [eid]):
            await while_unavailable(
                lambda ev=single, i=eid: log.append(ev, event_id=i), within_s=OP_RETRY_S
            )
        await ctx.pause(rng, 0.05, 0.3)


async def fold_once(log: JetStreamEventLog, name: str, root: Path) -> dict[str, int]:
    projection = get_projection(name)
    runner = ProjectionRunner(
        projection, log, SnapshotStore(projection, root / name), MemoryDeadLetters()
    )
    stats = await runner.run()
    if stats.dead_letters:
        raise AssertionError(f"{name}: {stats.dead_letters} dead letters")
    return stats.checkpoints


async def folder(ctx: Ctx) -> None:
    log = await ctx.connect()
    rng = ctx.rng("folder")
    while not ctx.stop.is_set():
        for name in ("catalog", "history"):
            with ctx.op("folder", "fold", name) as op:
                async with asyncio.timeout(20):
                    op.value = await fold_once(log, name, ctx.workdir / "live")
        await ctx.pause(rng, 1.0, 3.0)


async def candidate(ctx: Ctx, cid: str) -> None:
    log = await ctx.connect()
    rng = ctx.rng(cid)
    election = LeaderElection(log, GROUP, cid, lease_ms=1000, poll_ms=250, unavailable_s=OP_RETRY_S)
    writes = 0
    while not ctx.stop.is_set():
        with ctx.op(cid, "elect", GROUP) as op:
            lease = await election.try_acquire()
            if lease is None:
                op.outcome = "fail"
            else:
                op.value = lease.term
        if lease is None or op.outcome != "ok":
            await ctx.pause(rng, 0.1, 0.3)
            continue
        for _ in range(rng.randint(1, 4)):
            writes += 1
            event = LeaderCheckpointed(group=GROUP, holder=cid, term=lease.term, n=writes)
            eid = hashlib.sha256(f"{cid}/{writes}".encode()).hexdigest()[:32]
            with ctx.op(cid, "fenced", f"term {lease.term}", [eid]) as op:
                op.value = lease.term
                await election.append_fenced(event, event_id=eid)
            if op.outcome != "ok":
                break
            with ctx.op(cid, "renew", f"term {lease.term}") as op:
                op.value = (await election.renew()).last_seq
            if op.outcome != "ok":
                break
            await ctx.pause(rng, 0.1, 0.3)
        if election.lease is not None and rng.random() < 0.5:
            with ctx.op(cid, "release", f"term {lease.term}"):
                await election.release("jepsen")
        await ctx.pause(rng, 0.2, 1.2)  # a lease left unrenewed lapses meanwhile
    if election.lease is not None:
        with contextlib.suppress(LogError, DeposedError):
            await election.release("stopped")


async def voters(ctx: Ctx) -> None:
    ids = [f"v{i}" for i in range(4)]
    keys = {a: generate_keypair() for a in [*ids, "chair"]}
    electorate = [Voter(agent_id=a, public_key=keys[a].public_key) for a in ids]
    proposer = await ctx.connect()
    logs = {a: await ctx.connect() for a in ids}
    rng = ctx.rng("voters")
    n = 0
    # Every voter and the chair register their keys first (signed, as readers require);
    # a registration that stays unknown is sent again until it is acked.
    for agent, pair in keys.items():
        registration = sign_registration(
            AgentRegistered(
                agent_id=agent, role="voter", public_key=pair.public_key, nonce=f"s{ctx.seed}"
            ),
            pair.private_key,
        )
        rid = registration.default_id()
        while not ctx.stop.is_set():
            with ctx.op("proposer", "register", agent, [rid]) as op:
                await while_unavailable(
                    lambda r=registration, i=rid: proposer.append(r, event_id=i),
                    within_s=OP_RETRY_S,
                )
            if op.outcome == "ok":
                break

    async def vote(pid: str, voter: str, choice: str, delay: float) -> None:
        await asyncio.sleep(delay)
        signature = sign_vote(keys[voter].private_key, pid, voter, choice)
        eid = VoteCast(proposal_id=pid, voter=voter, choice=choice, signature=signature)
        with ctx.op(voter, "vote", pid, [eid.default_id()]):
            await cast_vote(
                logs[voter], pid, voter, choice, keys[voter].private_key, deadline_s=OP_RETRY_S
            )
        with ctx.op(voter, "tally", pid) as op:
            op.value = await tally(logs[voter], pid, deadline_s=OP_RETRY_S)

    while not ctx.stop.is_set():
        n += 1
        pid = f"s{ctx.seed}-p{n}"
        with ctx.op("proposer", "propose", pid) as op:
            await open_proposal(
                proposer,
                pid,
                question=f"ship build {n}?",
                options=["ship", "block"],
                mode="byzantine",
                faulty=1,
                voters=electorate,
                opened_by="chair",
                private_key=keys["chair"].private_key,
                deadline_s=OP_RETRY_S,
            )
        if op.outcome != "ok":
            continue
        ctx.proposals.append(pid)
        choices = {a: rng.choice(("ship", "ship", "block")) for a in ids}
        await asyncio.gather(*(vote(pid, a, c, rng.uniform(0, 0.5)) for a, c in choices.items()))
        await ctx.pause(rng, 0.3, 1.0)


# -- after the heal -------------------------------------------------------------------------


async def settle(cluster: LocalCluster, log: JetStreamEventLog, within_s: float = 90) -> list[str]:
    """Wait until every stream has a leader and current replicas; notes on what did not."""
    nc = log.connection
    js = nc.jetstream()
    notes: list[str] = []
    deadline = time.monotonic() + within_s
    for spec in log.specs:
        while True:
            try:
                info = await js.stream_info(spec.name)
                replicas = info.cluster.replicas if info.cluster else []
                if info.cluster and info.cluster.leader and all(r.current for r in replicas or []):
                    break
                state = info.cluster
            except Exception as exc:
                state = exc
            if time.monotonic() > deadline:
                notes.append(f"{spec.name} not settled after {within_s:g} s: {state}")
                break
            await asyncio.sleep(0.5)
    return notes


async def read_all(log: JetStreamEventLog, stream: str) -> list[Envelope]:
    async def read() -> list[Envelope]:
        return [env async for env in log.read(stream)]

    return await while_unavailable(read, within_s=60)


def lease_records(envelopes: list[Envelope]) -> list[LeaseRecord]:
    prefix = lease_filter(GROUP)[:-1]
    records = []
    for env in envelopes:
        if not env.subject.startswith(prefix):
            continue
        event = env.decode()
        if isinstance(event, LeaseAcquired):
            records.append(LeaseRecord(env.seq, "acquired", event.holder, env.seq, event.after_seq))
        elif isinstance(event, LeaseRenewed):
            records.append(LeaseRecord(env.seq, "renewed", event.holder, event.term))
        elif isinstance(event, LeaseReleased):
            records.append(LeaseRecord(env.seq, "released", event.holder, event.term))
    return records


def fenced_writes(envelopes: list[Envelope]) -> dict[int, tuple[str, int]]:
    out = {}
    for env in envelopes:
        if env.subject.startswith("aqe.coord.leader."):
            event = env.decode()
            if isinstance(event, LeaderCheckpointed) and event.group == GROUP:
                out[env.seq] = (event.holder, event.term)
    return out


@dataclass
class Outcome:
    table: list[tuple[str, object]]
    problems: list[str]


async def check(ctx: Ctx, cluster: LocalCluster, nemesis: Nemesis) -> Outcome:
    log = await ctx.connect()
    notes = await settle(cluster, log)
    stored = {s: await read_all(log, s) for s in STREAMS}
    ops = ctx.history.ops
    events = check_events(ops, [env.event_id for s in STREAMS for env in stored[s]])
    problems = events.problems()

    coord = stored["AQE_COORD"]
    problems += check_leases(lease_records(coord), ops, fenced_writes(coord))
    leader_problems = len(problems) - len(events.problems())

    # Each projection: fold the live one to the stream's end, then rebuild it from zero.
    mismatches = 0
    for name in ("catalog", "history"):
        checkpoints = await while_unavailable(
            lambda n=name: fold_once(log, n, ctx.workdir / "live"), within_s=60
        )
        projection = get_projection(name)
        ends = {s: await log.last_seq(s) for s in projection.streams}
        report = await while_unavailable(
            lambda p=projection: verify(p, log, ctx.workdir / "live"), within_s=60
        )
        if not report.equal or checkpoints != ends:
            mismatches += 1
            problems.append(
                f"projection {name}: rebuild equal {report.equal} {report.differences[:5]}; "
                f"checkpoints {checkpoints} vs stream ends {ends}"
            )

    finals: dict[str, list[Any]] = {}
    for node in cluster.names:
        reader = await ctx.connect(cluster.url(node))
        for pid in ctx.proposals:
            verdict = await tally(reader, pid, deadline_s=60)
            finals.setdefault(pid, []).append(verdict)
    verdict_problems = check_verdicts(finals, [o for o in ops if o.kind == "tally"])
    problems += verdict_problems

    counts = ctx.history.counts()
    acked = sum(n for (_, outcome), n in counts.items() if outcome == "ok")
    kinds = sorted({kind for kind, _ in counts})
    table: list[tuple[str, object]] = [
        ("seed", ctx.seed),
        ("faults injected", dict(nemesis.applied)),
        ("operations", len(ops)),
        ("operations ok / fail / unknown", _by_outcome(counts)),
        *[(f"  {kind}", _by_outcome(counts, kind)) for kind in kinds],
        ("events stored", {s: len(stored[s]) for s in STREAMS}),
        ("acked writes", events.acked),
        ("acked writes lost", len(events.lost)),
        ("duplicate event ids", len(events.duplicates)),
        ("failed writes found stored", len(events.failed_present)),
        ("runs stored in part", len(events.partial)),
        (
            "unknown writes present / absent",
            (events.unknown_present, events.unknown - events.unknown_present),
        ),
        ("projection mismatches", mismatches),
        ("leader-per-term violations", leader_problems),
        ("terms", sum(1 for r in lease_records(coord) if r.action == "acquired")),
        ("proposals / verdict conflicts", (len(ctx.proposals), len(verdict_problems))),
        ("decided verdicts", sum(1 for v in finals.values() if v[0].status == "decided")),
        ("settle notes", notes or "-"),
        ("acked ops total", acked),
    ]
    return Outcome(table, problems)


def _by_outcome(counts: Counter[tuple[str, str]], kind: str | None = None) -> str:
    picked = Counter()
    for (k, outcome), n in counts.items():
        if kind is None or k == kind:
            picked[outcome] += n
    return f"{picked['ok']} / {picked['fail']} / {picked['info']}"


# -- the test -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def proxied_cluster(directory: Path) -> AsyncIterator[tuple[LocalCluster, ProxyNet]]:
    with ProxyNet() as net:
        cluster = await LocalCluster.start(directory, route_proxy=net.route_proxy, ready_timeout=60)
        try:
            yield cluster, net
        finally:
            await asyncio.to_thread(cluster.stop_sync)


async def _bounded(what: Awaitable[T], seconds: float, label: str) -> T:
    try:
        return await asyncio.wait_for(what, seconds)
    except TimeoutError:
        raise AssertionError(f"{label} did not finish within {seconds:g} s") from None


async def run_suite(
    seed: int, cluster: LocalCluster, net: ProxyNet, workdir: Path
) -> tuple[Outcome, list[Fault], Nemesis, History]:
    history = History()
    ctx = Ctx(seed, cluster.urls, history, workdir)
    nemesis = Nemesis(cluster, net, history)
    schedule = make_schedule(seed, WORKLOAD_S, cluster.names)
    admin = await ctx.connect()
    try:
        specs = [msgspec.structs.replace(s, replicas=3) for s in load_stream_specs()]
        await while_unavailable(lambda: apply_streams(admin.connection, specs), within_s=30)
        clients: list[Callable[[], Awaitable[None]]] = [
            lambda: ingester(ctx, "ing1"),
            lambda: ingester(ctx, "ing2"),
            lambda: folder(ctx),
            *[lambda c=c: candidate(ctx, c) for c in ("e1", "e2", "e3")],
            lambda: voters(ctx),
        ]
        tasks = [asyncio.create_task(c()) for c in clients]
        started = time.monotonic()
        try:
            await nemesis.run(schedule, started)
            await asyncio.sleep(max(0.0, started + WORKLOAD_S - time.monotonic()))
        finally:
            ctx.stop.set()
            await nemesis.heal_everything()
            await _bounded(asyncio.gather(*tasks), 120, "the clients")
        outcome = await _bounded(check(ctx, cluster, nemesis), 240, "the checks")
    finally:
        for log in ctx.logs:
            with contextlib.suppress(Exception):
                await log.close()
    return outcome, schedule, nemesis, history


async def test_jepsen_faults(seed: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with proxied_cluster(tmp_path / "cluster") as (cluster, net):
        outcome, schedule, nemesis, history = await run_suite(seed, cluster, net, tmp_path / "work")
    table = render_table(outcome.table)
    with capsys.disabled():
        print(f"\n-- fault suite, seed {seed} --\n{table}")
    errors = Counter(
        f"{op.kind} {op.outcome}: {op.error[:110]}"
        for op in history.ops
        if op.error and op.kind != "elect"
    )
    with capsys.disabled():
        for line, n in errors.most_common(12):
            print(f"  {n:4d} x {line}")
    if outcome.problems:
        replay = f"replay: AQE_FAULT_SEED={seed} just test-faults -k jepsen"
        raise AssertionError(
            "\n".join(
                [
                    f"seed {seed}: {len(outcome.problems)} problems ({replay})",
                    *outcome.problems[:40],
                    "schedule:",
                    *map(str, schedule),
                    "nemesis:",
                    *nemesis.log,
                    "history:",
                    history.text(),
                ]
            )
        )
    assert sum(nemesis.applied.values()) == len(schedule)
    assert nemesis.applied.keys() == set(KINDS)


def test_schedule_is_seeded_and_bounded() -> None:
    names = ("n1", "n2", "n3")
    first = make_schedule(7, 30, names)
    assert first == make_schedule(7, 30, names)
    assert first != make_schedule(8, 30, names)
    assert {f.kind for f in first} == set(KINDS)
    for a, b in itertools.pairwise(first):
        assert b.at >= a.at + a.hold  # one fault at a time
    assert first[-1].at + first[-1].hold <= 30


async def test_cut_proxies_partition_the_cluster(tmp_path: Path) -> None:
    """Core messages stop crossing a cut route (both ways) and flow again once healed."""
    import nats

    async def crosses(cluster: LocalCluster, src: str, dst: str) -> bool:
        pub = await nats.connect(cluster.url(src))
        sub_conn = await nats.connect(cluster.url(dst))
        try:
            sub = await sub_conn.subscribe("probe")
            await sub_conn.flush()
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:  # interest takes a moment to propagate
                await pub.publish("probe", b"x")
                await pub.flush()
                with contextlib.suppress(TimeoutError, nats.errors.TimeoutError):
                    await sub.next_msg(timeout=0.2)
                    return True
            return False
        finally:
            await pub.close()
            await sub_conn.close()

    async def eventually(pred: Callable[[], Awaitable[bool]], within: float = 30) -> bool:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if await pred():
                return True
        return False

    async with proxied_cluster(tmp_path / "cluster") as (cluster, net):
        assert await eventually(lambda: crosses(cluster, "n1", "n2"))
        net.cut([name for name in net.links if "n1" in name.split("->")])
        assert not await crosses(cluster, "n1", "n2")
        assert not await crosses(cluster, "n3", "n1")
        assert await crosses(cluster, "n2", "n3")
        net.heal_all()
        assert await eventually(lambda: crosses(cluster, "n1", "n2"))
        assert await eventually(lambda: crosses(cluster, "n3", "n1"))
