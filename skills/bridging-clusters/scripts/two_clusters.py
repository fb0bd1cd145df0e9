"""Two independent JetStream clusters joined by two `aqe bridge run` nodes, on loopback.

Starts a nats-server per cluster (a and b), makes a development CA and certificates
(`aqe bridge certs`), writes one bridge config per cluster, runs both bridge nodes, ingests
a report into a and waits until b's history shows it. Everything lives under the folder
given (default: ./mesh) and stops at the end.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from aqe.server import NatsServerProcess

root = Path(sys.argv[1] if len(sys.argv) > 1 else "mesh").absolute()
root.mkdir(parents=True, exist_ok=True)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def aqe(*args: str, url: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AQE_NATS_URL": url, "AQE_DATA_DIR": str(root / "client")}
    return subprocess.run(["aqe", *args], env=env, capture_output=True, text=True, check=check)


servers = {
    name: NatsServerProcess.start_sync(root / name / "js", log_file=root / name / "nats.log")
    for name in ("a", "b")
}
quic = {name: free_udp_port() for name in servers}
subprocess.run(["aqe", "bridge", "certs", "--out", str(root / "certs"), "a", "b"], check=True)
for name, server in servers.items():
    peer = "b" if name == "a" else "a"
    (root / f"{name}.toml").write_text(
        f'cluster = "{name}"\n'
        f'nats_url = "{server.url}"\n'
        f'data_dir = "{name}/bridge"\n'
        'streams = ["AQE_TESTS"]\n'
        "apply_streams = true\n"
        "status_interval_s = 0.5\n\n"
        f'[listen]\nhost = "127.0.0.1"\nport = {quic[name]}\n\n'
        f'[tls]\nca = "certs/ca.pem"\ncert = "certs/{name}.pem"\nkey = "certs/{name}.key"\n\n'
        f'[[peers]]\nname = "{peer}"\naddress = "127.0.0.1:{quic[peer]}"\n'
    )
nodes = [
    subprocess.Popen(
        ["aqe", "bridge", "run", "--config", str(root / f"{name}.toml")],
        stderr=(root / f"bridge-{name}.log").open("w"),
    )
    for name in servers
]
try:
    report = root / "report.xml"
    report.write_text(
        '<testsuite name="s" tests="1" timestamp="2026-11-02T08:00:00">'
        '<testcase classname="tests.test_bridge" name="test_crosses_clusters" time="0.1"/>'
        "</testsuite>"
    )
    print(aqe("ingest", str(report), "-q", url=servers["a"].url).stdout.strip())
    deadline = time.monotonic() + 90
    while True:
        out = aqe("history", "--json", url=servers["b"].url, check=False)
        rows = json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else []
        if any(r["test_id"] == "tests.test_bridge.test_crosses_clusters" for r in rows):
            print("cluster b's history has the test ingested into cluster a")
            break
        if time.monotonic() > deadline:
            raise SystemExit("not replicated within 90 s; see " + str(root / "bridge-*.log"))
        time.sleep(0.5)
    print(aqe("bridge", "status", "--config", str(root / "a.toml"), url=servers["a"].url).stdout)
finally:
    for node in nodes:
        node.terminate()
    for node in nodes:
        node.wait(timeout=30)
    for server in servers.values():
        server.stop_sync(timeout=5.0)
