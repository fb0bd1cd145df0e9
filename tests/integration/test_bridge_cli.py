"""``aqe bridge certs|run|status`` as real subprocesses, over real QUIC and nats-servers.

Two independent JetStream servers (clusters ``a`` and ``b``), certificates from the
``certs`` command, and two ``aqe bridge run`` processes: events appended on either
side arrive on the other once each, ``status --json`` reports the links connected
with the acknowledged sequences, and SIGTERM (or SIGINT) stops each process with exit
status 0.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from cryptography import x509

from aqe.events import Headers, PatternAdded, TestCaseExecuted
from aqe.log import NewEvent, load_stream_specs
from aqe.log.jetstream import JetStreamEventLog
from aqe.server import NatsServerProcess
from support.ports import free_udp_ports
from support.waiting import until

AQE = [sys.executable, "-m", "aqe.cli"]
STREAMS = ("AQE_TESTS", "AQE_PATTERNS")
GUARD_S = 60.0
"""Only a failure guard: how long a wait may take before the test gives up."""


def env(tmp_path: Path) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("AQE_")}
    out.update(AQE_DATA_DIR=str(tmp_path / "data"), COLUMNS="200")
    return out


def aqe(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AQE, *args],
        env=env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def write_config(
    folder: Path, name: str, nats_url: str, port: int, peers: dict[str, int], certs: Path
) -> Path:
    peer_blocks = "".join(
        f'[[peers]]\nname = "{peer}"\naddress = "127.0.0.1:{peer_port}"\n\n'
        for peer, peer_port in peers.items()
    )
    path = folder / f"{name}.toml"
    path.write_text(
        f"""\
cluster = "{name}"
nats_url = "{nats_url}"
data_dir = "state/{name}"
streams = {json.dumps(list(STREAMS))}
partitions = 4
apply_streams = true
status_interval_s = 0.2

[listen]
host = "127.0.0.1"
port = {port}

[tls]
ca = "{certs.name}/ca.pem"
cert = "{certs.name}/{name}.pem"
key = "{certs.name}/{name}.key"

