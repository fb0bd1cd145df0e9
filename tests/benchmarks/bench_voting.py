"""Votes per second to a Byzantine decision with 4, 7 and 10 voters, against raw appends.

Usage::

    python tests/benchmarks/bench_voting.py [--rounds R] [--voters 4,7,10] [--json]

The script starts its own nats-server (``aqe.server.NatsServerProcess``), applies the
project's streams and, for each electorate size ``n`` (``f = (n - 1) // 3``), measures
over ``R`` rounds (plus one warm-up round), interleaved so machine noise hits every side:

* ``cast`` (the default path): a proposal is opened; ``n`` voters, each on its own
  connection, call :func:`~aqe.coordination.voting.cast_vote` concurrently (it reads the
  proposal's votes, refuses a changed vote, signs and appends); an observer on another
  connection follows the proposal with
  :func:`~aqe.coordination.voting.await_verdict`. Time to decision runs from the
  proposal's append ack until the observer sees ``decided``; the server-side time is the
  deciding vote's server timestamp minus the proposal's.
* ``cast (no check)``: the same with ``refuse_change=False`` (one direct get of the
  proposal, then the append).
* baseline: ``EventLog.append_many`` of the same number of pre-signed ``VoteCast``
  events (plus the proposal) on one connection: the log's raw throughput for the same
  events, with no reads, checks or signing.

Votes per second to decision counts the votes the rule needs (``threshold``) over the
time to decision. Ratios are medians of per-round ratios. The cost of Ed25519 signing,
verifying and of folding one vote into the tally is measured on the CPU alone. The
script reports; it never fails on a number (exit 0), only on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aqe.coordination.identity import KeyBook, sign_proposal, sign_registration
from aqe.coordination.voting import (
    KeyPair,
    Tally,
    await_verdict,
    cast_vote,
    decision_threshold,
    generate_keypair,
    load_public_key,
    open_proposal,
    sign_vote,
    verify_vote,
)
from aqe.events import AgentRegistered, Envelope, ProposalOpened, VoteCast, Voter
from aqe.log import InMemoryEventLog, NewEvent, load_stream_specs
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.server import NatsServerProcess

_DECISION_TIMEOUT_S = 60.0
MODES = ("cast", "cast_nocheck", "append_many")


@contextmanager
def nats_server() -> Iterator[str]:
    """A throwaway JetStream server (aqe's own launcher) on a free port; yields its URL."""
    workdir = Path(tempfile.mkdtemp(prefix="aqe-bench-vote-"))
    try:
        with NatsServerProcess.start_sync(workdir / "js", log_file=workdir / "nats.log") as server:
            yield server.url
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def connect(url: str) -> JetStreamEventLog:
    import nats

    return JetStreamEventLog(await nats.connect(url), load_stream_specs())


class Electorate:
    def __init__(self, n: int) -> None:
        self.n = n
        self.f = (n - 1) // 3
        self.ids = [f"voter-{i}" for i in range(n)]
        self.keys: dict[str, KeyPair] = {a: generate_keypair() for a in self.ids}
        self.voters = tuple(Voter(agent_id=a, public_key=self.keys[a].public_key) for a in self.ids)
        # Readers count only proposals signed by a bound key over bound voter keys.
        self.keys["chair"] = generate_keypair()
        self.registrations = [
            sign_registration(
                AgentRegistered(agent_id=a, role="voter", public_key=k.public_key, nonce=a),
                k.private_key,
            )
            for a, k in self.keys.items()
        ]
        self.book = KeyBook()
        for i, reg in enumerate(self.registrations):
            self.book.admit(reg, i + 1)

    async def register(self, log: Any) -> None:
        for reg in self.registrations:
            await log.append(reg)

    def proposal(self, pid: str) -> ProposalOpened:
        return sign_proposal(
            ProposalOpened(
                proposal_id=pid,
                question="ship?",
                options=("ship", "block"),
                mode="byzantine",
                voters=self.voters,
                faulty=self.f,
                opened_by="chair",
            ),
            self.keys["chair"].private_key,
        )

    def vote(self, pid: str, voter: str) -> VoteCast:
        key = self.keys[voter].private_key
        return VoteCast(
            proposal_id=pid,
            voter=voter,
            choice="ship",
            signature=sign_vote(key, pid, voter, "ship"),
        )


async def one_vote(
    e: Electorate,
    admin: JetStreamEventLog,
    voters: Sequence[JetStreamEventLog],
    observer: JetStreamEventLog,
    *,
    check: bool,
) -> dict[str, float]:
    """Open, cast concurrently, wait for the observer to see the decision."""
    pid = f"bench-{uuid.uuid4().hex[:10]}"
    opened = await open_proposal(
        admin,
        pid,
        question="ship?",
        options=["ship", "block"],
        mode="byzantine",
        voters=e.voters,
        faulty=e.f,
        opened_by="chair",
        private_key=e.keys["chair"].private_key,
    )
    watcher = asyncio.create_task(await_verdict(observer, pid, timeout_s=_DECISION_TIMEOUT_S))
    start = time.perf_counter()
    casts = [
        cast_vote(log, pid, a, "ship", e.keys[a].private_key, refuse_change=check)
        for log, a in zip(voters, e.ids, strict=True)
    ]
    await asyncio.gather(*casts)
    all_cast = time.perf_counter() - start
    verdict = await watcher
    decided = time.perf_counter() - start
    if verdict.status != "decided" or verdict.decided_at_seq is None:
        raise RuntimeError(f"{pid}: no decision: {verdict.status} {verdict.reason}")
    opened_env = await admin.get("AQE_COORD", opened.seq)
    deciding = await admin.get("AQE_COORD", verdict.decided_at_seq)
    server_s = (deciding.recorded_at_ns - opened_env.recorded_at_ns) / 1e9
    return {"decided_s": decided, "all_cast_s": all_cast, "server_s": server_s}


async def baseline(e: Electorate, log: JetStreamEventLog) -> float:
    """Seconds for append_many of the proposal and n pre-signed votes."""
    pid = f"base-{uuid.uuid4().hex[:10]}"
    items = [NewEvent(event=e.proposal(pid))] + [NewEvent(event=e.vote(pid, a)) for a in e.ids]
    start = time.perf_counter()
    results = await log.append_many(items)
    took = time.perf_counter() - start
    if any(r.duplicate for r in results):
        raise RuntimeError("baseline hit dedup; ids are not fresh")
    return took


async def measure(url: str, sizes: Sequence[int], rounds: int) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    admin = await connect(url)
    await apply_streams(admin.connection, admin.specs)
    observer = await connect(url)
    try:
        for n in sizes:
            e = Electorate(n)
            await e.register(admin)
            voters = [await connect(url) for _ in range(n)]
            samples: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
            try:
                for rnd in range(rounds + 1):  # round 0 warms up, not reported
                    order = MODES if rnd % 2 == 0 else MODES[::-1]
                    for mode in order:
                        if mode == "append_many":
                            result = {"decided_s": await baseline(e, admin)}
                        else:
                            check = mode == "cast"
                            result = await one_vote(e, admin, voters, observer, check=check)
                        if rnd > 0:
                            samples[mode].append(result)
            finally:
                for log in voters:
                    await log.close()
            out[n] = {
                "f": e.f,
                "threshold": decision_threshold(e.proposal("x")),
                "samples": samples,
            }
    finally:
        await observer.close()
        await admin.close()
    return out


def cpu_costs(repeats: int = 2000) -> dict[str, float]:
    """Microseconds per vote: sign, verify, and folding one vote into a tally."""
    pair = generate_keypair()
    public = load_public_key(pair.public_key)
    start = time.perf_counter()
    sigs = [sign_vote(pair.private_key, "p", f"v{i}", "ship") for i in range(repeats)]
    sign_us = (time.perf_counter() - start) / repeats * 1e6
    votes = [
        VoteCast(proposal_id="p", voter=f"v{i}", choice="ship", signature=s)
        for i, s in enumerate(sigs)
    ]
    start = time.perf_counter()
    ok = sum(verify_vote(public, v) for v in votes)
    verify_us = (time.perf_counter() - start) / repeats * 1e6
    if ok != repeats:
        raise RuntimeError("a benchmark signature did not verify")
    e = Electorate(100)
    envs = asyncio.run(_envelopes(e))
    start = time.perf_counter()
    for _ in range(20):
        Tally.from_envelopes(envs, e.book)
    fold_us = (time.perf_counter() - start) / (20 * (len(envs) - 1)) * 1e6
    return {"sign_us": sign_us, "verify_us": verify_us, "fold_us": fold_us}


async def _envelopes(e: Electorate) -> list[Envelope]:
    log = InMemoryEventLog()
    await log.append(e.proposal("p"))
    for a in e.ids:
        await log.append(e.vote("p", a))
    return [env async for env in log.read("AQE_COORD")]


def report(results: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for n, r in results.items():
        s = r["samples"]
        base = [x["decided_s"] for x in s["append_many"]]
        for mode in ("cast", "cast_nocheck"):
            decided = [x["decided_s"] for x in s[mode]]
            rows.append(
                {
                    "voters": n,
                    "f": r["f"],
                    "threshold": r["threshold"],
                    "path": mode,
                    "decided_ms": statistics.median(decided) * 1e3,
                    "server_ms": statistics.median(x["server_s"] for x in s[mode]) * 1e3,
                    "all_cast_ms": statistics.median(x["all_cast_s"] for x in s[mode]) * 1e3,
                    "votes_per_s": statistics.median(r["threshold"] / d for d in decided),
                    "baseline_ms": statistics.median(base) * 1e3,
                    "baseline_events_per_s": statistics.median((n + 1) / b for b in base),
                    # How many times longer a decision takes than appending its events raw.
                    "ratio": statistics.median(d / b for d, b in zip(decided, base, strict=True)),
                }
            )
    return rows


def print_table(rows: list[dict[str, Any]], cpu: dict[str, float], rounds: int) -> None:
    print(f"Byzantine votes on one nats-server, median of {rounds} rounds (f = (n-1)//3)")
    header = (
        f"{'n':>3} {'f':>2} {'need':>4} {'path':<13} {'decided ms':>10} {'server ms':>9} "
        f"{'votes/s':>8} {'append_many ms':>14} {'x slower':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['voters']:>3} {r['f']:>2} {r['threshold']:>4} {r['path']:<13} "
            f"{r['decided_ms']:>10.1f} {r['server_ms']:>9.1f} {r['votes_per_s']:>8.0f} "
            f"{r['baseline_ms']:>14.2f} {r['ratio']:>7.1f}x"
        )
    print()
    print(
        "decided ms: proposal ack -> observer sees 'decided' (client clock); server ms: "
        "deciding vote's server timestamp - proposal's; append_many ms: the same n+1 "
        "events pre-signed, appended raw on one connection"
    )
    print(
        f"CPU per vote: sign {cpu['sign_us']:.1f} us, verify {cpu['verify_us']:.1f} us, "
        f"fold into the tally (verify included) {cpu['fold_us']:.1f} us"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (median)")
    parser.add_argument("--voters", default="4,7,10", help="electorate sizes, comma-separated")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.voters.split(",") if x.strip()]
    if args.rounds < 1 or not sizes or min(sizes) < 1:
        parser.error("--rounds and --voters must be positive")
    with nats_server() as url:
        results = asyncio.run(measure(url, sizes, args.rounds))
    cpu = cpu_costs()
    rows = report(results)
    if args.json:
        print(json.dumps({"rounds": args.rounds, "results": rows, "cpu": cpu}, indent=2))
    else:
        print_table(rows, cpu, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
