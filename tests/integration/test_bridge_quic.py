"""The QUIC bridge transport on loopback: real aioquic, real certificates from a dev PKI.

Timeouts here are failure guards only; how fast things are belongs to
``tests/benchmarks/bench_bridge_transport.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import socket
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aioquic.asyncio.client import connect as aioquic_connect
from aioquic.quic.configuration import QuicConfiguration
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from aqe.bridge.certs import TlsFiles, create_dev_pki, peer_name
from aqe.bridge.channel import FrameStream
from aqe.bridge.frames import (
    Ack,
    Data,
    Error,
    Frame,
    Gap,
    Hello,
    Marks,
    Open,
    Resume,
    encode_frame,
)
from aqe.bridge.quic import ALPN, MAX_STREAMS, SEND_BUFFER, QuicConnector, QuicServer
from aqe.errors import BridgeError, LinkDownError, StreamClosedError

GUARD_S = 20.0  # failure guard for any single wait

Handler = Callable[[FrameStream], Awaitable[None]]


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, TlsFiles]:
    return create_dev_pki(tmp_path / "pki", ["alpha", "beta", "gamma"])


class Recorder:
    """An echo handler that remembers who called."""

    def __init__(self) -> None:
        self.peers: list[str] = []
        self.ended: list[StreamClosedError] = []

    async def __call__(self, stream: FrameStream) -> None:
        self.peers.append(stream.peer)
        while True:
            try:
                frame = await stream.recv()
            except StreamClosedError as exc:
                self.ended.append(exc)
                return
            await stream.send(frame)


@asynccontextmanager
async def serving(
    files: TlsFiles, handler: Handler, *, idle_timeout_s: float = 30.0, port: int = 0
) -> AsyncIterator[QuicServer]:
    server = QuicServer(
        host="127.0.0.1", port=port, tls=files, handler=handler, idle_timeout_s=idle_timeout_s
    )
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@asynccontextmanager
async def dialling(
    server: QuicServer, files: TlsFiles, **kwargs: object
) -> AsyncIterator[QuicConnector]:
    options: dict[str, object] = {"server_name": "beta"} | kwargs
    connector = QuicConnector(host="127.0.0.1", port=server.port, tls=files, **options)  # type: ignore[arg-type]
    try:
        yield connector
    finally:
        await connector.close()


async def eventually(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(GUARD_S):
        while not check():
            await asyncio.sleep(0.01)


async def echo_once(stream: FrameStream, frame: Frame) -> Frame:
    await stream.send(frame)
    async with asyncio.timeout(GUARD_S):
        return await stream.recv()


async def send_until_refused(stream: FrameStream) -> None:
    """Keep sending until the stream refuses (the peer's STOP_SENDING needs a round trip)."""
    async with asyncio.timeout(GUARD_S):
        while True:
            await stream.send(Hello(cluster="more"))
            await asyncio.sleep(0.01)


SAMPLES: list[Frame] = [
    Hello(cluster="alpha"),
    Open(origin="alpha", stream="AQE_TESTS", partition=3, partitions=16, source="alpha"),
    Resume(applied_seq=41),
    Data(
        seq=42,
        prev=41,
        subject="aqe.tests.case.x.executed",
        data=bytes(range(256)) * 4,
        headers={"Nats-Msg-Id": "e-42", "Aqe-Origin-Cluster": "alpha"},
        recorded_at_ns=1_700_000_000_000_000_000,
    ),
    Ack(applied_seq=42),
    Gap(applied_seq=42, got_prev=44, got_seq=45),
    Marks(cluster="alpha", marks={"alpha/AQE_TESTS/3": 42}),
    Error(code="bye", message="done"),
]


# -- frames and identity ----------------------------------------------------------------


async def test_frames_round_trip_and_peers_are_the_verified_cluster_names(
    pki: dict[str, TlsFiles],
) -> None:
    recorder = Recorder()
    async with serving(pki["beta"], recorder) as server, dialling(server, pki["alpha"]) as alpha:
        await alpha.connect()
        assert alpha.connected
        stream = await alpha.open_stream()
        assert stream.peer == "beta"
        for frame in SAMPLES:
            assert await echo_once(stream, frame) == frame
        await stream.close()
        async with asyncio.timeout(GUARD_S):
            with pytest.raises(StreamClosedError) as ended:
                await stream.recv()
        assert ended.value.code == "finished"
        assert recorder.peers == ["alpha"]
        stats = alpha.stats()
        assert (stats.handshakes, stats.full_handshakes, stats.connected) == (1, 1, True)
        assert server.stats().connections == 1
        assert server.stats().streams_opened == 1


async def test_gamma_is_told_apart_from_alpha(pki: dict[str, TlsFiles]) -> None:
    recorder = Recorder()
    async with serving(pki["beta"], recorder) as server:
        for name in ("alpha", "gamma"):
            async with dialling(server, pki[name]) as connector:
                await connector.connect()
                stream = await connector.open_stream()
                await echo_once(stream, Hello(cluster=name))
    assert recorder.peers == ["alpha", "gamma"]


# -- refusals ---------------------------------------------------------------------------


async def test_client_without_a_certificate_is_refused(pki: dict[str, TlsFiles]) -> None:
    recorder = Recorder()
    async with serving(pki["beta"], recorder) as server, dialling(server, pki["alpha"]) as anon:
        anon._material = dataclasses.replace(anon._material, certificate=None, private_key=None)  # type: ignore[arg-type]
        with pytest.raises(LinkDownError, match="certificate"):
            await anon.connect()
        assert not anon.connected
        assert server.stats().refused == 1
        assert server.stats().connections == 0
    assert recorder.peers == []


async def test_plain_aioquic_client_without_certificate_never_reaches_the_handler(
    pki: dict[str, TlsFiles],
) -> None:
    # An independent client: finishes its own side of the handshake, then writes at once.
    recorder = Recorder()
    async with serving(pki["beta"], recorder) as server:
        config = QuicConfiguration(is_client=True, alpn_protocols=[ALPN], server_name="beta")
        config.load_verify_locations(cafile=str(pki["beta"].ca))
        async with aioquic_connect("127.0.0.1", server.port, configuration=config) as client:
            _reader, writer = await client.create_stream()
            writer.write(encode_frame(Hello(cluster="intruder")))
            async with asyncio.timeout(GUARD_S):
                await client.wait_closed()
            writer.close()
        await eventually(lambda: server.stats().refused == 1)
        assert server.stats().connections == 0
        assert server.stats().streams_opened == 0
    assert recorder.peers == []


async def test_certificate_from_another_ca_is_refused(
    pki: dict[str, TlsFiles], tmp_path: Path
) -> None:
    rogue = create_dev_pki(tmp_path / "rogue", ["alpha"])["alpha"]
    # Trusts the real CA (so it accepts beta) but presents a certificate from another CA.
    impostor = TlsFiles(ca=pki["alpha"].ca, cert=rogue.cert, key=rogue.key)
    recorder = Recorder()
    async with serving(pki["beta"], recorder) as server, dialling(server, impostor) as connector:
        with pytest.raises(LinkDownError, match="certificate rejected"):
            await connector.connect()
        assert server.stats().refused == 1
    assert recorder.peers == []


async def test_server_name_that_the_certificate_does_not_carry_is_refused(
    pki: dict[str, TlsFiles],
) -> None:
    recorder = Recorder()
    async with (
        serving(pki["beta"], recorder) as server,
        dialling(server, pki["alpha"], server_name="gamma") as connector,
    ):
        with pytest.raises(LinkDownError, match="gamma"):
            await connector.connect()
        assert not connector.connected
    assert recorder.peers == []


async def test_nothing_listening_is_reported_as_refused(pki: dict[str, TlsFiles]) -> None:
    async with serving(pki["beta"], Recorder()) as server:
        port = server.port
    connector = QuicConnector(host="127.0.0.1", port=port, tls=pki["alpha"], server_name="beta")
    with pytest.raises(LinkDownError, match=r"refused|no answer"):
        await connector.connect()
    await connector.close()


async def test_a_peer_that_never_answers_times_out(pki: dict[str, TlsFiles]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # bound, so no ICMP refusal; it never answers
        connector = QuicConnector(
            host="127.0.0.1",
            port=silent.getsockname()[1],
            tls=pki["alpha"],
            server_name="beta",
            connect_timeout_s=0.5,
        )
        with pytest.raises(LinkDownError, match="timed out"):
            await connector.connect()
        assert not connector.connected
        await connector.close()


def test_unusable_tls_files_fail_at_construction(pki: dict[str, TlsFiles], tmp_path: Path) -> None:
    missing = dataclasses.replace(pki["alpha"], key=tmp_path / "nope.key")
    with pytest.raises(BridgeError, match=r"nope\.key"):
        QuicConnector(host="127.0.0.1", port=1, tls=missing, server_name="beta")
    swapped = dataclasses.replace(pki["alpha"], key=pki["beta"].key)
    with pytest.raises(BridgeError, match=r"beta\.key: does not belong"):
        QuicServer(host="127.0.0.1", port=0, tls=swapped, handler=Recorder())


# -- bad input ----------------------------------------------------------------------------


async def test_malformed_bytes_close_only_that_stream(pki: dict[str, TlsFiles]) -> None:
    recorder = Recorder()
    async with serving(pki["beta"], recorder) as server, dialling(server, pki["alpha"]) as alpha:
        await alpha.connect()
        good = await alpha.open_stream()
        assert await echo_once(good, Hello(cluster="before")) == Hello(cluster="before")
        bad = await alpha.open_stream()
        await bad._send_raw(b"\x00\x00\x00\x05garbage")  # type: ignore[attr-defined]
        async with asyncio.timeout(GUARD_S):
            answer = await bad.recv()
            assert isinstance(answer, Error)
            assert answer.code == "malformed"
            with pytest.raises(StreamClosedError):
                await bad.recv()
        with pytest.raises(StreamClosedError):
            await send_until_refused(bad)
        await eventually(lambda: any(e.code == "malformed" for e in recorder.ended))
        assert await echo_once(good, Hello(cluster="after")) == Hello(cluster="after")
        assert alpha.connected
        assert server.stats().streams_failed == 1


async def test_oversized_length_prefix_is_malformed(pki: dict[str, TlsFiles]) -> None:
    recorder = Recorder()
    async with serving(pki["beta"], recorder) as server, dialling(server, pki["alpha"]) as alpha:
        await alpha.connect()
        bad = await alpha.open_stream()
        await bad._send_raw(b"\xff\xff\xff\xff")  # type: ignore[attr-defined]
        async with asyncio.timeout(GUARD_S):
            answer = await bad.recv()
        assert isinstance(answer, Error)
        assert answer.code == "malformed"
        assert "exceeds" in answer.message


async def test_handler_exception_closes_only_its_stream(pki: dict[str, TlsFiles]) -> None:
    async def picky(stream: FrameStream) -> None:
        while True:
            frame = await stream.recv()
            if isinstance(frame, Hello) and frame.cluster == "boom":
                raise RuntimeError("handler bug")
            await stream.send(frame)

    async with serving(pki["beta"], picky) as server, dialling(server, pki["alpha"]) as alpha:
        await alpha.connect()
        good, doomed = await alpha.open_stream(), await alpha.open_stream()
        answer = await echo_once(doomed, Hello(cluster="boom"))
        assert isinstance(answer, Error)
        assert answer.code == "internal"
        async with asyncio.timeout(GUARD_S):
            with pytest.raises(StreamClosedError):
                await doomed.recv()
        assert await echo_once(good, Ack(applied_seq=1)) == Ack(applied_seq=1)
        assert server.stats().streams_failed == 1


# -- 0-RTT ------------------------------------------------------------------------------


async def test_reconnect_resumes_with_0rtt_and_early_frames_arrive(
    pki: dict[str, TlsFiles],
) -> None:
    recorder = Recorder()
    async with serving(pki["beta"], recorder) as server, dialling(server, pki["alpha"]) as alpha:
        await alpha.connect()
        first = await alpha.open_stream()
        await echo_once(first, Hello(cluster="full"))
        await alpha.close()
        async with asyncio.timeout(GUARD_S):
            await alpha.wait_closed()

        await alpha.connect()  # returns before the handshake: 0-RTT
        early = await alpha.open_stream(early=True)
        frame = Data(seq=7, prev=6, subject="aqe.tests.case.x.executed", data=b"early")
        assert await echo_once(early, frame) == frame
        late = await alpha.open_stream()  # waits for the handshake, then works too
        assert await echo_once(late, Ack(applied_seq=7)) == Ack(applied_seq=7)

        stats = alpha.stats()
        assert stats.zero_rtt_attempts == 1
        assert stats.zero_rtt_accepted == 1
        assert (stats.handshakes, stats.full_handshakes) == (2, 1)  # the second one resumed
        assert server.stats().zero_rtt_accepted == 1
        assert server.stats().connections == 2
    # The resumed connection carried no certificate, yet the server knew who it was.
    assert recorder.peers == ["alpha", "alpha", "alpha"]


async def test_ticket_from_a_restarted_server_falls_back_to_a_full_handshake(
    pki: dict[str, TlsFiles],
) -> None:
    recorder = Recorder()
    async with serving(pki["beta"], recorder) as server, dialling(server, pki["alpha"]) as alpha:
        await alpha.connect()
        port = server.port
    # The first server (and its ticket store) is gone; a new one on the same port.
    async with serving(pki["beta"], recorder, port=port) as server:
        await alpha.connect()
        early = await alpha.open_stream(early=True)
        assert await echo_once(early, Hello(cluster="again")) == Hello(cluster="again")
        assert alpha.stats().zero_rtt_accepted == 0
        assert alpha.stats().full_handshakes == 2
        await alpha.close()
    assert recorder.peers == ["alpha"]


async def test_0rtt_connect_to_a_vanished_server_ends_in_wait_closed(
    pki: dict[str, TlsFiles],
) -> None:
    async with serving(pki["beta"], Recorder()) as server, dialling(server, pki["alpha"]) as alpha:
        await alpha.connect()
        await alpha.close()
    # The server is gone; the connector still holds its ticket and dials 0-RTT.
    await alpha.connect()  # returns at once: nothing is known yet
    early = await alpha.open_stream(early=True)
    async with asyncio.timeout(GUARD_S):
        await alpha.wait_closed()
        with pytest.raises(StreamClosedError) as ended:
            await early.recv()
    assert ended.value.code == "link_down"
    assert not alpha.connected
    assert alpha.stats().zero_rtt_accepted == 0
    await alpha.close()


# -- many streams, backpressure ---------------------------------------------------------------


async def test_128_concurrent_streams_each_echo_20_frames(pki: dict[str, TlsFiles]) -> None:
    recorder = Recorder()
    async with serving(pki["beta"], recorder) as server, dialling(server, pki["alpha"]) as alpha:
        await alpha.connect()

        async def exchange(i: int) -> list[Frame]:
            stream = await alpha.open_stream()
            sent: list[Frame] = [
                Data(seq=n + 1, prev=n, subject=f"aqe.s.{i}", data=b"x" * 200) for n in range(20)
            ]
            for frame in sent:
                await stream.send(frame)
            got = [await stream.recv() for _ in sent]
            await stream.close()
            assert got == sent
            return got

        async with asyncio.timeout(GUARD_S * 2):
            results = await asyncio.gather(*(exchange(i) for i in range(128)))
        assert len(results) == 128
        assert server.stats().streams_opened == 128
        assert server.stats().streams_failed == 0
        # Finished streams are forgotten on both ends (long-lived links do not grow).
        links = [alpha._link, *server._links]
        await eventually(
            lambda: all(not link._streams and not link.quic._streams for link in links)
        )


async def test_256_streams_may_be_open_at_once(pki: dict[str, TlsFiles]) -> None:
    # aioquic's default lets a peer open 128; every stream here stays open until all
    # 256 have been answered, so the raised limit is what lets this finish.
    async with serving(pki["beta"], Recorder()) as server, dialling(server, pki["alpha"]) as alpha:
        await alpha.connect()
        streams = [await alpha.open_stream() for _ in range(MAX_STREAMS)]
        for i, stream in enumerate(streams):
            await stream.send(Ack(applied_seq=i))
        async with asyncio.timeout(GUARD_S):
            answers = [await stream.recv() for stream in streams]
        assert answers == [Ack(applied_seq=i) for i in range(MAX_STREAMS)]
        assert server.stats().streams_opened == MAX_STREAMS == 256


async def test_send_waits_when_the_buffer_is_full_and_everything_arrives(
    pki: dict[str, TlsFiles],
) -> None:
    received: list[int] = []
    done = asyncio.Event()

    async def sink(stream: FrameStream) -> None:
        while True:
            try:
                frame = await stream.recv()
            except StreamClosedError:
                done.set()
                return
            assert isinstance(frame, Data)
            received.append(frame.seq)

    async with serving(pki["beta"], sink) as server, dialling(server, pki["alpha"]) as alpha:
        await alpha.connect()
        stream = await alpha.open_stream()
        blob = b"z" * (256 * 1024)
        most = 0
        async with asyncio.timeout(GUARD_S * 2):
            for seq in range(1, 25):  # 6 MiB through a 1 MiB send buffer
                await stream.send(Data(seq=seq, prev=seq - 1, subject="aqe.big", data=blob))
                most = max(most, stream.unsent())  # type: ignore[attr-defined]
            await stream.close()
            await done.wait()
        assert received == list(range(1, 25))
        # Over the bound by at most the one frame that was let in below it.
        one_frame = len(encode_frame(Data(seq=24, prev=23, subject="aqe.big", data=blob)))
        assert most <= SEND_BUFFER + one_frame


# -- liveness ---------------------------------------------------------------------------


async def test_server_close_ends_the_link_and_its_streams(pki: dict[str, TlsFiles]) -> None:
    async with serving(pki["beta"], Recorder()) as server, dialling(server, pki["alpha"]) as alpha:
        await alpha.connect()
        stream = await alpha.open_stream()
        await echo_once(stream, Hello(cluster="x"))
        pending = asyncio.ensure_future(stream.recv())
        await server.close()
        async with asyncio.timeout(GUARD_S):
            await alpha.wait_closed()
            with pytest.raises(StreamClosedError) as ended:
                await pending
        assert ended.value.code == "link_down"
        assert not alpha.connected
        with pytest.raises(StreamClosedError):
            await stream.send(Hello(cluster="y"))
        with pytest.raises(LinkDownError):
            await alpha.open_stream()


async def test_dead_peer_is_detected_by_the_idle_timeout(pki: dict[str, TlsFiles]) -> None:
    async with (
        serving(pki["beta"], Recorder()) as server,
        dialling(server, pki["alpha"], idle_timeout_s=1.0, keepalive_s=0.2) as alpha,
    ):
        await alpha.connect()
        stream = await alpha.open_stream()
        await echo_once(stream, Hello(cluster="x"))
        # The peer vanishes without a word: its socket closes, nothing is sent.
        for link in list(server._links):
            link.abort()
        assert server._transport is not None
        server._transport.close()
        async with asyncio.timeout(GUARD_S):
            await alpha.wait_closed()
            with pytest.raises(StreamClosedError):
                await stream.recv()


async def test_keepalive_holds_an_idle_link_open(pki: dict[str, TlsFiles]) -> None:
    async with (
        serving(pki["beta"], Recorder(), idle_timeout_s=1.0) as server,
        dialling(server, pki["alpha"], idle_timeout_s=1.0, keepalive_s=0.2) as alpha,
    ):
        await alpha.connect()
        stream = await alpha.open_stream()
        await echo_once(stream, Hello(cluster="x"))
        await asyncio.sleep(2.5)  # well past the idle timeout, with nothing but pings
        assert alpha.connected
        assert await echo_once(stream, Hello(cluster="y")) == Hello(cluster="y")
        assert alpha.stats().handshakes == 1


async def test_open_stream_before_connect_is_link_down(pki: dict[str, TlsFiles]) -> None:
    connector = QuicConnector(host="127.0.0.1", port=1, tls=pki["alpha"], server_name="beta")
    with pytest.raises(LinkDownError, match="not connected"):
        await connector.open_stream()
    await connector.wait_closed()  # nothing to wait for
    assert connector.stats().connected is False


# -- the development PKI ----------------------------------------------------------------------


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_dev_pki_issues_mutual_tls_certificates(pki: dict[str, TlsFiles]) -> None:
    ca = _cert(pki["alpha"].ca)
    for name, files in pki.items():
        cert = _cert(files.cert)
        assert peer_name(cert) == name
        cert.verify_directly_issued_by(ca)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.DNSName) == [name, "localhost"]
        assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert set(usage) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.curve.name == "secp256r1"
        assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    assert stat.S_IMODE((pki["alpha"].ca.parent / "ca.key").stat().st_mode) == 0o600
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_dev_pki_reuses_its_ca_and_unchanged_pairs(tmp_path: Path) -> None:
    first = create_dev_pki(tmp_path, ["alpha"])
    ca_before, alpha_before = first["alpha"].ca.read_bytes(), first["alpha"].cert.read_bytes()
    second = create_dev_pki(tmp_path, ["alpha", "beta"])
    assert second["alpha"].ca.read_bytes() == ca_before
    assert second["alpha"].cert.read_bytes() == alpha_before
    _cert(second["beta"].cert).verify_directly_issued_by(_cert(second["beta"].ca))
    # other hosts: reissued by the same CA
    third = create_dev_pki(tmp_path, ["alpha"], hosts=["bridge.example", "10.0.0.7"])
    assert third["alpha"].cert.read_bytes() != alpha_before
    assert third["alpha"].ca.read_bytes() == ca_before
    # overwrite: a new CA
    fourth = create_dev_pki(tmp_path, ["alpha"], overwrite=True)
    assert fourth["alpha"].ca.read_bytes() != ca_before


@pytest.mark.parametrize("name", ["", "a.b", "x y", "../etc", "ca", "CA", "é"])
def test_dev_pki_refuses_unusable_cluster_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(BridgeError, match="cluster name"):
        create_dev_pki(tmp_path, [name])


def test_dev_pki_names_the_file_or_value_it_cannot_use(tmp_path: Path) -> None:
    create_dev_pki(tmp_path, ["alpha"])
    (tmp_path / "ca.key").unlink()
    with pytest.raises(BridgeError, match=r"ca\.key"):
        create_dev_pki(tmp_path, ["alpha"])
    (tmp_path / "ca.key").write_text("not a key")
    with pytest.raises(BridgeError, match=r"ca\.key"):
        create_dev_pki(tmp_path, ["alpha"])
    with pytest.raises(BridgeError, match="twice"):
        create_dev_pki(tmp_path / "other", ["alpha", "alpha"])
    with pytest.raises(BridgeError, match="host"):
        create_dev_pki(tmp_path / "other", ["alpha"], hosts=["not a host"])


def test_peer_name_refuses_a_certificate_without_a_cluster_cn(pki: dict[str, TlsFiles]) -> None:
    with pytest.raises(BridgeError, match="not usable"):
        peer_name(_cert(pki["alpha"].ca))  # "aqe bridge development CA"


def test_light_bridge_modules_and_the_cli_do_not_import_aioquic() -> None:
    probe = (
        "import sys, aqe.bridge, aqe.bridge.certs, aqe.bridge.channel, aqe.bridge.frames, aqe.cli;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'aioquic'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


async def test_garbage_datagrams_do_not_hurt_the_server(pki: dict[str, TlsFiles]) -> None:
    rng = random.Random(6)
    recorder = Recorder()
    async with serving(pki["beta"], recorder, idle_timeout_s=1.0) as server:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for i in range(300):
                size = rng.choice([1, 7, 40, 1200, 1350]) if i % 3 else 1200
                data = bytearray(rng.randbytes(size))
                if i % 3 == 0:
                    data[0] = 0xC0 | (data[0] & 0x0F)  # long header, Initial
                    data[1:5] = (1).to_bytes(4, "big")  # QUIC v1
                    data[5] = 8  # destination connection id length
                sock.sendto(bytes(data), ("127.0.0.1", server.port))
        async with dialling(server, pki["alpha"]) as alpha:
            await alpha.connect()
            stream = await alpha.open_stream()
            assert await echo_once(stream, Hello(cluster="ok")) == Hello(cluster="ok")
        assert server.stats().connections == 1
    assert recorder.peers == ["alpha"]