{peer_blocks}[link]
keepalive_s = 1.0
idle_timeout_s = 10.0
reconnect_max_s = 0.5
gossip_s = 0.5
"""
    )
    return path


# -- certs ------------------------------------------------------------------------------------


def test_certs_writes_usable_files_and_warns(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    done = aqe(tmp_path, "bridge", "certs", "--out", str(out), "a", "b", "--host", "localhost")
    assert done.returncode == 0, done.stderr
    names = ["ca.pem", "ca.key", "a.pem", "a.key", "b.pem", "b.key"]
    for name in names:
        assert f"wrote {out / name}" in done.stdout
        assert (out / name).is_file()
    assert "development CA" in done.stderr
    for key in ("ca.key", "a.key", "b.key"):
        assert stat.S_IMODE((out / key).stat().st_mode) == 0o600

    ca = x509.load_pem_x509_certificate((out / "ca.pem").read_bytes())
    for name in ("a", "b"):
        cert = x509.load_pem_x509_certificate((out / f"{name}.pem").read_bytes())
        cert.verify_directly_issued_by(ca)
        cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
        assert cn == name
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert name in sans.get_values_for_type(x509.DNSName)
        # The pair loads as a TLS identity, trusted by a context that has only the CA.
        context = ssl.create_default_context(cafile=str(out / "ca.pem"))
        context.load_cert_chain(str(out / f"{name}.pem"), str(out / f"{name}.key"))

    # Same hosts: the CA and the existing pairs are kept, only c's pair is new.
    again = aqe(
        tmp_path,
        "bridge",
        "certs",
        "--out",
        str(out),
        "a",
        "b",
        "c",
        "--host",
        "localhost",
        "--json",
    )
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert sorted(report["written"]) == sorted(str(out / n) for n in ("c.pem", "c.key"))
    assert str(out / "ca.pem") in report["kept"]
    assert report["clusters"]["c"]["cert"] == str(out / "c.pem")

    before = (out / "a.pem").read_bytes()
    forced = aqe(
        tmp_path, "bridge", "certs", "--out", str(out), "a", "--host", "localhost", "--force"
    )
    assert forced.returncode == 0, forced.stderr
    assert (out / "a.pem").read_bytes() != before


def test_certs_refuses_a_bad_cluster_name(tmp_path: Path) -> None:
    done = aqe(tmp_path, "bridge", "certs", "--out", str(tmp_path / "c"), "no/slash")
    assert done.returncode == 2
    assert "aqe: error:" in done.stderr
    assert "'no/slash'" in done.stderr


# -- errors before anything runs ----------------------------------------------------------------


def test_run_with_a_bad_config_names_file_and_field(tmp_path: Path) -> None:
    path = write_config(tmp_path, "a", "nats://127.0.0.1:1", 7000, {"b": 0}, tmp_path / "certs")
    done = aqe(tmp_path, "bridge", "run", "--config", str(path))
    assert done.returncode == 2
    assert f"aqe: error: {path}: peers[0].address: port must be 1..65535, got 0" in done.stderr


def test_run_without_certificates_names_the_missing_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, "a", "nats://127.0.0.1:1", 7000, {}, tmp_path / "certs")
    done = aqe(tmp_path, "bridge", "run", "--config", str(path))
    assert done.returncode == 2
    assert f"{path}: tls.ca: no such file: {tmp_path / 'certs' / 'ca.pem'}" in done.stderr


def test_status_before_any_run(tmp_path: Path) -> None:
    path = write_config(tmp_path, "a", "nats://127.0.0.1:1", 7000, {}, tmp_path / "certs")
    done = aqe(tmp_path, "bridge", "status", "--config", str(path))
    assert done.returncode == 2
    assert "no bridge status yet" in done.stderr
    assert str(tmp_path / "state" / "a" / "status.json") in done.stderr


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_run_without_nats_fails_with_the_url(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    assert aqe(tmp_path, "bridge", "certs", "--out", str(certs), "a").returncode == 0
    url = f"nats://127.0.0.1:{free_tcp_port()}"
    path = write_config(tmp_path, "a", url, 0, {}, certs)
    done = aqe(tmp_path, "bridge", "run", "--config", str(path))
    assert done.returncode == 2, done.stderr
    assert "aqe: error:" in done.stderr
    assert url in done.stderr


@pytest.mark.nats
def test_run_on_a_taken_port_fails_and_says_so(tmp_path: Path, nats_url: str) -> None:
    certs = tmp_path / "certs"
    assert aqe(tmp_path, "bridge", "certs", "--out", str(certs), "a").returncode == 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = int(taken.getsockname()[1])
        path = write_config(tmp_path, "a", nats_url, port, {}, certs)
        done = aqe(tmp_path, "bridge", "run", "--config", str(path))
    assert done.returncode == 2, done.stderr
    assert f"aqe: error: cannot listen for bridge peers on 127.0.0.1:{port}" in done.stderr
    code, view, _ = status(tmp_path, path)
    assert code == 1
    assert view is not None
    assert view["state"] == "failed"
    assert "cannot listen" in view["derived"]["health"]["reason"]


# -- two clusters, two bridge processes -----------------------------------------------------------


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[dict[str, NatsServerProcess]]:
    started: dict[str, NatsServerProcess] = {}
    try:
        for name in ("a", "b"):
            started[name] = NatsServerProcess.start_sync(
                tmp_path / name / "js", log_file=tmp_path / f"nats-{name}.log"
            )
        yield started
    finally:
        for server in started.values():
            server.stop_sync(timeout=5.0)


class Node:
    def __init__(self, tmp_path: Path, config: Path) -> None:
        self.config = config
        self.stderr_path = tmp_path / f"bridge-{config.stem}.err"
        self._stderr = self.stderr_path.open("w")
        self.proc = subprocess.Popen(
            [*AQE, "bridge", "run", "--config", str(config)],
            env=env(tmp_path),
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=30)
        finally:
            self._stderr.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._stderr.close()


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    made: list[Node] = []
    yield made
    for node in made:
        node.kill()


def status(tmp_path: Path, config: Path) -> tuple[int, dict[str, Any] | None, str]:
    done = aqe(tmp_path, "bridge", "status", "--config", str(config), "--json")
    parsed = json.loads(done.stdout) if done.stdout.strip() else None
    return done.returncode, parsed, done.stderr


async def wait_for(check: Callable[[], Any], what: str, nodes: list[Node]) -> Any:
    def alive() -> None:
        for node in nodes:
            assert node.proc.poll() is None, f"{node.config.stem} exited:\n{node.stderr}"

    def logs() -> str:
        return "\n".join(f"--- {n.config.stem}\n{n.stderr[-4000:]}" for n in nodes)

    return await until(check, what, timeout_s=GUARD_S, alive=alive, context=logs)


def executions(prefix: str, n: int) -> list[NewEvent]:
    return [
        NewEvent(
            event=TestCaseExecuted(
                test_id=f"{prefix}/test_{i % 17}.py::test_case[{i}]",
                run_id=f"{prefix}-run-{i // 17}",
                outcome="passed" if i % 5 else "failed",
                duration_s=0.01 * i,
            )
        )
        for i in range(n)
    ]


def patterns(prefix: str, n: int) -> list[NewEvent]:
    return [
        NewEvent(event=PatternAdded(pattern_id=f"{prefix}-p{i}", name=f"pattern {i}", code="x"))
        for i in range(n)
    ]


async def stored(log: JetStreamEventLog) -> dict[str, list[Any]]:
    """Per stream, the events (markers left out) with their headers."""
    out: dict[str, list[Any]] = {}
    for stream in STREAMS:
        out[stream] = [
            env
            async for env in log.read(stream)
            if env.event_type and not env.event_type.startswith("bridge.")
        ]
    return out


@pytest.mark.nats
@pytest.mark.timeout(240)
async def test_two_bridge_processes_replicate_both_ways(
    tmp_path: Path, servers: dict[str, NatsServerProcess], nodes: list[Node]
) -> None:
    certs = tmp_path / "certs"
    made = aqe(tmp_path, "bridge", "certs", "--out", str(certs), "a", "b")
    assert made.returncode == 0, made.stderr
    ports = dict(zip(("a", "b"), free_udp_ports(2), strict=True))
    configs = {
        name: write_config(
            tmp_path,
            name,
            servers[name].url,
            ports[name],
            {peer: ports[peer] for peer in ports if peer != name},
            certs,
        )
        for name in ("a", "b")
    }
    for name in ("a", "b"):
        nodes.append(Node(tmp_path, configs[name]))

    def links_up() -> bool:
        for config in configs.values():
            _, view, _ = status(tmp_path, config)
            if view is None or view["derived"]["links_connected"] != 1:
                return False
        return True

    await wait_for(links_up, "both links to connect", nodes)

    specs = load_stream_specs()
    logs = {
        name: JetStreamEventLog(await nats.connect(servers[name].url), specs) for name in ("a", "b")
    }
    try:
        batches = {"a": [executions("a", 300), patterns("a", 40)], "b": [executions("b", 200)]}
        sent = {name: [e for batch in chunks for e in batch] for name, chunks in batches.items()}
        for name, chunks in batches.items():
            for batch in chunks:  # an atomic batch stays in one stream
                await logs[name].append_batch(batch)

        async def replicated() -> bool:
            for name, other in (("a", "b"), ("b", "a")):
                held = await stored(logs[other])
                copies = sum(
                    env.headers.get(Headers.ORIGIN_CLUSTER) == name
                    for events in held.values()
                    for env in events
                )
                if copies < len(sent[name]):
                    return False
            return True

        await wait_for(replicated, "events to replicate both ways", nodes)

        held = {name: await stored(logs[name]) for name in ("a", "b")}
        for name, other in (("a", "b"), ("b", "a")):
            local = {
                stream: [e for e in events if Headers.ORIGIN_CLUSTER not in e.headers]
                for stream, events in held[name].items()
            }
            copies = {
                stream: [e for e in events if e.headers.get(Headers.ORIGIN_CLUSTER) == name]
                for stream, events in held[other].items()
            }
            for stream in STREAMS:
                # Each event exactly once on the other side, with the same data.
                assert len(copies[stream]) == len(local[stream])
                ids = Counter(e.headers[Headers.MSG_ID] for e in copies[stream])
                assert all(n == 1 for n in ids.values())
                assert sorted(e.data for e in copies[stream]) == sorted(
                    e.data for e in local[stream]
                )
                origin_seqs = {int(e.headers[Headers.ORIGIN_SEQ]) for e in copies[stream]}
                assert origin_seqs == {e.seq for e in local[stream]}
            # Nothing travels back to where it came from.
            assert not any(
                e.headers.get(Headers.ORIGIN_CLUSTER) == other
                for events in held[other].values()
                for e in events
            )

        last_local = {
            name: {
                stream: max(
                    (e.seq for e in events if Headers.ORIGIN_CLUSTER not in e.headers), default=0
                )
                for stream, events in held[name].items()
            }
            for name in ("a", "b")
        }

        def settled() -> dict[str, Any] | None:
            views = {}
            for name, config in configs.items():
                code, view, _ = status(tmp_path, config)
                if code != 0 or view is None:
                    return None
                [link] = view["derived"]["links"].values()
                expected = {s: n for s, n in last_local[name].items() if n}
                acked = {s: n for s, n in link["acked_seq"].items() if n}
                if not link["connected"] or link["lag_events"] or acked != expected:
                    return None
                views[name] = view
            return views

        views = await wait_for(settled, "status to show every event acknowledged", nodes)
    finally:
        for log in logs.values():
            await log.close()

    for name, view in views.items():
        other = "b" if name == "a" else "a"
        assert view["cluster"] == name
        assert view["state"] == "running"
        assert view["derived"]["health"]["state"] == "running"
        link = view["derived"]["links"][other]
        assert link["address"] == f"127.0.0.1:{ports[other]}"
        assert link["events_acked"] == len(sent[name])
        assert link["sent_seq"] == {**link["sent_seq"], **link["acked_seq"]}
        assert view["listen"]["port"] == ports[name]
        assert view["server"]["connections"] >= 1
        inbound = {(v["origin"], v["stream"]): v for v in view["derived"]["inbound"]}
        assert sum(v["events"] for v in inbound.values() if v["origin"] == other) == len(
            sent[other]
        )

    # A node starved for a moment reads as stale (exit 1): wait for a fresh snapshot.
    def human_status() -> subprocess.CompletedProcess[str] | None:
        done = aqe(tmp_path, "bridge", "status", "--config", str(configs["a"]))
        return done if done.returncode == 0 else None

    human = await wait_for(human_status, "a human-readable running status", nodes)
    assert "bridge a" in human.stdout
    assert "running" in human.stdout
    assert "outgoing links" in human.stdout

    for node, sig in zip(nodes, (signal.SIGTERM, signal.SIGINT), strict=True):
        assert node.stop(sig) == 0, node.stderr
        assert f"{sig.name} received; stopping" in node.stderr
        assert "link up" in node.stderr
        assert "stopped" in node.stderr
    for config in configs.values():
        code, view, _ = status(tmp_path, config)
        assert code == 1
        assert view is not None
        assert view["state"] == "stopped"
        assert view["derived"]["health"]["state"] == "stopped"
