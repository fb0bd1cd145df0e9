"""Leader election with fencing on a real 3-node JetStream cluster, with real processes.

Each candidate is an ``aqe leader campaign`` process. The tests kill the leader process,
pause it past its lease, and kill the JetStream stream leader of ``AQE_COORD`` while
candidates race; the verdicts are read from the stream (server sequences and server
timestamps), not from the candidates' say-so:

* a new leader's ``LeaseAcquired`` lands within one lease period (+ poll) of the kill,
  and never before the old lease expired;
* a deposed leader's late fenced write is rejected by the server: every fenced write in
  the stream was made under the term current at its sequence;
* every ``LeaseAcquired`` replaced the lease message right before it (one winner per
  term) and every node reads the same holder and term.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from aqe.app import AppContext
from aqe.cli._leader import leader
from aqe.coordination.lease import LeaderElection, lease_filter, read_lease
from aqe.events import Envelope, LeaseAcquired, LeaseReleased, LeaseRenewed
from aqe.events.coordination import LeaderCheckpointed
from aqe.log import load_stream_specs
from aqe.log.jetstream import JetStreamEventLog
from aqe.log.retry import while_unavailable
from aqe.server import LocalCluster
from support.waiting import until

STREAM = "AQE_COORD"
NS_PER_MS = 1_000_000

# The real ``aqe`` entry point (main() with its error handling) with the leader group
# added, so these tests run whether or not the group is wired into ``aqe`` yet.
_AQE_WITH_LEADER = (
    "import sys\n"
    "from aqe.cli import cli, main\n"
    "from aqe.cli._leader import leader\n"
    "cli.add_command(leader)\n"
    "main(sys.argv[1:])\n"
)


class Candidate:
    """One ``aqe leader campaign --json`` process; its output goes to a file."""

    def __init__(self, cid: str, out: Path, proc: subprocess.Popen[bytes]) -> None:
        self.id = cid
        self.out = out
        self.proc = proc

    def lines(self) -> list[dict[str, Any]]:
        text = self.out.read_text(encoding="utf-8") if self.out.exists() else ""
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    def events(self, what: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line["event"] == what]

    def stderr(self) -> str:
        path = self.out.with_suffix(".err")
        return path.read_text(encoding="utf-8") if path.exists() else ""


class Candidates:
    def __init__(self, urls: list[str], group: str, workdir: Path) -> None:
        self.urls = urls
        self.group = group
        self.workdir = workdir
        self.all: list[Candidate] = []

    def start(self, cid: str, *args: str) -> Candidate:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AQE_")}
        env.update(AQE_NATS_URL=",".join(self.urls), AQE_DATA_DIR=str(self.workdir / "data"))
        out = self.workdir / f"{cid}.out"
        with out.open("wb") as stdout, out.with_suffix(".err").open("wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-c", _AQE_WITH_LEADER, "leader", "campaign", self.group,
                 "--id", cid, "--json", *args],
                stdout=stdout,
                stderr=stderr,
                env=env,
            )  # fmt: skip
        candidate = Candidate(cid, out, proc)
        self.all.append(candidate)
        return candidate

    def stop_all(self) -> None:
        for c in self.all:
            if c.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    c.proc.send_signal(signal.SIGCONT)
                c.proc.terminate()
        for c in self.all:
            try:
                c.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                c.proc.kill()
                c.proc.wait()

    async def wait_for(self, what: str, timeout: float, among: list[Candidate] | None = None,
                       count: int = 1) -> list[tuple[Candidate, dict[str, Any]]]:  # fmt: skip
        """Wait until ``count`` lines ``what`` appeared among the candidates."""
        deadline = time.monotonic() + timeout
        while True:
            found = [(c, line) for c in (among or self.all) for line in c.events(what)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                report = {c.id: (c.lines(), c.stderr()[-2000:]) for c in self.all}
                raise AssertionError(f"no {count} {what!r} within {timeout} s: {report}")
            await asyncio.sleep(0.05)


@pytest.fixture
def candidates(nats_cluster: LocalCluster, tmp_path: Path) -> Iterator[Candidates]:
    group = Candidates(nats_cluster.urls, "coordinators", tmp_path)
    try:
        yield group
    finally:
        group.stop_all()


@contextlib.asynccontextmanager
async def connect(urls: list[str], *, apply: bool = True) -> AsyncIterator[JetStreamEventLog]:
    import nats

    from aqe.log.admin import apply_streams

    nc = await nats.connect(urls, connect_timeout=2, max_reconnect_attempts=30)
    specs = load_stream_specs()
    if apply:
        await apply_streams(nc, specs)
    log = JetStreamEventLog(nc, specs)
    try:
        yield log
    finally:
        await log.close()


async def coord_messages(log: JetStreamEventLog) -> list[Envelope]:
    return [env async for env in log.read(STREAM)]


def lease_chain(envelopes: list[Envelope], group: str) -> list[tuple[Envelope, Any]]:
    """The group's lease messages, checked to form one chain of terms.

    Each acquisition replaced the lease message right before it (so each term has one
    winner) and every renewal or release belongs to the term in force.
    """
    prefix = lease_filter(group)[:-1]
    chain = [(env, env.decode()) for env in envelopes if env.subject.startswith(prefix)]
    previous_seq, term = 0, 0
    for env, event in chain:
        if isinstance(event, LeaseAcquired):
            assert event.after_seq == previous_seq, (env.seq, event, previous_seq)
            term = env.seq
        else:
            assert isinstance(event, LeaseRenewed | LeaseReleased)
            assert event.term == term, (env.seq, event, term)
        previous_seq = env.seq
    return chain


def assert_writes_fenced(envelopes: list[Envelope], group: str) -> list[tuple[int, int, str]]:
    """Every fenced write was stored while its own term was the group's current one."""
    holder_of: dict[int, str] = {}
    current = 0
    writes: list[tuple[int, int, str]] = []
    for env in envelopes:
        event = env.decode()
        if isinstance(event, LeaseAcquired) and event.group == group:
            current = env.seq
            holder_of[current] = event.holder
        elif isinstance(event, LeaderCheckpointed) and event.group == group:
            term = event.term
            assert term == current, f"write {event.n} at seq {env.seq} under term {current}"
            assert holder_of[term] == event.holder
            writes.append((env.seq, term, event.holder))
    return writes


