"""A 3-node JetStream cluster on loopback: R3 streams, kill a node, keep appending.

Starts the cluster (aqe.server.LocalCluster: the ops/cluster layout on free ports),
points aqe at every node, ingests a report (streams are created at R3 on a cluster),
kills the leader of AQE_TESTS with SIGKILL, ingests another (retrying while a new
leader is elected: the same files store nothing twice), and shows that both runs are
in the history. Everything lives under the folder given (default: ./cluster).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from aqe.server import LocalCluster

root = Path(sys.argv[1] if len(sys.argv) > 1 else "cluster").absolute()


def report(path: Path, name: str) -> Path:
    path.write_text(
        '<testsuite name="s" tests="1" timestamp="2026-11-02T08:00:00">'
        f'<testcase classname="tests.test_cluster" name="{name}" time="0.1"/></testsuite>'
    )
    return path


with LocalCluster.start_sync(root) as cluster:
    env = {
        **os.environ,
        "AQE_NATS_URL": ",".join(cluster.urls),
        "AQE_DATA_DIR": str(root / "client"),
    }

    def aqe(*args: str, retry_s: float = 0.0) -> str:
        """Run aqe; while a new stream leader is elected, retry (ingest is idempotent)."""
        deadline = time.monotonic() + retry_s
        while True:
            proc = subprocess.run(["aqe", *args], env=env, capture_output=True, text=True)
            if proc.returncode == 0:
                return proc.stdout
            if time.monotonic() > deadline:
                raise SystemExit(f"aqe {' '.join(args)}: {proc.stderr.strip()}")
            print("  retrying:", proc.stderr.strip()[:120])
            time.sleep(1)

    print("nodes:", cluster.urls)
    aqe("ingest", str(report(root / "one.xml", "test_before")), "-q")
    info = json.loads(aqe("streams", "info", "AQE_TESTS", "--json"))
    print("AQE_TESTS replicas:", info["config"]["replicas"])
    leader = asyncio.run(cluster.stream_leader("AQE_TESTS"))
    print("killing the stream leader", leader)
    cluster.kill(leader)
    aqe("ingest", str(report(root / "two.xml", "test_after")), "-q", retry_s=60)
    tests = [r["test_id"] for r in json.loads(aqe("history", "--json"))]
    print("history after failover:", tests)
    if tests != ["tests.test_cluster.test_after", "tests.test_cluster.test_before"]:
        raise SystemExit(f"expected both runs' tests, got {tests}")
