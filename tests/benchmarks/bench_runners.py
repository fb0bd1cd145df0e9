"""Tasks/s through runner agents against a raw JetStream work-queue pull/ack loop, in one run.

Usage::

    python tests/benchmarks/bench_runners.py [--tasks N] [--runners R] [--pytest-tasks M]
                                             [--json]

The script starts its own nats-server and measures, on the same server:

* **raw**: ``N`` messages published to a work-queue stream and pulled by ``R`` pullers
  with ``fetch(1)`` + ``ack`` each (what a queue costs without aqe);
* **noop**: ``N`` ``noop`` runner tasks (no sandbox) through ``R`` :class:`RunnerAgent`\\s:
  per task an atomic submit + queue batch, a fetch, a fold of the task's subjects, a
  conditional claim, a conditional completion and an ack; tasks/s is ``N`` over the
  wall time from the first submission to the last completion, ``x raw`` its ratio;
* **pytest**: ``M`` tasks that each run a real 100-test pytest file in the process
  sandbox and ingest its JUnit report (one run of 100 cases per task); tests/s beside.

It reports; it never fails on a number (exit 0), only on errors or a task run twice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nats
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig

from aqe.coordination.nats_bus import NatsBus
from aqe.coordination.tasks import COORD_STREAM, TASK_SUBJECTS, TaskBoard
from aqe.log import load_stream_specs
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.runners import NOOP, RunnerAgent, RunnerConfig, runner_payload, submit_runner_task
from aqe.sandbox import Limits, SandboxSpec
from aqe.server import NatsServerProcess

CONFIG = RunnerConfig(ack_wait_s=30.0, fetch_timeout_s=0.2, heartbeat_s=1.0)


async def raw_queue(url: str, n: int, pullers: int) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(
        StreamConfig(name="BENCH_WQ", subjects=["bench.wq"], retention=RetentionPolicy.WORK_QUEUE)
    )
    await js.add_consumer(
        "BENCH_WQ", ConsumerConfig(durable_name="w", ack_policy=AckPolicy.EXPLICIT)
    )
    subs = [await js.pull_subscribe_bind("w", "BENCH_WQ") for _ in range(pullers)]
    done = 0
    began = time.perf_counter()
    acks = [await js.publish_async("bench.wq", b"x" * 200) for _ in range(n)]
    await asyncio.gather(*acks)

    async def pull(sub: Any) -> None:
        nonlocal done
        while done < n:
            try:
                msgs = await sub.fetch(1, timeout=0.2)
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            for msg in msgs:
                await msg.ack()
                done += 1

    await asyncio.gather(*(pull(s) for s in subs))
    elapsed = time.perf_counter() - began
    await nc.close()
    return n / elapsed


async def through_runners(
    log: JetStreamEventLog, runners: int, ids: Sequence[str], capability: str, payload: str
) -> float:
    agents = [
        RunnerAgent(
            log,
            NatsBus(log.connection),
            [capability],
            agent_id=f"bench-{capability}-{i}",
            config=CONFIG,
            register=False,
        )
        for i in range(runners)
    ]
    for agent in agents:
        await agent.start()
    began = time.perf_counter()
    for task_id in ids:
        await submit_runner_task(log, task_id, capability, payload=payload)
    while sum(a.stats.completed + a.stats.failed for a in agents) < len(ids):
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - began
    for agent in agents:
        await agent.stop(retire=False)
    board = TaskBoard()
    async for env in log.read(COORD_STREAM, subjects=TASK_SUBJECTS):
        board.apply(env)
    claims = Counter(c.task_id for c in board.claims)
    if any(claims[t] != 1 for t in ids) or board.anomalies:
        raise SystemExit(
            f"a task was claimed twice or the board is inconsistent: {board.anomalies}"
        )
    return len(ids) / elapsed


def hundred_tests(folder: Path) -> None:
    lines = [f"def test_{i}():\n    assert {i} >= 0\n" for i in range(100)]
    (folder / "test_hundred.py").write_text("\n".join(lines))


async def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    with NatsServerProcess.start_sync(workdir / "js", log_file=workdir / "nats.log") as server:
        raw = await raw_queue(server.url, args.tasks, args.runners)
        nc = await nats.connect(server.url)
        specs = load_stream_specs()
        await apply_streams(nc, specs)
        log = JetStreamEventLog(nc, specs)
        noop = await through_runners(
            log, args.runners, [f"noop-{i}" for i in range(args.tasks)], NOOP, ""
        )
        project = workdir / "project"
        project.mkdir()
        hundred_tests(project)
        argv = (sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                "--junitxml=report.xml", "test_hundred.py")  # fmt: skip
        payload = runner_payload(SandboxSpec(source=str(project), limits=Limits(wall_s=120)), argv)
        pytest_rate = await through_runners(
            log, args.runners, [f"py-{i}" for i in range(args.pytest_tasks)], "pytest", payload
        )
        await log.close()
    return {
        "runners": args.runners,
        "raw_queue_msgs_per_s": round(raw, 1),
        "noop_tasks": args.tasks,
        "noop_tasks_per_s": round(noop, 1),
        "noop_x_raw": round(noop / raw, 4),
        "pytest_tasks": args.pytest_tasks,
        "pytest_tasks_per_s": round(pytest_rate, 3),
        "pytest_tests_per_s": round(pytest_rate * 100, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--runners", type=int, default=2)
    parser.add_argument("--pytest-tasks", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="aqe-bench-runners-"))
    try:
        result = asyncio.run(measure(args, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"runners: {result['runners']}")
        print(f"raw work queue (fetch 1 + ack): {result['raw_queue_msgs_per_s']:>10.1f} msgs/s")
        print(
            f"noop tasks through runners:     {result['noop_tasks_per_s']:>10.1f} tasks/s "
            f"(x raw {result['noop_x_raw']:.3f})"
        )
        print(
            f"100-test pytest file per task:  {result['pytest_tasks_per_s']:>10.3f} tasks/s "
            f"({result['pytest_tests_per_s']:.1f} tests/s, process sandbox)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
