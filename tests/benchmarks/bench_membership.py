"""Membership: failure detection with and without gossip, and what heartbeats cost.

Usage::

    python tests/benchmarks/bench_membership.py [--trials N] [--interval S]
        [--check-intervals A,B,C] [--agents M] [--json]

The script starts its own nats-server and measures, in one run:

* **Detection time.** Three coordinators (``MembershipMonitor``) follow ``AQE_AGENTS``
  with staggered check intervals (default 0.1 s, 0.5 s and 1.0 s) and the same failure
  detector (heartbeat every ``--interval``, suspect after 3 missed). Per trial one agent
  registers, beats, and is killed (its heartbeat task cancelled, no retirement) at a
  random phase of its beat. The time from the kill to *every* coordinator considering
  it suspect is measured with gossip (the first coordinator to time the agent out
  appends ``AgentSuspected``; the others see it as soon as it reaches them) and without
  (each waits for its own timeout and its own next check). Trials alternate the two
  modes so that machine noise hits both alike; the ratio is no-gossip / gossip.
* **Heartbeat cost.** ``--agents`` runtimes beat at ``--interval`` for a few seconds:
  events per second per agent, beats achieved against the schedule, append latency,
  bytes stored per heartbeat and, from them, how ``AQE_AGENTS`` grows per agent per day
  when nothing is ever removed (the stream has ``max_age`` 0).
* **Fold cost.** A monitor folding the accumulated stream from sequence 1, against a
  bare read of the same messages (the baseline).

It reports; it never fails on a number (exit 0), only on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nats

from aqe.coordination.agent import AgentRuntime
from aqe.coordination.membership import FailureDetector, MembershipMonitor
from aqe.events import AgentHeartbeat
from aqe.log import NewEvent, load_stream_specs
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.server import NatsServerProcess

S = 1_000_000_000
_TIMEOUT_S = 60.0


@contextmanager
def nats_server() -> Iterator[str]:
    """A throwaway JetStream server (aqe's own launcher) on a free port; yields its URL."""
    workdir = Path(tempfile.mkdtemp(prefix="aqe-bench-"))
    try:
        with NatsServerProcess.start_sync(workdir / "js", log_file=workdir / "nats.log") as server:
            yield server.url
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- detection time --------------------------------------------------------------------


async def one_trial(
    log: JetStreamEventLog,
    monitors: list[MembershipMonitor],
    gossip: bool,
    interval_s: float,
    rng: random.Random,
) -> tuple[float, float]:
    """Kill one agent; seconds until the first and until every coordinator suspects it."""
    for mon in monitors:
        mon.gossip = gossip
    agent_id = f"agent-{'g' if gossip else 'n'}-{uuid.uuid4().hex[:8]}"
    agent = AgentRuntime(log, agent_id, "bench", interval_s=interval_s)
    await agent.start()
    await asyncio.gather(*(m.wait_for(agent_id, "alive", _TIMEOUT_S) for m in monitors))
    # A few beats, then a crash at a random phase of the beat.
    await asyncio.sleep(2 * interval_s + rng.uniform(0, interval_s))
    agent.kill()
    killed_at = time.time_ns()
    seen = await asyncio.gather(
        *(m.wait_for(agent_id, ("suspect", "dead"), _TIMEOUT_S) for m in monitors)
    )
    times = [(tr.at_ns - killed_at) / S for tr in seen]
    return min(times), max(times)


async def detection(
    url: str, trials: int, interval_s: float, check_intervals: list[float], seed: int
) -> dict[str, Any]:
    nc = await nats.connect(url)
    rng = random.Random(seed)
    try:
        specs = load_stream_specs()
        await apply_streams(nc, specs)
        log = JetStreamEventLog(nc, specs)
        detector = FailureDetector(interval_s=interval_s, suspect_after=3, dead_after=6)
        monitors = []
        for i, every in enumerate(check_intervals):
            mon = MembershipMonitor(log, f"coord-{i + 1}", detector, check_interval_s=every)
            await mon.start()
            monitors.append(mon)
            # Stagger the check phases too, not only their periods.
            await asyncio.sleep(rng.uniform(0, every))
        out: dict[str, dict[str, list[float]]] = {
            "gossip": {"first": [], "all": []},
            "no_gossip": {"first": [], "all": []},
        }
        # Trial 0 of each mode warms up and is not reported.
        for trial in range(trials + 1):
            order = (True, False) if trial % 2 == 0 else (False, True)
            for gossip in order:
                first, last = await one_trial(log, monitors, gossip, interval_s, rng)
                if trial > 0:
                    key = "gossip" if gossip else "no_gossip"
                    out[key]["first"].append(first)
                    out[key]["all"].append(last)
        sent = sum(m.suspicions_sent for m in monitors)
        for mon in monitors:
            await mon.stop()
        return {"samples": out, "suspicions_sent": sent}
    finally:
        await nc.drain()


# -- heartbeat and fold cost -----------------------------------------------------------


async def heartbeat_cost(
    url: str, agents: int, interval_s: float, seconds: float
) -> dict[str, Any]:
    nc = await nats.connect(url)
    try:
        specs = load_stream_specs()
        log = JetStreamEventLog(nc, specs)
        js = nc.jetstream()
        before = await js.stream_info("AQE_AGENTS")
        latencies: list[float] = []

        class Timed(AgentRuntime):
            async def heartbeat(self) -> Any:
                start = time.perf_counter()
                result = await super().heartbeat()
                latencies.append(time.perf_counter() - start)
                return result

        runtimes = [
            Timed(log, f"load-{i}", "bench", interval_s=interval_s, host="bench", version="1")
            for i in range(agents)
        ]
        await asyncio.gather(*(r.start() for r in runtimes))
        started = time.perf_counter()
        await asyncio.sleep(seconds)
        elapsed = time.perf_counter() - started
        beats = sum(r.beat for r in runtimes)
        failed = sum(r.failed_beats for r in runtimes)
        for r in runtimes:
            r.kill()
        await asyncio.sleep(0.2)
        after = await js.stream_info("AQE_AGENTS")
        msgs = after.state.messages - before.state.messages
        stored = after.state.bytes - before.state.bytes
        sample = AgentHeartbeat(agent_id="load-0", beat=12345, session=uuid.uuid4().hex[:16])
        payload = len(sample.to_json())
        per_msg = stored / msgs if msgs else 0.0
        # Beats after the first (sent at start) against the schedule over `elapsed`.
        expected = agents * (elapsed / interval_s)
        return {
            "agents": agents,
            "interval_s": interval_s,
            "events_per_s_per_agent": 1 / interval_s,
            "beats": beats,
            "beats_vs_schedule": (beats - agents) / expected,
            "failed_beats": failed,
            "append_p50_ms": statistics.median(latencies) * 1e3,
            "append_p99_ms": pct(latencies, 0.99) * 1e3,
            "payload_bytes": payload,
            "stored_bytes_per_msg": per_msg,
            "growth_per_agent_per_day_mb": per_msg * 86400 / 1e6,
            "messages_per_agent_per_day": 86400,
        }
    finally:
        await nc.drain()


async def fold_cost(url: str, events: int) -> dict[str, Any]:
    nc = await nats.connect(url)
    try:
        log = JetStreamEventLog(nc, load_stream_specs())
        # A backlog of heartbeats, as the stream accumulates them (ten agents' worth).
        session = uuid.uuid4().hex[:16]
        backlog = [
            NewEvent(
                event=AgentHeartbeat(agent_id=f"old-{i % 10}", beat=i // 10 + 1, session=session)
            )
            for i in range(events)
        ]
        await log.append_batch(backlog)
        total = await log.last_seq("AQE_AGENTS")
        start = time.perf_counter()
        count = 0
        async for _env in log.read("AQE_AGENTS"):
            count += 1
        read_s = time.perf_counter() - start
        mon = MembershipMonitor(log, "fold", check_interval_s=3600)
        start = time.perf_counter()
        await mon.start()
        fold_s = time.perf_counter() - start
        await mon.stop()
        return {
            "messages": total,
            "read_per_s": count / read_s,
            "fold_per_s": total / fold_s,
            "agents": len(mon.state.agents),
        }
    finally:
        await nc.drain()


# -- report ----------------------------------------------------------------------------


def report(det: dict[str, Any], cost: dict[str, Any], fold: dict[str, Any]) -> list[dict[str, Any]]:
    g, n = det["samples"]["gossip"], det["samples"]["no_gossip"]
    ratio_all = statistics.median(n["all"]) / statistics.median(g["all"])
    return [
        {"name": "all suspect, gossip: median s", "value": statistics.median(g["all"])},
        {"name": "all suspect, gossip: p90 s", "value": pct(g["all"], 0.9)},
        {
            "name": "all suspect, no gossip: median s",
            "value": statistics.median(n["all"]),
            "baseline": statistics.median(g["all"]),
            "ratio": ratio_all,
        },
        {"name": "all suspect, no gossip: p90 s", "value": pct(n["all"], 0.9)},
        {"name": "first suspect, gossip: median s", "value": statistics.median(g["first"])},
        {"name": "first suspect, no gossip: median s", "value": statistics.median(n["first"])},
        {"name": "suspicions appended (gossip trials)", "value": det["suspicions_sent"]},
        {"name": "heartbeats/s per agent", "value": cost["events_per_s_per_agent"]},
        {
            "name": f"beats sent vs schedule ({cost['agents']} agents)",
            "value": cost["beats_vs_schedule"],
        },
        {"name": "failed beats", "value": cost["failed_beats"]},
        {"name": "heartbeat append p50 ms", "value": cost["append_p50_ms"]},
        {"name": "heartbeat append p99 ms", "value": cost["append_p99_ms"]},
        {"name": "heartbeat payload bytes", "value": cost["payload_bytes"]},
        {"name": "stored bytes per heartbeat", "value": cost["stored_bytes_per_msg"]},
        {
            "name": "AQE_AGENTS growth MB/agent/day @1s",
            "value": cost["growth_per_agent_per_day_mb"],
        },
        {"name": "bare read of AQE_AGENTS (msg/s)", "value": fold["read_per_s"]},
        {
            "name": "monitor fold from seq 1 (msg/s)",
            "value": fold["fold_per_s"],
            "baseline": fold["read_per_s"],
            "ratio": fold["fold_per_s"] / fold["read_per_s"],
        },
        {
            "name": "  one agent-day of beats folds in s",
            "value": 86400 / fold["fold_per_s"],
        },
    ]


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"membership: {args.trials} trials per mode, heartbeat every {args.interval}s, "
        f"suspect after 3 missed, coordinators check every {args.check_intervals} s"
    )
    print(f"{'measurement':<40} {'value':>12} {'baseline':>10} {'ratio':>7}")
    for row in rows:
        base = f"{row['baseline']:.3f}" if "baseline" in row else ""
        ratio = f"{row['ratio']:.2f}x" if "ratio" in row else ""
        value = row["value"]
        shown = f"{value:,.3f}" if isinstance(value, float) else f"{value:,}"
        print(f"{row['name']:<40} {shown:>12} {base:>10} {ratio:>7}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="Kill trials per mode.")
    parser.add_argument("--interval", type=float, default=0.25, help="Heartbeat interval, s.")
    parser.add_argument(
        "--check-intervals", default="0.1,0.5,1.0", help="The coordinators' check intervals."
    )
    parser.add_argument("--agents", type=int, default=100, help="Agents for the cost run.")
    parser.add_argument("--cost-interval", type=float, default=1.0, help="Their interval, s.")
    parser.add_argument("--cost-seconds", type=float, default=5.0, help="How long they beat.")
    parser.add_argument(
        "--fold-events", type=int, default=100_000, help="Heartbeat backlog to fold."
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    args = parser.parse_args()
    checks = [float(x) for x in args.check_intervals.split(",")]
    with nats_server() as url:
        det = asyncio.run(detection(url, args.trials, args.interval, checks, args.seed))
        cost = asyncio.run(heartbeat_cost(url, args.agents, args.cost_interval, args.cost_seconds))
        fold = asyncio.run(fold_cost(url, args.fold_events))
    rows = report(det, cost, fold)
    if args.json:
        print(json.dumps({"rows": rows, "detection": det, "cost": cost, "fold": fold}, indent=2))
    else:
        print_table(rows, args)


if __name__ == "__main__":
    main()
