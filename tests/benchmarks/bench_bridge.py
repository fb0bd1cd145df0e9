"""End-to-end replication over a QUIC bridge link, against baselines from the same run.

Usage::

    python tests/benchmarks/bench_bridge.py [--mode nodes|inprocess|both] [--events N]
        [--latency-events N] [--rate R] [--link KEY=VALUE ...] [--profile DIR] [--json]

Two independent nats-servers (clusters ``a`` and ``b``) and a development CA.

``--mode nodes`` (the default) is shaped like a deployment: each cluster's bridge node
is a real ``python -m aqe.cli bridge run --config FILE`` process (configs in a temp
dir, one link ``a -> b``, relay off), and this process only publishes into ``a`` and
follows ``b``. ``--mode inprocess`` runs a
:class:`~aqe.bridge.quic.QuicServer` + :class:`~aqe.bridge.replication.TargetSide` for
``b`` and a :class:`~aqe.bridge.replication.SourceLink` from ``a`` on this process's
event loop (with the publisher and both readers: CPU-bound in one Python process).

Measured, per mode:

* **latency**: one event appended in ``a`` at a time, paced at ``--rate`` events/s;
  the time until it is readable in ``b`` (an ordered consumer following ``b``'s
  stream). p50/p99, and (from the servers' timestamps) how much of it passed before
  the event was stored in ``a``, between ``a`` and ``b``, and until readable in ``b``.
* **throughput**: ``--events`` events appended in ``a`` as fast as ``append_many``
  goes while the link runs; events/s until all are readable in ``b`` (live). Then a
  backlog of the same size replicated by a link started afterwards (catch-up; in
  ``nodes`` mode node ``a`` is stopped while the backlog is written, and the rate is
  given from the node's start and from the first copy readable in ``b``).
* **CPU per event** (nodes mode, Linux ``/proc``): of each node, each nats-server and
  this process, over the live and the catch-up phase, and the events/s those sums
  allow on this machine's cores; and how many atomic batches ``b`` stored them in.

Baselines from the same run: the same append in ``a`` until readable in ``a`` itself
(the JetStream floor every bridged event pays once at the origin), a 200-byte
request/response over aioquic on the link's transport and over plain TCP, and the
atomic-batch commit floor: ``append_raw_batch`` of 2 messages (a copy and a
conditional marker, the smallest batch the target stores) on ``b``.

``--profile DIR`` (nodes mode) runs each node under cProfile and writes
``DIR/<node>-<start>.prof`` when it stops; ``a-2.prof`` covers node ``a``'s catch-up
run. Read them with ``python -m pstats``.

Goals (issue 6): p50 <= 3 ms, p99 <= 15 ms, >= 10,000 events/s per link. The script
reports; it exits 0 on a missed goal and fails only on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats

from aqe.bridge._chains import marker_subject
from aqe.bridge.certs import TlsFiles, create_dev_pki
from aqe.bridge.frames import Ack, Frame
from aqe.bridge.quic import QuicConnector, QuicServer
from aqe.bridge.replication import SourceLink, TargetSide
from aqe.events import BridgeApplied, Headers, TestCaseExecuted
from aqe.log import NewEvent, load_stream_specs
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.server import NatsServerProcess

STREAM = "AQE_TESTS"
MARKER = BridgeApplied.type_tag()
GUARD_S = 180.0
"""A failure guard only: how long events may take to arrive before the run gives up."""

# Runs ``python -m aqe.cli ...`` under cProfile; argv: <out.prof> <cli args...>.
_PROFILED = """
import cProfile, runpy, sys
out = sys.argv[1]
sys.argv = ["aqe"] + sys.argv[2:]
profile = cProfile.Profile()
try:
    profile.runcall(runpy.run_module, "aqe.cli", run_name="__main__")
except SystemExit:
    pass
finally:
    profile.dump_stats(out)
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def event(tag: str, i: int) -> TestCaseExecuted:
    return TestCaseExecuted(
        test_id=f"tests/test_bench.py::test_{i % 64}", run_id=f"{tag}-{i // 64}",
        outcome="passed", duration_s=0.01,
    )  # fmt: skip


