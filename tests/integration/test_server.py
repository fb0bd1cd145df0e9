"""The real nats-server: the per-test fixture, EmbeddedServer and open_connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nats
import pytest

from aqe.config import Settings
from aqe.errors import ConfigError, LogUnavailableError, ServerError
from aqe.server import (
    MIN_SERVER_VERSION,
    EmbeddedServer,
    NatsServerProcess,
    find_nats_server,
    open_connection,
    parse_version,
    server_version,
)

pytestmark = pytest.mark.nats

PASSWORD = "s3cret"  # noqa: S105 - a throwaway test server's
TOKEN = "t0ken"  # noqa: S105 - a throwaway test server's


def _servers_under(path: Path) -> list[int]:
    """Pids of live processes whose command line mentions ``path`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if str(path) in cmdline and state not in {"Z", "X"} and int(entry.name) != os.getpid():
            found.append(int(entry.name))
    return found


@pytest.fixture(autouse=True)
def _no_leaked_servers(tmp_path: Path) -> Iterator[None]:
    """Fail a test that leaves a process running over its tmp_path (and kill it)."""
    yield
    leaked = _servers_under(tmp_path)
    for pid in leaked:
        os.kill(pid, signal.SIGKILL)
    assert not leaked, f"processes left running: {leaked}"


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[EmbeddedServer]:
    server = EmbeddedServer(tmp_path / "data")
    try:
        yield server
    finally:
        server.stop()


def _fake_server(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "fake-nats-server"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return script


def _wait_dead(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _servers_under_pid(pid):
            return True
        time.sleep(0.01)
    return False


def _servers_under_pid(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in {"Z", "X"}


def _wait_all_threads_stopped(pid: int, timeout: float = 5.0) -> None:
    """SIGSTOP returns before every thread of a Go program has actually stopped."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = set()
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                states.add((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
        if states <= {"T", "t"}:
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} did not stop")


# --- the binary --------------------------------------------------------------------------


def test_binary_is_found_beside_the_interpreter() -> None:
    binary = find_nats_server({"PATH": ""})
    assert binary == Path(sys.executable).parent / "nats-server"
    assert parse_version(server_version(binary))[:2] >= MIN_SERVER_VERSION


def test_binary_from_environment(tmp_path: Path) -> None:
    binary = find_nats_server()
    assert find_nats_server({"AQE_NATS_SERVER_BIN": str(binary)}) == binary
    with pytest.raises(ConfigError, match="AQE_NATS_SERVER_BIN"):
        find_nats_server({"AQE_NATS_SERVER_BIN": str(tmp_path / "missing")})


# --- NatsServerProcess -------------------------------------------------------------------


async def test_fixture_server_is_real(nats_server: NatsServerProcess, tmp_path: Path) -> None:
    assert nats_server.is_running()
    assert parse_version(nats_server.version)[:2] >= MIN_SERVER_VERSION
    assert nats_server.version == server_version(nats_server.binary)
    assert nats_server.port > 0
    assert nats_server.url == f"nats://127.0.0.1:{nats_server.port}"
    assert nats_server.jetstream_dir == tmp_path / "js" / "jetstream"

    nc = await nats.connect(nats_server.url)
    try:
        info = await nc.jetstream().account_info()
        assert info.streams == 0
    finally:
        await nc.close()
    assert nats_server.jetstream_dir.is_dir()
    assert "Server is ready" in (tmp_path / "nats.log").read_text()


def test_stop_sends_sigterm_then_reports_stopped(tmp_path: Path) -> None:
    server = NatsServerProcess.start_sync(tmp_path / "js", log_file=tmp_path / "n.log")
    assert server.stop_sync() is True
    assert not server.is_running()
    assert server.returncode == 0  # a graceful shutdown on SIGTERM
    assert server.stop_sync() is False
    assert "Server Exiting" in server.log_tail()


async def test_async_start_stop_and_context_manager(tmp_path: Path) -> None:
    async with await NatsServerProcess.start(tmp_path / "js", log_file=tmp_path / "n.log") as srv:
        assert srv.is_running()
        pid = srv.pid
    assert not srv.is_running()
    assert _wait_dead(pid)


def test_two_servers_get_different_free_ports(tmp_path: Path) -> None:
    with (
        NatsServerProcess.start_sync(tmp_path / "a", log_file=tmp_path / "a.log") as a,
        NatsServerProcess.start_sync(tmp_path / "b", log_file=tmp_path / "b.log") as b,
    ):
        assert a.port != b.port


def test_detached_server_has_its_own_session(tmp_path: Path) -> None:
    with NatsServerProcess.start_sync(
        tmp_path / "js", log_file=tmp_path / "n.log", detach=True
    ) as server:
        assert os.getsid(server.pid) == server.pid != os.getsid(0)


def test_bad_config_file_raises_with_log_text(tmp_path: Path) -> None:
    config = tmp_path / "bad.conf"
    config.write_text("jetstream {\n  store_dir: \n  oops = = =\n")
    with pytest.raises(ServerError) as info:
        NatsServerProcess.start_sync(
            tmp_path / "js", log_file=tmp_path / "n.log", config_file=config
        )
    message = str(info.value)
    assert "exited with status 1" in message
    assert "nats-server:" in message  # the server's own complaint, taken from the log
    assert str(tmp_path / "n.log") in message
    assert "Parse error" in message


def test_unknown_flag_raises_with_log_text(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match="not-a-flag"):
        NatsServerProcess.start_sync(
            tmp_path / "js", log_file=tmp_path / "n.log", extra_args=["--not-a-flag"]
        )


def test_port_in_use_raises(nats_server: NatsServerProcess, tmp_path: Path) -> None:
    with pytest.raises(ServerError, match="address already in use"):
        NatsServerProcess.start_sync(
            tmp_path / "js2", log_file=tmp_path / "n2.log", port=nats_server.port
        )


def test_server_that_never_gets_ready_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "fake.pid"
    binary = _fake_server(
        tmp_path, f'echo $$ > {pid_file}\necho "fake is warming up"\nexec sleep 60\n'
    )
    started = time.monotonic()
    with pytest.raises(ServerError, match=r"not ready after 0\.5 s") as info:
        NatsServerProcess.start_sync(
            tmp_path / "js", log_file=tmp_path / "n.log", binary=binary, ready_timeout=0.5
        )
    assert time.monotonic() - started < 5
    assert "fake is warming up" in str(info.value)
    assert _wait_dead(int(pid_file.read_text()))


def test_server_older_than_2_12_is_refused(tmp_path: Path) -> None:
    pid_file = tmp_path / "fake.pid"
    stamp = "2026/01/01 00:00:00.000000"
    binary = _fake_server(
        tmp_path,
        f"echo $$ > {pid_file}\n"
        f'echo "[$$] {stamp} [INF]   Version:  2.11.9"\n'
        f'echo "[$$] {stamp} [INF] Listening for client connections on 127.0.0.1:4999"\n'
        f'echo "[$$] {stamp} [INF] Server is ready"\n'
        "exec sleep 60\n",
    )
    with pytest.raises(ServerError, match=r"2\.11\.9.*2\.12"):
        NatsServerProcess.start_sync(tmp_path / "js", log_file=tmp_path / "n.log", binary=binary)
    assert _wait_dead(int(pid_file.read_text()))


def test_ready_line_of_an_earlier_run_is_not_trusted(tmp_path: Path) -> None:
    log = tmp_path / "n.log"
    log.write_text("[1] 2026/01/01 00:00:00.000000 [INF] Server is ready\n")
    binary = _fake_server(tmp_path, "exec sleep 60\n")
    with pytest.raises(ServerError, match="not ready"):
        NatsServerProcess.start_sync(
            tmp_path / "js", log_file=log, binary=binary, ready_timeout=0.3
        )


# --- EmbeddedServer ----------------------------------------------------------------------


def test_embedded_starts_once_and_is_reused(embedded: EmbeddedServer) -> None:
    url = embedded.ensure_running()
    first = embedded.status()
    assert first.running
    assert first.url == url
    assert first.pid == int(embedded.pid_file.read_text())
    assert first.port == int(embedded.port_file.read_text())
    assert first.jetstream
    assert first.version is not None
    assert parse_version(first.version)[:2] >= MIN_SERVER_VERSION
    assert first.uptime_s is not None
    assert first.uptime_s >= 0
    assert first.store_dir == embedded.data_dir / "jetstream"
    assert first.log_file == embedded.data_dir / "server" / "nats.log"
    json.dumps(first.as_dict())

    again = EmbeddedServer(embedded.data_dir).ensure_running()
    assert again == url
    assert embedded.status().pid == first.pid
    assert os.getsid(first.pid) == first.pid  # detached


def test_embedded_stop(embedded: EmbeddedServer) -> None:
    embedded.ensure_running()
    pid = embedded.status().pid
    assert pid is not None
    assert embedded.stop() is True
    status = embedded.status()
    assert not status.running
    assert (status.pid, status.port, status.url, status.version) == (None, None, None, None)
    assert not embedded.pid_file.exists()
    assert not embedded.port_file.exists()
    assert _wait_dead(pid)
    assert embedded.stop() is False


def test_stop_when_never_started(tmp_path: Path) -> None:
    assert EmbeddedServer(tmp_path / "nothing").stop() is False
    assert not EmbeddedServer(tmp_path / "nothing").status().running


def test_stale_pid_file_of_dead_process(embedded: EmbeddedServer) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    embedded.server_dir.mkdir(parents=True)
    embedded.pid_file.write_text(f"{dead.pid}\n")
    embedded.port_file.write_text("1\n")
    assert not embedded.status().running

    url = embedded.ensure_running()
    status = embedded.status()
    assert status.running
    assert status.url == url
    assert status.pid != dead.pid


def test_pid_file_naming_another_live_process_is_not_killed(embedded: EmbeddedServer) -> None:
    embedded.server_dir.mkdir(parents=True)
    embedded.pid_file.write_text(f"{os.getpid()}\n")
    embedded.port_file.write_text("1\n")
    assert not embedded.status().running
    embedded.ensure_running()
    assert embedded.status().pid != os.getpid()
    assert embedded.stop() is True  # and we are still here


def test_garbage_in_pid_file(embedded: EmbeddedServer) -> None:
    embedded.server_dir.mkdir(parents=True)
    embedded.pid_file.write_text("not a pid")
    assert not embedded.status().running
    embedded.ensure_running()
    assert embedded.status().running


async def test_crashed_server_is_restarted_and_keeps_its_data(embedded: EmbeddedServer) -> None:
    url = embedded.ensure_running()
    nc = await nats.connect(url, token=embedded.token())
    try:
        js = nc.jetstream()
        await js.add_stream(name="KEEP", subjects=["keep.>"])
        await js.publish("keep.one", b"1")
    finally:
        await nc.close()

    pid = embedded.status().pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert _wait_dead(pid)
    assert not embedded.status().running

    url2 = embedded.ensure_running()
    assert embedded.status().pid != pid
    nc = await nats.connect(url2, token=embedded.token())
    try:
        info = await nc.jetstream().stream_info("KEEP")
        assert info.state.messages == 1
    finally:
        await nc.close()


def test_orphan_over_the_same_store_is_replaced(embedded: EmbeddedServer) -> None:
    # A server over this data directory that the pid file does not know about (say its
    # starter was killed before writing the file) must not end up sharing the store.
    orphan = NatsServerProcess.start_sync(
        embedded.data_dir, log_file=embedded.log_file, detach=True
    )
    try:
        embedded.ensure_running()
        assert not orphan.is_running()
        assert embedded.status().pid != orphan.pid
    finally:
        orphan.stop_sync()


def test_hung_server_is_replaced(embedded: EmbeddedServer) -> None:
    embedded.probe_timeout = embedded.hung_after = 0.2
    embedded.ensure_running()
    pid = embedded.status().pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        _wait_all_threads_stopped(pid)
        assert not embedded.status().running
        embedded.ensure_running()
        assert embedded.status().pid != pid
        assert _wait_dead(pid)
    finally:
        if _servers_under_pid(pid):
            os.kill(pid, signal.SIGKILL)


def test_concurrent_starts_start_one_server(embedded: EmbeddedServer) -> None:
    data_dir = embedded.data_dir
    with ThreadPoolExecutor(max_workers=6) as pool:
        urls = list(pool.map(lambda _: EmbeddedServer(data_dir).ensure_running(), range(6)))
    assert len(set(urls)) == 1
    assert len(_servers_under(data_dir)) == 1


def test_concurrent_starts_from_processes_start_one_server(embedded: EmbeddedServer) -> None:
    code = (
        "import sys; from pathlib import Path; from aqe.server import EmbeddedServer; "
        "print(EmbeddedServer(Path(sys.argv[1])).ensure_running())"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(embedded.data_dir)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    urls = {proc.communicate(timeout=30)[0].strip() for proc in procs}
    assert all(proc.returncode == 0 for proc in procs)
    assert len(urls) == 1
    assert len(_servers_under(embedded.data_dir)) == 1


# --- open_connection ---------------------------------------------------------------------


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_open_connection_to_closed_port_fails_fast() -> None:
    url = f"nats://127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    with pytest.raises(LogUnavailableError) as info:
        await open_connection(Settings(nats_url=url))
    assert time.monotonic() - started < 2.0
    message = str(info.value)
    assert url in message
    assert "aqe server status" in message
    assert "AQE_NATS_URL" in message
    assert isinstance(info.value, TimeoutError)


async def test_open_connection_to_url(nats_url: str) -> None:
    nc = await open_connection(Settings(nats_url=nats_url))
    try:
        assert nc.is_connected
        await nc.jetstream().account_info()
        assert nc.options["max_reconnect_attempts"] > 1
    finally:
        await nc.close()


async def test_open_connection_tries_every_cluster_url(nats_url: str) -> None:
    dead = f"nats://127.0.0.1:{_closed_port()}"
    for _ in range(3):  # the client shuffles the list: whichever comes first, it connects
        nc = await open_connection(Settings(nats_url=f"{dead},{nats_url}"))
        try:
            assert nc.connected_url is not None
            assert f"nats://{nc.connected_url.netloc}" == nats_url
        finally:
            await nc.close()


async def test_open_connection_with_user_and_password(tmp_path: Path) -> None:
    async with await NatsServerProcess.start(
        tmp_path / "js",
        log_file=tmp_path / "n.log",
        extra_args=["--user", "alice", "--pass", PASSWORD],
    ) as server:
        nc = await open_connection(Settings(nats_url=server.url, user="alice", password=PASSWORD))
        await nc.close()
        # The refusal itself, or (when the socket was reset before the -ERR was read) the
        # credentials hint.
        with pytest.raises(LogUnavailableError, match=r"[Aa]uthorization|wrong credentials"):
            await open_connection(
                Settings(nats_url=server.url, user="alice", password=PASSWORD + "x")
            )


async def test_open_connection_with_token(tmp_path: Path) -> None:
    async with await NatsServerProcess.start(
        tmp_path / "js", log_file=tmp_path / "n.log", extra_args=["--auth", TOKEN]
    ) as server:
        nc = await open_connection(Settings(nats_url=server.url, token=TOKEN))
        await nc.close()


async def test_open_connection_uses_embedded_server(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    try:
        nc = await open_connection(settings)
        try:
            await nc.jetstream().account_info()
            status = EmbeddedServer(settings.data_dir).status()
            assert status.running
            assert nc.connected_url is not None
            assert nc.connected_url.port == status.port
        finally:
            await nc.close()
        # a second connection reuses the same server
        nc = await open_connection(settings)
        await nc.close()
        assert EmbeddedServer(settings.data_dir).status().pid == status.pid
    finally:
        await asyncio.to_thread(EmbeddedServer(settings.data_dir).stop)


async def test_unloadable_tls_files_are_a_config_error(nats_url: str, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="AQE_NATS_TLS_CA"):
        await open_connection(Settings(nats_url=nats_url, tls_ca=ca))


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made by openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path / "pki"
    d.mkdir()
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=aqe test CA",
        "-keyout",
        d / "ca.key",
        "-out",
        d / "ca.pem",
    )
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            d / f"{name}.key",
            "-out",
            d / f"{name}.csr",
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            d / f"{name}.csr",
            "-CA",
            d / "ca.pem",
            "-CAkey",
            d / "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            d / "san.ext",
            "-out",
            d / f"{name}.pem",
        )
    return {p.stem + p.suffix.replace(".", "_"): p for p in d.iterdir()}


async def test_open_connection_with_mutual_tls(tmp_path: Path, pki: dict[str, Path]) -> None:
    async with await NatsServerProcess.start(
        tmp_path / "js",
        log_file=tmp_path / "n.log",
        extra_args=[
            "--tlsverify",
            "--tlscert",
            str(pki["server_pem"]),
            "--tlskey",
            str(pki["server_key"]),
            "--tlscacert",
            str(pki["ca_pem"]),
        ],
    ) as server:
        settings = Settings(
            nats_url=server.url,
            tls_ca=pki["ca_pem"],
            tls_cert=pki["client_pem"],
            tls_key=pki["client_key"],
        )
        nc = await open_connection(settings)
        try:
            await nc.jetstream().account_info()
        finally:
            await nc.close()
        # Without a client certificate the server refuses the connection.
        with pytest.raises(LogUnavailableError):
            await open_connection(Settings(nats_url=server.url, tls_ca=pki["ca_pem"]))


async def test_a_refused_url_with_credentials_is_reported_without_them(tmp_path: Path) -> None:
    async with await NatsServerProcess.start(
        tmp_path / "js",
        log_file=tmp_path / "n.log",
        extra_args=["--user", "alice", "--pass", PASSWORD],
    ) as server:
        wrong = server.url.replace("nats://", "nats://alice:wrong-" + PASSWORD + "@")
        with pytest.raises(LogUnavailableError) as caught:
            await open_connection(Settings(nats_url=wrong))
    message = str(caught.value)
    assert PASSWORD not in message
    assert "alice:***@" in message


# --- the embedded server's token -----------------------------------------------------------


async def test_embedded_server_requires_its_token(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    embedded = EmbeddedServer(settings.data_dir)
    try:
        nc = await open_connection(settings)  # aqe presents the token transparently
        try:
            await nc.jetstream().account_info()
        finally:
            await nc.close()
        for private in (embedded.token_file, embedded.config_file):
            assert stat.S_IMODE(private.stat().st_mode) == 0o600
        token = embedded.token()
        assert token is not None
        assert len(token) >= 32
        status = embedded.status()
        assert status.token_file == embedded.token_file
        assert status.pid is not None
        assert status.url is not None
        # Not on the command line, which every user of the machine can read.
        assert token not in Path(f"/proc/{status.pid}/cmdline").read_text()
        assert token not in embedded.log_file.read_text()

        # A client without the token (anyone else on the machine) is refused.
        with pytest.raises(LogUnavailableError, match=r"[Aa]uthoriz"):
            await open_connection(Settings(nats_url=status.url))
        with pytest.raises(LogUnavailableError, match=r"[Aa]uthoriz"):
            await open_connection(Settings(nats_url=status.url, token="guessed"))  # noqa: S106
        # The same token as another process would read it works.
        nc = await open_connection(Settings(nats_url=status.url, token=token))
        await nc.close()
    finally:
        await asyncio.to_thread(embedded.stop)


async def test_embedded_token_can_be_turned_off(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with_token = EmbeddedServer(data_dir)
    without = EmbeddedServer(data_dir, require_token=False)
    try:
        with_token.ensure_running()
        first = with_token.status().pid
        # Turning it off replaces the running server with one that requires nothing.
        url = await asyncio.to_thread(without.ensure_running)
        assert without.status().pid != first
        assert without.token() is None
        assert without.status().token_file is None
        nc = await nats.connect(url)
        await nc.close()
        nc = await open_connection(Settings(data_dir=data_dir, embedded_token=False))
        await nc.close()
        # And back on: a server that requires the token again.
        await asyncio.to_thread(with_token.ensure_running)
        with pytest.raises(LogUnavailableError, match=r"[Aa]uthoriz"):
            await open_connection(Settings(nats_url=with_token.status().url or ""))
    finally:
        await asyncio.to_thread(with_token.stop)


def test_aqe_commands_use_the_embedded_token(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from aqe.cli import cli

    env = {"AQE_DATA_DIR": str(tmp_path / "data"), "AQE_NATS_URL": "", "COLUMNS": "200"}
    runner = CliRunner()
    try:
        started = runner.invoke(cli, ["server", "start"], env=env, catch_exceptions=False)
        assert started.exit_code == 0, started.output
        listed = runner.invoke(cli, ["streams", "apply"], env=env, catch_exceptions=False)
        assert listed.exit_code == 0, listed.output
        assert "AQE_TESTS" in listed.output
        shown = runner.invoke(cli, ["server", "status"], env=env, catch_exceptions=False)
        assert "token:" in shown.output
        assert "mode 0600" in shown.output
    finally:
        stopped = runner.invoke(cli, ["server", "stop"], env=env, catch_exceptions=False)
        assert stopped.exit_code == 0, stopped.output
