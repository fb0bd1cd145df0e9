"""Three clusters in a bridge mesh, under fire: every event ends up once in every cluster.

Three independent nats-servers (clusters ``a``, ``b``, ``c``, each its own data
directory) and three ``aqe bridge run`` processes in a full mesh, with ``a``'s link to
``c`` running through a UDP relay the test can cut. 10,000 events are appended across
the three clusters while:

* the bridge processes of ``a`` and then ``b`` are killed with SIGKILL and restarted,
  mid-stream (they resume from the targets' chain markers);
* the ``a`` -> ``c`` link is cut (a partition: datagrams dropped both ways) while ``a``
  appends the second half of its events, and restored only once anti-entropy has let
  ``b`` relay some of them to ``c``.

Every step of that schedule waits on a condition (events appended, a status file
written by the new process, relayed markers stored), never on a fixed sleep, so the
test means the same on an idle machine and on a starved one.

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
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from _udp_proxy import UdpProxy

from aqe.bridge._chains import marker_filter
from aqe.bridge.certs import create_dev_pki
from aqe.events import BridgeApplied, Envelope, Headers, TestCaseExecuted
from aqe.log import NewEvent, load_stream_specs
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.server import NatsServerProcess
from support import waiting
from support.ports import free_udp_ports

pytestmark = [pytest.mark.faults, pytest.mark.timeout(400)]

CLUSTERS = ("a", "b", "c")
STREAM = "AQE_TESTS"
TOTAL = 10_000
MARKER = BridgeApplied.type_tag()
GUARD_S = 180.0
"""A failure guard only: how long one wait may take before the test gives up."""


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


class Publisher:
    """Appends one cluster's events in paced chunks; ``hold_at`` pauses it until released.

    ``appended`` counts what is stored so far (the chaos schedule waits on it).
    """

    def __init__(self, log: JetStreamEventLog, cluster: str, count: int, chunks: int) -> None:
        self.log = log
        self.cluster = cluster
        self.count = count
        self.per = -(-count // chunks)
        self.appended = 0
        self.hold_at: int | None = None
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    async def run(self) -> list[str]:
        """Append every event; the ids appended."""
        ids: list[str] = []
        for start in range(0, self.count, self.per):
            if self.hold_at is not None and start >= self.hold_at and not self.release.is_set():
                self.held.set()
                await self.release.wait()
            end = min(self.count, start + self.per)
            items = [NewEvent(event=event(self.cluster, i)) for i in range(start, end)]
            results = await self.log.append_many(items)
            ids.extend(r.event_id for r in results)
            self.appended = len(ids)
            await asyncio.sleep(0.05)  # pacing: the bridges work while events arrive
        return ids


async def stored(log: JetStreamEventLog) -> list[Envelope]:
    return [env async for env in log.read(STREAM) if env.event_type != MARKER]


async def markers(log: JetStreamEventLog) -> list[BridgeApplied]:
    return [
        msgspec.json.decode(env.data, type=BridgeApplied)
        async for env in log.read(STREAM, subjects=marker_filter("tests"))
    ]


async def until(check: Callable[[], Awaitable[Any] | Any], what: str, mesh: Mesh) -> Any:
    """Poll ``check`` until it returns something true; fail after :data:`GUARD_S`."""

    def alive() -> None:
        for name, proc in mesh.procs.items():
            assert proc.poll() is None, f"bridge {name} exited\n{mesh.logs()}"

    return await waiting.until(
        check, what, timeout_s=GUARD_S, every_s=0.2, alive=alive, context=mesh.logs
    )


def links_up(mesh: Mesh, name: str) -> bool:
    """Whether the running process of ``name`` reports every outgoing link connected."""
    view = mesh.status(name)
    links = view.get("links") or {}
    return (
        view.get("pid") == mesh.procs[name].pid
        and len(links) == len(CLUSTERS) - 1
        and all(link.get("connected") for link in links.values())
    )


def quiet(mesh: Mesh, since: float) -> bool:
    """Whether every node, in a snapshot written after ``since``, has nothing left to send.

    Every link connected, nothing in flight, no lag and no relay running: no copy can
    arrive anywhere after this (a late duplicate would come from one of them).
    """
    for name in CLUSTERS:
        view = mesh.status(name)
        links = (view.get("links") or {}).values()
        if view.get("pid") != mesh.procs[name].pid or float(view.get("updated_at", 0)) <= since:
            return False
        for link in links:
            totals = link.get("totals") or {}
            if (
                not link.get("connected")
                or totals.get("in_flight")
                or totals.get("lag_events")
                or (link.get("relays") or {}).get("active")
            ):
                return False
    return True


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

    try:
        async with logs_of(mesh) as logs:
            for name in CLUSTERS:
                await until(lambda n=name: links_up(mesh, n), f"{name}'s links", mesh)
            publishers = {n: Publisher(logs[n], n, per_cluster[n], chunks=100) for n in CLUSTERS}
            a = publishers["a"]
            a.hold_at = per_cluster["a"] // 2  # a's second half is appended while a -> c is cut

            async def relayed_to_c() -> int:
                """Batches of a's events that c stored from b's relay."""
                return sum(m.via == "b" and m.origin == "a" for m in await markers(logs["c"]))

            async def chaos() -> None:
                # Kill a mid-stream: some of its events already copied, more coming.
                await until(lambda: a.appended >= per_cluster["a"] // 4, "a's first events", mesh)
                mesh.kill_bridge("a")
                mesh.start_bridge("a")
                await until(lambda: links_up(mesh, "a"), "a's links after its restart", mesh)
                await a.held.wait()
                # Partition a from c, then let a go on: c can get a's second half only
                # through b, and b's bridge dies and comes back meanwhile.
                relayed_before = await relayed_to_c()
                proxy.cut()
                a.release.set()
                await until(
                    lambda: a.appended >= per_cluster["a"] * 3 // 4, "a's events in the cut", mesh
                )
                mesh.kill_bridge("b")
                mesh.start_bridge("b")

                async def relayed_more() -> bool:
                    return await relayed_to_c() > relayed_before

                await until(relayed_more, "b to relay a's events to c in the cut", mesh)
                proxy.restore()

            published = await asyncio.gather(*(p.run() for p in publishers.values()), chaos())
            expected: dict[str, str] = {}
            for name, ids in zip(CLUSTERS, published[:3], strict=True):
                assert len(ids) == len(set(ids)) == per_cluster[name]
                expected.update(dict.fromkeys(ids, name))
            assert len(expected) == TOTAL

            async def converged() -> bool:
                counts = [len(await stored(logs[n])) for n in CLUSTERS]
                return all(c >= TOTAL for c in counts)

            await until(converged, f"every cluster to hold {TOTAL} events", mesh)
            since = time.time()
            await until(lambda: quiet(mesh, since), "every link to go quiet", mesh)

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
            relayed = [m for m in await markers(logs["c"]) if m.via == "b" and m.origin == "a"]
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

    def check() -> dict[str, Any] | None:
        link = mesh.status(name).get("links", {}).get(peer, {})
        return dict(link) if link and ready(link) else None

    found: dict[str, Any] = await until(check, f"{name}'s link to {peer}", mesh)
    return found