async def connect(url: str) -> JetStreamEventLog:
    specs = load_stream_specs()
    nc = await nats.connect(url)
    await apply_streams(nc, specs)
    return JetStreamEventLog(nc, specs)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_per_event(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
    """Microseconds of CPU per event of each process between two :meth:`Nodes.cpu`."""
    return {k: (after[k] - before[k]) * 1e6 / max(1, n) for k in before if k in after}


def minus(after: tuple[int, int], before: tuple[int, int]) -> tuple[int, int]:
    return after[0] - before[0], after[1] - before[1]


def free_udp_ports(count: int) -> list[int]:
    """Distinct free UDP ports (all bound at once, so no two are the same)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                 for _ in range(count)]  # fmt: skip
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


class Arrivals:
    """Follows a stream and records when each event id became readable."""

    def __init__(self, log: JetStreamEventLog) -> None:
        self.log = log
        self.at: dict[str, float] = {}
        self.stored_ns: dict[str, int] = {}
        self.changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async for env in self.log.read(STREAM, after_seq=await self.log.last_seq(STREAM),
                                       follow=True):  # fmt: skip
            if env.event_type != MARKER:
                self.at[env.event_id] = time.perf_counter()
                self.stored_ns[env.event_id] = env.recorded_at_ns
                self.changed.set()

    async def __aenter__(self) -> Arrivals:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0.2)  # the consumer is in place
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def wait_for(self, ids: set[str], guard_s: float = GUARD_S) -> float:
        deadline = time.monotonic() + guard_s
        while not ids <= self.at.keys():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(ids - self.at.keys())} events never arrived")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), 1.0)
        return max(self.at[i] for i in ids)


# -- baselines ----------------------------------------------------------------------------


async def latency(
    log: JetStreamEventLog, arrivals: Arrivals, tag: str, n: int, rate: float,
    legs: dict[str, list[float]] | None = None,
) -> list[float]:  # fmt: skip
    """Paced publish -> readable samples (ms).

    With ``legs``, also where the time went (ms, from server timestamps; both servers
    run on this host's clock): ``origin`` publish -> stored in ``a``, ``bridge``
    stored in ``a`` -> stored in ``b``, ``reader`` stored in ``b`` -> readable here.
    """
    samples = []
    sent: list[tuple[int, float, int, str]] = []
    for i in range(n):
        wall, start = time.time_ns(), time.perf_counter()
        result = await log.append(event(tag, i))
        done = await arrivals.wait_for({result.event_id})
        samples.append((done - start) * 1000)
        sent.append((wall, start, result.seq, result.event_id))
        await asyncio.sleep(max(0.0, 1 / rate - (time.perf_counter() - start)))
    if legs is not None:
        for wall, start, seq, event_id in sent:
            in_a = (await log.get(STREAM, seq)).recorded_at_ns
            in_b = arrivals.stored_ns[event_id]
            readable = wall + (arrivals.at[event_id] - start) * 1e9
            legs.setdefault("origin", []).append((in_a - wall) / 1e6)
            legs.setdefault("bridge", []).append((in_b - in_a) / 1e6)
            legs.setdefault("reader", []).append((readable - in_b) / 1e6)
    return samples


async def quic_rtt(pki: dict[str, TlsFiles], n: int) -> list[float]:
    async def echo(stream: Any) -> None:
        with contextlib.suppress(Exception):
            while True:
                await stream.send(await stream.recv())

    server = QuicServer(host="127.0.0.1", port=0, tls=pki["b"], handler=echo)
    await server.start()
    conn = QuicConnector(host="127.0.0.1", port=server.port, tls=pki["a"], server_name="b")
    await conn.connect()
    stream = await conn.open_stream()
    frame: Frame = Ack(applied_seq=1)
    samples = []
    try:
        for _ in range(n + 50):
            start = time.perf_counter()
            await stream.send(frame)
            await stream.recv()
            samples.append((time.perf_counter() - start) * 1000)
    finally:
        await stream.close()
        await conn.close()
        await server.close()
    return samples[50:]


async def tcp_rtt(n: int) -> list[float]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.readexactly(200):
                writer.write(data)
                await writer.drain()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    samples = []
    for _ in range(n + 50):
        start = time.perf_counter()
        writer.write(b"x" * 200)
        await writer.drain()
        await reader.readexactly(200)
        samples.append((time.perf_counter() - start) * 1000)
    writer.close()
    server.close()
    return samples[50:]


async def batch_floor(log: JetStreamEventLog, n: int) -> list[float]:
    """Commit time of the smallest batch the target stores: one copy and its marker.

    Written to its own chain (origin ``floor``) so it never meets the bridge's chains.
    """
    domain = STREAM.removeprefix("AQE_").lower()
    subject = marker_subject(domain, "floor/AQE_TESTS/0")
    marker_seq = await log.last_subject_seq(subject)
    base = event("floor", 0)
    copy_subject = f"aqe.{domain}.case.floor.executed"
    samples = []
    for i in range(n + 20):
        copy = {
            Headers.EVENT_TYPE: base.type_tag(),
            Headers.MSG_ID: f"floor:{STREAM}:{time.time_ns()}:{i}",
        }
        marker = {
            Headers.EVENT_TYPE: MARKER,
            Headers.MSG_ID: f"floor-marker:{time.time_ns()}:{i}",
            Headers.EXPECTED_LAST_SUBJECT_SEQ: str(marker_seq),
        }
        start = time.perf_counter()
        result = await log.append_raw_batch(
            STREAM, [(copy_subject, base.to_json(), copy), (subject, b"{}", marker)]
        )
        samples.append((time.perf_counter() - start) * 1000)
        marker_seq = result.last_seq
    return samples[20:]


async def baselines(
    out: dict[str, Any], a: JetStreamEventLog, b: JetStreamEventLog, pki: dict[str, TlsFiles],
    n: int, rate: float,
) -> None:  # fmt: skip
    print("baselines: QUIC and TCP round trips, JetStream append -> readable, batch commit ...")
    out["quic_rtt"] = await quic_rtt(pki, n)
    out["tcp_rtt"] = await tcp_rtt(n)
    async with Arrivals(a) as local:
        out["local"] = await latency(a, local, "local", n, rate)
    out["batch_floor"] = await batch_floor(b, n)


async def publish(a: JetStreamEventLog, tag: str, n: int) -> set[str]:
    ids: set[str] = set()
    for lo in range(0, n, 1000):
        items = [NewEvent(event=event(tag, i)) for i in range(lo, min(n, lo + 1000))]
        ids.update(r.event_id for r in await a.append_many(items))
    return ids


async def throughput_live(
    a: JetStreamEventLog, arrivals: Arrivals, tag: str, n: int
) -> tuple[float, float]:
    start = time.perf_counter()
    ids = await publish(a, tag, n)
    published = time.perf_counter()
    done = await arrivals.wait_for(ids)
    return n / (done - start), n / (published - start)


# -- in-process mode ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def link(
    source: JetStreamEventLog, target: JetStreamEventLog, pki: dict[str, TlsFiles],
    options: dict[str, Any],
) -> AsyncIterator[SourceLink]:  # fmt: skip
    side = TargetSide(target, "b", [STREAM], max_batch=options.get("max_batch", 500))
    server = QuicServer(host="127.0.0.1", port=0, tls=pki["b"], handler=side.handle)
    await server.start()
    connector = QuicConnector(host="127.0.0.1", port=server.port, tls=pki["a"], server_name="b")
    src = SourceLink(
        source, "a", "b", connector, [STREAM],
        max_in_flight=options.get("max_in_flight", 4096),
    )  # fmt: skip
    task = asyncio.create_task(src.run())
    try:
        yield src
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await connector.close()
        await server.close()


async def run_inprocess(
    a: JetStreamEventLog, b: JetStreamEventLog, pki: dict[str, TlsFiles], args: argparse.Namespace
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    print("in-process bridge: latency, then live throughput ...")
    async with Arrivals(b) as remote, link(a, b, pki, args.link) as src:
        await asyncio.sleep(0.5)  # connected and resumed
        out["bridge"] = await latency(a, remote, "lat-ip", args.latency_events, args.rate)
        out["live"], out["publish_rate"] = await throughput_live(a, remote, "live-ip", args.events)
        out["link"] = src.stats()
    print("in-process bridge: catch-up of a backlog ...")
    backlog = await publish(a, "backlog-ip", args.events)
    async with Arrivals(b) as remote:
        start = time.perf_counter()
        async with link(a, b, pki, args.link):
            done = await remote.wait_for(backlog)
        out["catchup"] = args.events / (done - start)
        first = min(remote.at[i] for i in backlog)
        out["catchup_steady"] = args.events / max(done - first, 1e-9)
    return out


# -- nodes mode: `aqe bridge run` processes -----------------------------------------------


class Nodes:
    """Configs and ``aqe bridge run`` processes of the two clusters (one link a -> b)."""

    def __init__(
        self, root: Path, servers: dict[str, NatsServerProcess], options: dict[str, Any],
        profile: Path | None,
    ) -> None:  # fmt: skip
        self.root = root
        urls = {n: server.url for n, server in servers.items()}
        self.server_pids = {n: server.pid for n, server in servers.items()}
        self.ports = dict(zip(urls, free_udp_ports(len(urls)), strict=True))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.starts: dict[str, int] = dict.fromkeys(urls, 0)
        self.profile = profile
        for name in urls:
            peers = ""
            if name == "a":
                peers = f'[[peers]]\nname = "b"\naddress = "127.0.0.1:{self.ports["b"]}"\n'
            link_table = "".join(f"{k} = {json.dumps(v)}\n" for k, v in options.items())
            text = (
                f'cluster = "{name}"\n'
                f'nats_url = "{urls[name]}"\n'
                f'data_dir = "{name}/bridge"\n'
                f'streams = ["{STREAM}"]\n'
                "partitions = 8\n"
                "status_interval_s = 0.25\n"
                f'[listen]\nhost = "127.0.0.1"\nport = {self.ports[name]}\n'
                f'[tls]\nca = "certs/ca.pem"\ncert = "certs/{name}.pem"\n'
                f'key = "certs/{name}.key"\n'
                f"{peers}[link]\nrelay = false\n{link_table}"
            )
            (root / f"{name}.toml").write_text(text, encoding="utf-8")

    def start(self, name: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AQE_")}
        self.starts[name] += 1
        cli = ["bridge", "run", "--config", str(self.root / f"{name}.toml")]
        if self.profile is not None:
            out = self.profile / f"{name}-{self.starts[name]}.prof"
            argv = [sys.executable, "-c", _PROFILED, str(out), *cli]
        else:
            argv = [sys.executable, "-m", "aqe.cli", *cli]
        with (self.root / f"bridge-{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=log, env=env)

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)

    def status(self, name: str) -> dict[str, Any]:
        path = self.root / name / "bridge" / "status.json"
        try:
            return dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return {}

    async def wait_link_ready(self, guard_s: float = 60.0) -> None:
        """Until node ``a`` reports every chain of its link to ``b`` ready."""
        deadline = time.monotonic() + guard_s
        while True:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"node {name} exited {proc.returncode}:\n{self.log(name)}")
            link_b = self.status("a").get("links", {}).get("b", {})
            chains = link_b.get("chains", {})
            if link_b.get("connected") and chains and all(c["ready"] for c in chains.values()):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"link a -> b not ready:\n{self.log('a')}\n{self.log('b')}")
            await asyncio.sleep(0.05)

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far: each node, each nats-server, this process."""
        pids = {f"node {n}": proc.pid for n, proc in self.procs.items()}
        pids.update({f"nats {n}": pid for n, pid in self.server_pids.items()})
        pids["bench"] = os.getpid()
        return {name: cpu_s(pid) for name, pid in pids.items()}

    async def batches(self) -> tuple[int, int]:
        """(atomic batches, events) node ``b`` has stored, once its status caught up."""
        await asyncio.sleep(0.6)  # status.json is rewritten every 0.25 s
        chains = (self.status("b").get("inbound") or {}).get("chains", {}).values()
        return sum(c["batches"] for c in chains), sum(c["events"] for c in chains)

    def log(self, name: str) -> str:
        path = self.root / f"bridge-{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


async def run_nodes(
    a: JetStreamEventLog, b: JetStreamEventLog, root: Path,
    servers: dict[str, NatsServerProcess], args: argparse.Namespace,
) -> dict[str, Any]:  # fmt: skip
    out: dict[str, Any] = {}
    nodes = Nodes(root, servers, args.link, args.profile)
    try:
        nodes.start("b")
        nodes.start("a")
        await nodes.wait_link_ready()
        print("bridge nodes: latency, then live throughput ...")
        async with Arrivals(b) as remote:
            out["legs"] = {}
            out["bridge"] = await latency(
                a, remote, "lat", args.latency_events, args.rate, out["legs"]
            )
            stored = await nodes.batches()
            cpu = nodes.cpu()
            out["live"], out["publish_rate"] = await throughput_live(a, remote, "live", args.events)
            out["live_cpu_us"] = cpu_per_event(cpu, nodes.cpu(), args.events)
            out["live_batches"] = minus(await nodes.batches(), stored)
        out["link"] = nodes.status("a").get("links", {}).get("b", {})
        print("bridge nodes: catch-up of a backlog (node a stopped meanwhile) ...")
        nodes.stop("a")
        stored = await nodes.batches()
        backlog = await publish(a, "backlog", args.events)
        async with Arrivals(b) as remote:
            start = time.perf_counter()
            nodes.start("a")
            while not remote.at.keys() & backlog:
                remote.changed.clear()
                await remote.changed.wait()
            cpu = nodes.cpu()
            early = len(remote.at.keys() & backlog)
            done = await remote.wait_for(backlog)
            out["catchup_cpu_us"] = cpu_per_event(cpu, nodes.cpu(), args.events - early)
            first = min(remote.at[i] for i in backlog)
        out["catchup"] = args.events / (done - start)
        out["catchup_steady"] = args.events / max(done - first, 1e-9)
        out["catchup_start_s"] = first - start
        out["catchup_batches"] = minus(await nodes.batches(), stored)
    finally:
        nodes.stop_all()
    return out


# -- main ---------------------------------------------------------------------------------


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="aqe-bench-bridge-") as tmp:
        root = Path(tmp)
        pki = create_dev_pki(root / "certs", ["a", "b"])
        servers = {
            n: NatsServerProcess.start_sync(root / n / "js", log_file=root / n / "nats.log")
            for n in ("a", "b")
        }
        try:
            a, b = await connect(servers["a"].url), await connect(servers["b"].url)
            out: dict[str, Any] = {}
            await baselines(out, a, b, pki, args.latency_events, args.rate)
            if args.mode in ("nodes", "both"):
                out["nodes"] = await run_nodes(a, b, root, servers, args)
            if args.mode in ("inprocess", "both"):
                out["inprocess"] = await run_inprocess(a, b, pki, args)
            await a.close()
            await b.close()
            return out
        finally:
            for server in servers.values():
                server.stop_sync()


def link_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except ValueError:
        return key.strip(), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("nodes", "inprocess", "both"), default="nodes",
                        help="bridge nodes as processes, in-process, or both")  # fmt: skip
    parser.add_argument("--events", type=int, default=20_000, help="events for throughput")
    parser.add_argument("--latency-events", type=int, default=1000, help="latency samples")
    parser.add_argument("--rate", type=float, default=200.0, help="paced events/s (latency)")
    parser.add_argument("--link", type=link_option, action="append", default=[],
                        metavar="KEY=VALUE", help="a [link] setting for both nodes")  # fmt: skip
    parser.add_argument("--profile", type=Path, help="nodes mode: cProfile the nodes into DIR")
    parser.add_argument("--json", action="store_true", help="print the raw results as JSON")
    args = parser.parse_args()
    args.link = dict(args.link)
    if args.profile is not None:
        args.profile = args.profile.resolve()
        args.profile.mkdir(parents=True, exist_ok=True)
    out = asyncio.run(main_async(args))

    def row(name: str, samples: list[float], base: float | None = None) -> str:
        p50, p99 = statistics.median(samples), pct(samples, 0.99)
        ratio = f"  x{p50 / base:.1f} of JetStream local" if base else ""
        return f"  {name:<40} p50 {p50:7.3f} ms   p99 {p99:7.3f} ms{ratio}"

    local_p50 = statistics.median(out["local"])
    print(f"\nlatency (publish -> readable), paced at {args.rate:g} events/s"
          f"{'; link ' + str(args.link) if args.link else ''}")  # fmt: skip
    for mode, label in (("nodes", "bridge nodes a -> b"), ("inprocess", "in-process a -> b")):
        if mode not in out:
            continue
        print(row(label, out[mode]["bridge"], local_p50))
        legs = out[mode].get("legs", {})
        for leg, what in (("origin", "publish -> stored in a"), ("bridge", "stored in a -> in b"),
                          ("reader", "stored in b -> readable")):  # fmt: skip
            if leg in legs:
                print(row(f"  of which {what}", legs[leg]))
    print(row("baseline: JetStream append -> readable", out["local"]))
    print(row("baseline: atomic batch commit (2 msgs)", out["batch_floor"]))
    print(row("baseline: aioquic 200 B round trip", out["quic_rtt"]))
    print(row("baseline: plain TCP 200 B round trip", out["tcp_rtt"]))
    print("\nthroughput per link")
    for mode in ("nodes", "inprocess"):
        if mode not in out:
            continue
        res = out[mode]
        print(f"  {mode:<9} live (publishing meanwhile)  {res['live']:7.0f} events/s "
              f"(publisher alone {res['publish_rate']:.0f}/s)")  # fmt: skip
        start = f", node up + connected in {res['catchup_start_s']:.2f} s" if (
            "catchup_start_s" in res) else ""  # fmt: skip
        print(f"  {mode:<9} catch-up of a backlog        {res['catchup']:7.0f} events/s "
              f"(from the first copy: {res['catchup_steady']:.0f}/s{start})")  # fmt: skip
        cores = os.cpu_count() or 1
        for phase in ("live", "catchup"):
            if f"{phase}_cpu_us" in res:
                cpu = res[f"{phase}_cpu_us"]
                total = sum(cpu.values())
                shares = ", ".join(f"{k} {v:.0f}" for k, v in cpu.items())
                print(f"  {mode:<9} {phase} CPU us/event: {shares}; all {total:.0f} "
                      f"(at most {cores * 1e6 / total:.0f} events/s on {cores} cores)")  # fmt: skip
            if f"{phase}_batches" in res:
                batches, events = res[f"{phase}_batches"]
                print(f"  {mode:<9} {phase}: {events} events stored in {batches} atomic batches "
                      f"({events / max(1, batches):.1f} a batch)")  # fmt: skip
    floor = statistics.median(out["local"]) + statistics.median(out["batch_floor"])
    print(f"\nfloor with atomic batches: JetStream local p50 + batch commit p50 = {floor:.2f} ms")
    for mode in ("nodes", "inprocess"):
        if mode not in out:
            continue
        res = out[mode]
        b50, b99 = statistics.median(res["bridge"]), pct(res["bridge"], 0.99)
        rate = min(res["live"], res["catchup_steady"])
        print(f"goals ({mode}): p50 <= 3 ms: {b50:.2f} ({'met' if b50 <= 3 else 'missed'}); "
              f"p99 <= 15 ms: {b99:.2f} ({'met' if b99 <= 15 else 'missed'}); "
              f">= 10k events/s: {rate:.0f} ({'met' if rate >= 10_000 else 'missed'})")  # fmt: skip
    if args.json:
        json.dump(
            {k: ({kk: vv for kk, vv in v.items() if kk != "link"} if isinstance(v, dict) else v)
             for k, v in out.items()},
            sys.stdout,
        )  # fmt: skip
        print()


if __name__ == "__main__":
    main()