# -- the CLI on one server ---------------------------------------------------------------


@pytest.mark.nats
def test_leader_status_and_campaign_cli(nats_url: str, tmp_path: Path) -> None:
    runner = CliRunner()
    app = AppContext(str(tmp_path / "data"), nats_url)

    before = runner.invoke(leader, ["status", "ci", "--json"], obj=app)
    assert before.exit_code == 0, before.output
    assert json.loads(before.output) == {"group": "ci", "state": "none", "holder": None,
                                         "term": None}  # fmt: skip

    ran = runner.invoke(
        leader,
        ["campaign", "ci", "--id", "solo", "--lease-ms", "300", "--write-every-ms", "50",
         "--for-s", "0.6", "--json"],
        obj=app,
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output
    lines = [json.loads(line) for line in ran.output.splitlines()]
    kinds = [line["event"] for line in lines]
    assert kinds[0] == "campaigning"
    assert kinds[1] == "elected"
    assert kinds[-2:] == ["released", "stopped"]
    assert "late-write-rejected" not in kinds
    term = lines[1]["term"]

    after = runner.invoke(leader, ["status", "ci", "--json"], obj=app)
    view = json.loads(after.output)
    assert (view["state"], view["holder"], view["term"]) == ("released", "solo", term)
    text = runner.invoke(leader, ["status", "ci"], obj=app)
    assert f"released  holder solo  term {term}" in text.output

    bad = runner.invoke(
        leader, ["campaign", "ci", "--id", "x", "--lease-ms", "100", "--renew-every-ms", "100"],
        obj=app,
    )  # fmt: skip
    assert bad.exit_code == 2
    assert "--renew-every-ms" in bad.output


# -- the cluster -------------------------------------------------------------------------


@pytest.mark.cluster
async def test_killed_leader_is_replaced_within_one_lease_period(
    nats_cluster: LocalCluster, candidates: Candidates
) -> None:
    lease_ms, poll_ms = 1000, 250
    async with connect(nats_cluster.urls) as log:
        for cid in ("a", "b", "c"):
            candidates.start(cid, "--lease-ms", str(lease_ms))
        [(first, elected)] = await candidates.wait_for("elected", timeout=30)

        async def renewed() -> bool:
            chain = lease_chain(await coord_messages(log), "coordinators")
            return any(
                isinstance(ev, LeaseRenewed) and ev.term == elected["term"] for _, ev in chain
            )

        await until(renewed, "the first leader to renew its lease", timeout_s=30)

        killed_at_ns = time.time_ns()
        first.proc.kill()
        others = [c for c in candidates.all if c is not first]
        [(second, _)] = await candidates.wait_for("elected", timeout=15, among=others)

        chain = lease_chain(await coord_messages(log), "coordinators")
    old_term = elected["term"]
    acquisitions = [(env, ev) for env, ev in chain if isinstance(ev, LeaseAcquired)]
    assert [ev.holder for _, ev in acquisitions] == [first.id, second.id]
    new_env, new_event = acquisitions[1]
    old_last = next(env for env, _ in chain if env.seq == new_event.after_seq)
    assert any(isinstance(ev, LeaseRenewed) and ev.term == old_term for _, ev in chain)
    # Never before the old lease ran out (one clock: the servers and candidates share it),
    # and within one lease period plus a poll of the kill, with slack for a loaded machine.
    assert new_env.recorded_at_ns >= old_last.recorded_at_ns + lease_ms * NS_PER_MS - NS_PER_MS
    failover_ms = (new_env.recorded_at_ns - killed_at_ns) / NS_PER_MS
    assert failover_ms <= lease_ms + poll_ms + lease_ms / 2, failover_ms

    candidates.stop_all()
    assert second.proc.returncode == 0, second.stderr()
    assert [line["term"] for line in second.events("released")] == [new_env.seq]


@pytest.mark.cluster
async def test_paused_leaders_late_write_is_rejected_by_the_server(
    nats_cluster: LocalCluster, candidates: Candidates
) -> None:
    lease_ms = 1000
    async with connect(nats_cluster.urls) as log:
        for cid in ("a", "b", "c"):
            candidates.start(cid, "--lease-ms", str(lease_ms), "--write-every-ms", "100")
        [(old, elected)] = await candidates.wait_for("elected", timeout=30)

        async def wrote(who: str, term: int) -> bool:
            writes = assert_writes_fenced(await coord_messages(log), "coordinators")
            return any(w == who and t == term for _, t, w in writes)

        await until(
            lambda: wrote(old.id, elected["term"]), "some accepted writes first", timeout_s=30
        )

        old.proc.send_signal(signal.SIGSTOP)
        others = [c for c in candidates.all if c is not old]
        [(new, took_over)] = await candidates.wait_for("elected", timeout=15, among=others)
        await until(
            lambda: wrote(new.id, took_over["term"]), "the new leader to write too", timeout_s=30
        )
        old.proc.send_signal(signal.SIGCONT)
        [(_, rejected)] = await candidates.wait_for("late-write-rejected", timeout=15, among=[old])
        await candidates.wait_for("deposed", timeout=15, among=[old])
        candidates.stop_all()

        envelopes = await coord_messages(log)
    assert rejected["term"] == elected["term"]
    assert rejected["actual"] is None or rejected["actual"] >= took_over["term"]
    lease_chain(envelopes, "coordinators")
    writes = assert_writes_fenced(envelopes, "coordinators")
    new_term = took_over["term"]
    old_writes = [seq for seq, term, who in writes if who == old.id]
    assert old_writes, "the first leader's writes before the pause were accepted"
    assert max(old_writes) < new_term, "a write of the deposed leader landed after the new term"
    assert any(who == new.id and term == new_term for _, term, who in writes)
    assert old.proc.returncode == 0, old.stderr()


@pytest.mark.cluster
async def test_stream_leader_killed_during_an_election_gives_one_winner(
    nats_cluster: LocalCluster, candidates: Candidates
) -> None:
    group = "coordinators"
    async with connect(nats_cluster.urls) as log:
        # A holder that holds the lease while the candidates start, then shortens it
        # and dies: the candidates all wake when it runs out and race.
        ghost = LeaderElection(log, group, "ghost", lease_ms=60_000)
        held = await ghost.try_acquire()
        assert held is not None
        for cid in ("a", "b", "c"):
            candidates.start(cid, "--lease-ms", "1000")
        await candidates.wait_for("campaigning", timeout=30, count=3)
        await asyncio.sleep(0.5)  # each has read the lease and polls it
        last = await log.append(
            LeaseRenewed(group=group, holder="ghost", term=held.term, renewal=1, lease_ms=1500),
            expected_last_seq=held.last_seq,
            expected_subject=lease_filter(group),
        )
        renewed_at_ns = (await log.get(STREAM, last.seq)).recorded_at_ns
        stream_leader = await nats_cluster.stream_leader(STREAM)
        # Kill the stream's Raft leader just before the lease runs out: the candidates'
        # conditional appends meet the failover (503s, timeouts, retries with the same id).
        expires_at_ns = renewed_at_ns + 1500 * NS_PER_MS
        await asyncio.sleep(max(0.0, (expires_at_ns - time.time_ns()) / 1e9 - 0.1))
        killed_at_ns = time.time_ns()
        nats_cluster.kill(stream_leader)
        winners = await candidates.wait_for("elected", timeout=40)
    survivors = nats_cluster.running()
    assert stream_leader not in survivors
    assert all(c.proc.poll() is None for c in candidates.all), [c.stderr() for c in candidates.all]

    assert len({line["term"] for _, line in winners}) == len(winners)
    first_term = min(line["term"] for _, line in winners)
    winner = next(c for c, line in winners if line["term"] == first_term)
    views = []
    for name in survivors:
        async with connect([nats_cluster.url(name)], apply=False) as node_log:
            # Right after a stream leader kill the surviving replicas may still be
            # settling: a read that times out is started over (reads are idempotent).
            lease = await while_unavailable(lambda: read_lease(node_log, group), within_s=45)
            envelopes = await while_unavailable(lambda: coord_messages(node_log), within_s=45)
            chain = lease_chain(envelopes, group)
        assert lease is not None
        views.append((lease.holder, lease.term))
        acquisitions = [(env, ev) for env, ev in chain if isinstance(ev, LeaseAcquired)]
        assert acquisitions[0][1].holder == "ghost"
        # Exactly one candidate replaced the ghost's lease: one winner for that term.
        replacing = [(env, ev) for env, ev in acquisitions if ev.after_seq == last.seq]
        assert [(env.seq, ev.holder) for env, ev in replacing] == [(first_term, winner.id)]
        assert replacing[0][0].recorded_at_ns > killed_at_ns
    assert len(set(views)) == 1, views
