"""Three clusters in a bridge mesh, under fire: every event ends up once in every cluster.

Three independent nats-servers (clusters ``a``, ``b``, ``c``, each its own data
directory) and three ``aqe bridge run`` processes in a full mesh, with ``a``'s link to
``c`` running through a UDP relay the test can cut. 10,000 events are appended across
the three clusters while:

* the bridge processes of ``a`` and then ``b`` are killed with SIGKILL and restarted,
  mid-stream (they resume from the targets' chain markers);
* the ``a`` -> ``c`` link is cut for several seconds (a partition: datagrams dropped
  both ways) and restored; meanwhile anti-entropy lets ``b`` relay ``a``'s events to
  ``c``.

At the end every cluster holds exactly the same set of 10,000 events: none lost, none
twice (checked by event id, and by origin coordinates), each copy with its origin's
headers, and the events of each subject in the origin's order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from _udp_proxy import UdpProxy

from aqe.bridge.certs import create_dev_pki
from aqe.events import BridgeApplied, Envelope, Headers, TestCaseExecuted
from aqe.log import NewEvent, load_stream_specs
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.server import NatsServerProcess

pytestmark = [pytest.mark.faults, pytest.mark.timeout(400)]

CLUSTERS = ("a", "b", "c")
STREAM = "AQE_TESTS"
TOTAL = 10_000
MARKER = BridgeApplied.type_tag()
GUARD_S = 180.0
"""A failure guard only: how long convergence may take before the test gives up."""


def free_udp_ports(count: int) -> list[int]:
    """``count`` distinct free UDP ports (all held until every one is chosen)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Mesh:
    """The servers, configs and bridge processes of the three clusters."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.servers: dict[str, NatsServerProcess] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports = dict(zip(CLUSTERS, free_udp_ports(len(CLUSTERS)), strict=True))
        self.restarts: Counter[str] = Counter()

    def start_servers(self) -> None:
        for name in CLUSTERS:
            self.servers[name] = NatsServerProcess.start_sync(
                self.root / name / "js", log_file=self.root / name / "nats.log"
            )

    def write_configs(self, proxy_port: int) -> None:
        create_dev_pki(self.root / "certs", CLUSTERS)
        for name in CLUSTERS:
            peers = []
            for peer in CLUSTERS:
                if peer == name:
                    continue
                # a's link to c dials the relay the test cuts; every other link is direct.
                port = proxy_port if (name, peer) == ("a", "c") else self.ports[peer]
                peers.append(
                    f'[[peers]]\nname = "{peer}"\naddress = "127.0.0.1:{port}"\n'
                    "trusted_relay = true\n"  # b relays a's events to c while a-c is cut
                )
            text = (
                f'cluster = "{name}"\n'
                f'nats_url = "{self.servers[name].url}"\n'
                f'data_dir = "{name}/bridge"\n'
                f'streams = ["{STREAM}"]\n'
                "partitions = 8\n"
                "apply_streams = true\n"
                "status_interval_s = 0.25\n"
                f'[listen]\nhost = "127.0.0.1"\nport = {self.ports[name]}\n'
                f'[tls]\nca = "certs/ca.pem"\ncert = "certs/{name}.pem"\n'
                f'key = "certs/{name}.key"\n' + "".join(peers) + "[link]\n"
                "keepalive_s = 0.5\n"
                "idle_timeout_s = 3.0\n"
                "connect_timeout_s = 2.0\n"
                "reconnect_max_s = 0.5\n"
                "gossip_s = 0.5\n"
                "repair_after_s = 1.5\n"
                "relay = true\n"
            )
            (self.root / f"{name}.toml").write_text(text, encoding="utf-8")

    def start_bridge(self, name: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AQE_")}
        log = (self.root / f"bridge-{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "aqe.cli", "bridge", "run", "--config",
             str(self.root / f"{name}.toml")],
            stdout=log,
            stderr=log,
            env=env,
        )  # fmt: skip
        log.close()

    def kill_bridge(self, name: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        self.restarts[name] += 1

    def status(self, name: str) -> dict[str, Any]:
        path = self.root / name / "bridge" / "status.json"
        return dict(json.loads(path.read_text(encoding="utf-8"))) if path.exists() else {}

    def logs(self) -> str:
        return "\n".join(
            f"--- bridge {n} ---\n{(self.root / f'bridge-{n}.log').read_text()[-3000:]}"
            for n in CLUSTERS
            if (self.root / f"bridge-{n}.log").exists()
        )

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for server in self.servers.values():
            server.stop_sync(timeout=5.0)


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    m = Mesh(tmp_path)
    try:
        m.start_servers()
        yield m
    finally:
        m.stop()


@contextlib.asynccontextmanager
async def logs_of(mesh: Mesh) -> AsyncIterator[dict[str, JetStreamEventLog]]:
    specs = load_stream_specs()
    logs: dict[str, JetStreamEventLog] = {}
    try:
        for name in CLUSTERS:
            nc = await nats.connect(mesh.servers[name].url, max_reconnect_attempts=5)
            await apply_streams(nc, specs)
            logs[name] = JetStreamEventLog(nc, specs)
        yield logs
    finally:
        for log in logs.values():
            await log.close()


def event(cluster: str, i: int) -> TestCaseExecuted:
    # 40 test ids per cluster: many subjects, spread over every partition.
    return TestCaseExecuted(
        test_id=f"tests/test_{cluster}.py::test_{i % 40}",
        run_id=f"{cluster}-run-{i // 40}",
        outcome="failed" if i % 7 == 0 else "passed",
        duration_s=0.001 * (i % 100),
    )


async def publish(log: JetStreamEventLog, cluster: str, count: int, chunks: int) -> list[str]:
    """Append ``count`` events in ``chunks`` paced chunks; the ids appended."""
    ids: list[str] = []
    per = -(-count // chunks)
    for start in range(0, count, per):
        items = [NewEvent(event=event(cluster, i)) for i in range(start, min(count, start + per))]
        results = await log.append_many(items)
        ids.extend(r.event_id for r in results)
        await asyncio.sleep(0.05)
    return ids


async def stored(log: JetStreamEventLog) -> list[Envelope]:
    return [env async for env in log.read(STREAM) if env.event_type != MARKER]


async def test_three_clusters_converge_through_kills_and_a_cut_link(mesh: Mesh) -> None:
    proxy = UdpProxy(("127.0.0.1", mesh.ports["c"]))
    proxy_port = await proxy.start()
    while proxy_port in mesh.ports.values():  # the OS may hand out a port just released
        proxy.close()
        proxy = UdpProxy(("127.0.0.1", mesh.ports["c"]))
        proxy_port = await proxy.start()
    mesh.write_configs(proxy_port)
    for name in CLUSTERS:
        mesh.start_bridge(name)

    per_cluster = {"a": 3334, "b": 3333, "c": 3333}
    assert sum(per_cluster.values()) == TOTAL

    async def chaos() -> None:
        await asyncio.sleep(1.5)
        mesh.kill_bridge("a")  # mid-stream: a's outgoing links and its inbound side die
        await asyncio.sleep(0.7)
        mesh.start_bridge("a")
        await asyncio.sleep(1.0)
        proxy.cut()  # a -> c partitioned; b relays a's events to c meanwhile
        await asyncio.sleep(1.5)
        mesh.kill_bridge("b")
        await asyncio.sleep(0.7)
        mesh.start_bridge("b")
        await asyncio.sleep(4.0)
        proxy.restore()

    try:
        async with logs_of(mesh) as logs:
            published = await asyncio.gather(
                *(publish(logs[n], n, per_cluster[n], chunks=100) for n in CLUSTERS), chaos()
            )
            expected: dict[str, str] = {}
            for name, ids in zip(CLUSTERS, published[:3], strict=True):
                assert len(ids) == len(set(ids)) == per_cluster[name]
                expected.update(dict.fromkeys(ids, name))
            assert len(expected) == TOTAL

            deadline = time.monotonic() + GUARD_S
            while True:
                counts = {n: len(await stored(logs[n])) for n in CLUSTERS}
                if all(c >= TOTAL for c in counts.values()):
                    break
                assert time.monotonic() < deadline, (counts, mesh.logs())
                await asyncio.sleep(1.0)
            await asyncio.sleep(2.0)  # anything late (a duplicate) would land by now

            for name in CLUSTERS:
                envelopes = await stored(logs[name])
                ids = [env.event_id for env in envelopes]
                dupes = [i for i, k in Counter(ids).items() if k > 1]
                assert not dupes, (name, len(dupes), dupes[:5])
                assert set(ids) == set(expected), (name, len(set(expected) - set(ids)))
                coordinates = set()
                for env in envelopes:
                    origin = expected[env.event_id]
                    if origin == name:
                        assert Headers.ORIGIN_CLUSTER not in env.headers
                        coordinates.add((origin, env.seq))
                    else:
                        assert env.headers[Headers.ORIGIN_CLUSTER] == origin
                        assert env.headers[Headers.ORIGIN_STREAM] == STREAM
                        coordinates.add((origin, int(env.headers[Headers.ORIGIN_SEQ])))
                assert len(coordinates) == TOTAL
                # Per subject, copies keep the origin's order.
                last: dict[str, int] = {}
                for env in envelopes:
                    origin = expected[env.event_id]
                    seq = env.seq if origin == name else int(env.headers[Headers.ORIGIN_SEQ])
                    assert seq > last.get(env.subject, 0), (name, env.subject)
                    last[env.subject] = seq

            # c got some of a's events through b while a -> c was cut (anti-entropy).
            markers = [env.decode() async for env in logs["c"].read(STREAM)
                       if env.event_type == MARKER]  # fmt: skip
            relayed = [m for m in markers if isinstance(m, BridgeApplied) and m.via == "b"
                       and m.origin == "a"]  # fmt: skip
            assert relayed, "no relayed batch from b for origin a"

            # One more cut, now that the link is idle and holds a session ticket: the
            # reconnect after it resumes the session with 0-RTT.
            before = await link_of(mesh, "a", "c", lambda link: link.get("connected"))
            proxy.cut()
            await link_of(mesh, "a", "c", lambda link: not link.get("connected"))
            proxy.restore()
            after = await link_of(
                mesh, "a", "c",
                lambda link: link.get("connected")
                and link["transport"]["handshakes"] > before["transport"]["handshakes"],
            )  # fmt: skip
            assert (
                after["transport"]["zero_rtt_accepted"] > before["transport"]["zero_rtt_accepted"]
            ), after["transport"]
    finally:
        proxy.close()
    assert mesh.restarts == {"a": 1, "b": 1}
    print("relayed batches b->c for a:", len(relayed), "proxy dropped", proxy.dropped)
    print("a->c transport:", after["transport"])


async def link_of(mesh: Mesh, name: str, peer: str, ready: Any) -> dict[str, Any]:
    """The status of ``name``'s link to ``peer`` once ``ready(link)`` holds."""
    deadline = time.monotonic() + 60
    while True:
        link = mesh.status(name).get("links", {}).get(peer, {})
        if link and ready(link):
            return dict(link)
        assert time.monotonic() < deadline, (link, mesh.logs())
        await asyncio.sleep(0.2)
