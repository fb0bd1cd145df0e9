"""Audit seals: hashing throughput, sealing and verifying 1M events, proofs at 1M.

Run with ``just bench`` (or ``python tests/benchmarks/bench_audit.py [--events N]``).

1. Hashing, no server, synthetic messages (a ``tests.case.executed.v1`` payload of about
   200 bytes and aqe's headers): leaf hashes per second (canonical leaf bytes + SHA-256)
   and the Merkle tree over them (frontier extension, what a seal adds), against a bare
   ``hashlib.sha256(payload)`` loop over the same payloads in the same run.
2. A real nats-server with N events in ``AQE_TESTS``: ``seal_stream`` (read + hash +
   tree + signed seals), ``verify_stream`` and a bare ``JetStreamEventLog.read`` of the
   same stream (the floor both stand on), each timed in the same run.
3. Proofs at N: loading a prover (read + tree), making 1,000 proofs of random events,
   their JSON size, and checking them offline.

Prints times and ratios against the baselines; asserts no time (shared, noisy machines).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nats
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aqe.audit.leaf import message_leaf_hash
from aqe.audit.merkle import extend_frontier, frontier_root
from aqe.audit.proof import Prover, check_proof, decode_proof, encode_proof
from aqe.audit.seal import seal_stream, trusted_keys
from aqe.audit.verify import verify_stream
from aqe.coordination.voting import public_key_b64
from aqe.events import Envelope, TestCaseExecuted
from aqe.log import NewEvent, load_stream_specs
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.server import NatsServerProcess

STREAM = "AQE_TESTS"


def event(i: int) -> TestCaseExecuted:
    return TestCaseExecuted(
        test_id=f"tests/unit/test_mod{i % 50}.py::test_case[{i % 2000}]",
        run_id=f"run-{i // 2000}",
        outcome="failed" if i % 23 == 0 else "passed",
        duration_s=round((i % 97) / 100, 2),
    )


def synthetic(n: int) -> list[Envelope]:
    out = []
    for i in range(n):
        e = event(i)
        out.append(
            Envelope(
                stream=STREAM,
                seq=i + 1,
                subject=f"aqe.tests.case.t{i % 2000}.executed",
                event_id=e.default_id(),
                event_type=e.type_tag(),
                recorded_at_ns=i,
                data=e.to_json(),
                headers={
                    "Nats-Msg-Id": e.default_id(),
                    "Aqe-Event-Type": e.type_tag(),
                    "Aqe-Envelope": "1",
                },
            )
        )
    return out


def bench_hashing(n: int, rounds: int = 3) -> None:
    chunk = min(n, 100_000)
    envs = synthetic(chunk)
    payloads = [e.data for e in envs]
    bare_s, leaf_s, tree_s = [], [], []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(n // chunk):
            for p in payloads:
                hashlib.sha256(p).digest()
        bare_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        leaves: list[bytes] = []
        for _ in range(n // chunk):
            leaves += [message_leaf_hash(e) for e in envs]
        leaf_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        frontier_root(extend_frontier([], 0, leaves))
        tree_s.append(time.perf_counter() - t)
    done = (n // chunk) * chunk
    bare, leaf, tree = (statistics.median(x) for x in (bare_s, leaf_s, tree_s))
    print(f"hashing {done:,} synthetic events (median of {rounds}):")
    print(f"  bare sha256(payload)     {done / bare:12,.0f} events/s")
    print(f"  leaf hash                {done / leaf:12,.0f} events/s  ({bare / leaf:.2f}x bare)")
    print(
        f"  leaf hash + tree (seal)  {done / (leaf + tree):12,.0f} events/s  "
        f"({bare / (leaf + tree):.2f}x bare; tree alone {done / tree:,.0f}/s)"
    )


async def fill(log: JetStreamEventLog, n: int) -> None:
    step = 50_000
    for start in range(0, n, step):
        await log.append_batch(
            [NewEvent(event=event(i), event_id=f"e{i}") for i in range(start, min(n, start + step))]
        )


async def bench_server(n: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        server = NatsServerProcess.start_sync(Path(tmp) / "js", log_file=Path(tmp) / "nats.log")
        try:
            nc = await nats.connect(server.url)
            await apply_streams(nc, load_stream_specs())
            log = JetStreamEventLog(nc)
            key = Ed25519PrivateKey.generate()
            trusted = trusted_keys([public_key_b64(key)])
            t = time.perf_counter()
            await fill(log, n)
            print(f"server: {n:,} events appended in {time.perf_counter() - t:.1f} s")

            t = time.perf_counter()
            count = 0
            async for _ in log.read(STREAM):
                count += 1
            read_s = time.perf_counter() - t
            t = time.perf_counter()
            seals = await seal_stream(log, STREAM, key)
            seal_s = time.perf_counter() - t
            t = time.perf_counter()
            verdict = await verify_stream(log, STREAM, trusted)
            verify_s = time.perf_counter() - t
            assert verdict.intact, verdict.first_divergence
            assert count == n, count
            print(f"  bare read                {read_s:7.1f} s  {n / read_s:10,.0f} events/s")
            print(
                f"  seal ({len(seals)} seals)         {seal_s:7.1f} s  {n / seal_s:10,.0f} events/s"
                f"  ({seal_s / read_s:.2f}x read)"
            )
            print(
                f"  verify                   {verify_s:7.1f} s  {n / verify_s:10,.0f} events/s"
                f"  ({verify_s / read_s:.2f}x read)"
            )

            t = time.perf_counter()
            prover = await Prover.load(log, STREAM)
            load_s = time.perf_counter() - t
            picked = random.Random(1).sample(range(1, n + 1), min(n, 1_000))
            t = time.perf_counter()
            docs = [encode_proof(await prover.prove(log, s)) for s in picked]
            prove_ms = (time.perf_counter() - t) / len(docs) * 1e3
            t = time.perf_counter()
            for s in picked:
                prover.tree.inclusion_proof(prover.index_of(s))
            path_us = (time.perf_counter() - t) / len(picked) * 1e6
            t = time.perf_counter()
            ok = sum(not check_proof(decode_proof(d), trusted) for d in docs)
            check_ms = (time.perf_counter() - t) / len(docs) * 1e3
            path = len(decode_proof(docs[0]).path)
            sizes = sorted(len(d) for d in docs)
            print(
                f"  proofs at {n:,}: prover load {load_s:.1f} s (read + tree); "
                f"{prove_ms:.2f} ms a proof (with its event read back; the path alone "
                f"{path_us:.0f} us), "
                f"{check_ms:.2f} ms to check one offline; {ok}/{len(docs)} check"
            )
            print(
                f"  proof size: {path} hashes in the path, JSON {sizes[len(sizes) // 2]:,} bytes "
                f"median ({sizes[0]:,}..{sizes[-1]:,})"
            )
            await log.close()
        finally:
            server.stop_sync()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    bench_hashing(args.events)
    asyncio.run(bench_server(args.events))
    return 0


if __name__ == "__main__":
    sys.exit(main())
