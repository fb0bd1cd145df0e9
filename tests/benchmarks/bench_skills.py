"""Skill search quality and speed per mode, and an MCP tool call against the CLI.

Run with ``just bench`` (or ``python tests/benchmarks/bench_skills.py``).

1. Search: the 34 queries of ``tests/integration/test_skills_search.py`` (one per skill,
   written from its Level 1) against the library, per mode (keyword is the baseline in
   the same run): top-1, top-3, MRR, and query latency with a fresh embedder per mode
   (semantic and hybrid pay the query's embedding).
2. MCP: a real nats-server holding 24 simulated CI runs; in interleaved rounds, one
   ``flaky_tests`` call on an open MCP stdio session against ``aqe flaky --json`` as a
   fresh process (what an agent without MCP would run). Medians and their ratio; it
   asserts no time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from test_skills_search import QUERIES  # noqa: E402

from aqe.search.embed import Embedder  # noqa: E402
from aqe.skills.library import load_library  # noqa: E402
from aqe.skills.search import SkillSearch  # noqa: E402


def search_quality() -> None:
    skills = load_library()
    print(f"skill search: {len(QUERIES)} queries over {len(skills)} skills")
    print("| mode | top-1 | top-3 | MRR | query p50 ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for mode in ("keyword", "semantic", "hybrid"):
        with Embedder(None) as embedder:  # a fresh query cache per mode
            index = SkillSearch(skills, embedder)
            index.search("warm the model up", k=1, mode="semantic")
            top1 = top3 = 0
            reciprocal = 0.0
            times = []
            for name, query in QUERIES.items():
                started = time.perf_counter()
                hits = [h["name"] for h in index.search(query, k=10, mode=mode)]
                times.append((time.perf_counter() - started) * 1000)
                top1 += hits[:1] == [name]
                top3 += name in hits[:3]
                reciprocal += 1 / (hits.index(name) + 1) if name in hits else 0.0
        n = len(QUERIES)
        print(
            f"| {mode} | {top1}/{n} | {top3}/{n} | {reciprocal / n:.3f} | "
            f"{statistics.median(times):.1f} |"
        )


async def mcp_against_cli(rounds: int) -> None:
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    from aqe.demo import FleetPlan, junit_report, simulate_fleet
    from aqe.server import NatsServerProcess

    with tempfile.TemporaryDirectory(prefix="aqe-bench-skills-") as tmp:
        root = Path(tmp)
        server = NatsServerProcess.start_sync(root / "js", log_file=root / "nats.log")
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith("AQE_")}
            env.update(AQE_NATS_URL=server.url, AQE_DATA_DIR=str(root / "data"))
            reports = root / "reports"
            reports.mkdir()
            _, runs = simulate_fleet(FleetPlan(runs=24, seed=7))
            for number, run in enumerate(runs):
                (reports / f"run-{number:02d}.xml").write_text(junit_report(run))
            cli = [sys.executable, "-m", "aqe.cli"]
            subprocess.run(  # noqa: ASYNC221 - set-up, before anything is timed
                [*cli, "ingest", str(reports), "--run-per-file", "-q"],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            params = StdioServerParameters(command=cli[0], args=[*cli[1:], "mcp"], env=env)
            async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                await session.call_tool("flaky_tests", {})  # imports and first fold
                mcp_s, cli_s = [], []
                for _ in range(rounds):
                    started = time.perf_counter()
                    result = await session.call_tool("flaky_tests", {})
                    mcp_s.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    out = subprocess.run(  # noqa: ASYNC221 - the CLI process is what is timed
                        [*cli, "flaky", "--json"],
                        env=env,
                        capture_output=True,
                        text=True,
                        check=True,
                    ).stdout
                    cli_s.append(time.perf_counter() - started)
                    assert json.loads(result.content[0].text) == json.loads(out)
        finally:
            server.stop_sync(timeout=5.0)
    mcp_median, cli_median = statistics.median(mcp_s), statistics.median(cli_s)
    print(f"\nflaky tests, 39 tests x 24 runs, medians of {rounds} interleaved rounds")
    print("| how | median s | x CLI |")
    print("| --- | ---: | ---: |")
    print(f"| `aqe flaky --json`, a fresh process (baseline) | {cli_median:.3f} | 1.00 |")
    ratio = mcp_median / cli_median
    print(f"| MCP `flaky_tests` on an open stdio session | {mcp_median:.3f} | {ratio:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    search_quality()
    asyncio.run(mcp_against_cli(args.rounds))


if __name__ == "__main__":
    main()
