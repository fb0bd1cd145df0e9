"""Membership: failure detection with and without shared suspicion, and what heartbeats cost.

Usage::

    python tests/benchmarks/bench_membership.py [--trials N] [--interval S]
        [--check-intervals A,B,C ...] [--agents M] [--json]

The script starts its own nats-server and measures, in one run:

* **Detection time, with and without shared suspicion.** Three coordinators
  (``MembershipMonitor``) follow ``AQE_AGENTS`` with the same failure detector
  (heartbeat every ``--interval``, suspect after 3 missed). Per trial one agent
  registers, beats, and is killed (its heartbeat task cancelled, no retirement) at a
  random phase of its beat; the time from the kill to *every* coordinator considering
  it suspect is measured in two arms:

  - **shared**: the first coordinator whose own timeout fires appends an
    ``AgentSuspected`` to the log; the others fold it and mark the agent suspect as soon
    as it reaches them. This is not epidemic gossip: there is no peer-to-peer
    dissemination, only an event appended to the stream that every coordinator already
    follows.
  - **own timeouts**: no suspicion is appended; each coordinator waits for its own
    timeout and its own next check.

  Both arms run on the *same* three monitors (same check intervals, same check phases,
  drawn once per scenario from ``--seed``), and trials alternate the arms so that
  machine noise hits both alike; the only difference is whether suspicions are
  appended. The first coordinator to suspect is a control: it does not depend on the
  arm, so its median should be about equal in both. The ratio is own / shared.

  Each ``--check-intervals`` is one scenario (``:aligned`` after the list starts the
  three checkers together instead of at random phases). The defaults run three: equal
  intervals with aligned phases (0.25 s each), where every coordinator times the agent
  out at about the same moment and sharing has nothing to save (the control); equal
  intervals at random phases, where sharing saves the spread of the phases; and mixed
  intervals (0.1, 0.5 and 1.0 s), where the slow coordinators learn from the fast one.
  The gain is the distance between the first and the last coordinator's own timeout,
  nothing more.
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
    shared: bool,
    interval_s: float,
    rng: random.Random,
) -> tuple[float, float]:
    """Kill one agent; seconds until the first and until every coordinator suspects it."""
    for mon in monitors:
        mon.gossip = shared  # the monitor's switch for appending suspicions
    agent_id = f"agent-{'s' if shared else 'o'}-{uuid.uuid4().hex[:8]}"
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


ARMS = ("shared", "own")
"""Suspicion appended to the log for every coordinator, or each on its own timeout."""


async def detection(
    url: str,
    trials: int,
    interval_s: float,
    check_intervals: list[float],
    seed: int,
    *,
    aligned: bool = False,
) -> dict[str, Any]:
    """One scenario: both arms on the same monitors (intervals and phases)."""
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
            # Different check phases too, unless aligned; the arms share them.
            pause = rng.uniform(0, every)
            if not aligned:
                await asyncio.sleep(pause)
        out: dict[str, dict[str, list[float]]] = {arm: {"first": [], "all": []} for arm in ARMS}
        # Trial 0 of each arm warms up and is not reported.
        for trial in range(trials + 1):
            order = ARMS if trial % 2 == 0 else ARMS[::-1]
            for arm in order:
                first, last = await one_trial(log, monitors, arm == "shared", interval_s, rng)
                if trial > 0:
                    out[arm]["first"].append(first)
                    out[arm]["all"].append(last)
        sent = sum(m.suspicions_sent for m in monitors)
        for mon in monitors:
            await mon.stop()
        return {
            "check_intervals": check_intervals,
            "aligned": aligned,
            "samples": out,
            "suspicions_sent": sent,
        }
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


def detection_rows(det: dict[str, Any]) -> list[dict[str, Any]]:
    shared, own = det["samples"]["shared"], det["samples"]["own"]
    checks = "/".join(f"{c:g}" for c in det["check_intervals"])
    label = f"checks {checks} s{' aligned' if det['aligned'] else ''}"
    return [
        {
            "name": f"{label}: all suspect, shared: median s",
            "value": statistics.median(shared["all"]),
        },
        {
            "name": f"{label}: all suspect, own: median s",
            "value": statistics.median(own["all"]),
            "baseline": statistics.median(shared["all"]),
            "ratio": statistics.median(own["all"]) / statistics.median(shared["all"]),
        },
        {"name": f"{label}: all suspect, shared: p90 s", "value": pct(shared["all"], 0.9)},
        {"name": f"{label}: all suspect, own: p90 s", "value": pct(own["all"], 0.9)},
        {
            "name": f"{label}: first suspect (control), own: median s",
            "value": statistics.median(own["first"]),
            "baseline": statistics.median(shared["first"]),
            "ratio": statistics.median(own["first"]) / statistics.median(shared["first"]),
        },
        {"name": f"{label}: suspicions appended", "value": det["suspicions_sent"]},
    ]


def report(
    dets: list[dict[str, Any]], cost: dict[str, Any], fold: dict[str, Any]
) -> list[dict[str, Any]]:
    return [
        *(row for det in dets for row in detection_rows(det)),
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
        f"membership: {args.trials} trials per arm, heartbeat every {args.interval}s, "
        "suspect after 3 missed; arms: suspicion shared through the log vs own timeouts, "
        "on the same monitors (ratio = own / shared)"
    )
    width = max(len(row["name"]) for row in rows) + 1
    print(f"{'measurement':<{width}} {'value':>12} {'baseline':>10} {'ratio':>7}")
    for row in rows:
        base = f"{row['baseline']:.3f}" if "baseline" in row else ""
        ratio = f"{row['ratio']:.2f}x" if "ratio" in row else ""
        value = row["value"]
        shown = f"{value:,.3f}" if isinstance(value, float) else f"{value:,}"
        print(f"{row['name']:<{width}} {shown:>12} {base:>10} {ratio:>7}")


DEFAULT_SCENARIOS = ("0.25,0.25,0.25:aligned", "0.25,0.25,0.25", "0.1,0.5,1.0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="Kill trials per arm.")
    parser.add_argument("--interval", type=float, default=0.25, help="Heartbeat interval, s.")
    parser.add_argument(
        "--check-intervals",
        action="append",
        help="The three coordinators' check intervals, one scenario per use "
        f"[default: {' and '.join(DEFAULT_SCENARIOS)}].",
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
    scenarios = [
        ([float(x) for x in spec.split(":")[0].split(",")], spec.endswith(":aligned"))
        for spec in args.check_intervals or DEFAULT_SCENARIOS
    ]
    with nats_server() as url:
        dets = [
            asyncio.run(
                detection(url, args.trials, args.interval, checks, args.seed, aligned=aligned)
            )
            for checks, aligned in scenarios
        ]
        cost = asyncio.run(heartbeat_cost(url, args.agents, args.cost_interval, args.cost_seconds))
        fold = asyncio.run(fold_cost(url, args.fold_events))
    rows = report(dets, cost, fold)
    if args.json:
        print(json.dumps({"rows": rows, "detection": dets, "cost": cost, "fold": fold}, indent=2))
    else:
        print_table(rows, args)


if __name__ == "__main__":
    main()
