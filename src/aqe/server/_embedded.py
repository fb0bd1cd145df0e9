"""The nats-server aqe runs for a user when no ``AQE_NATS_URL`` is configured.

Layout under the data directory::

    DATA_DIR/
    ├── jetstream/          JetStream storage (nats-server -sd DATA_DIR)
    └── server/
        ├── nats.pid        process id of the running server
        ├── nats.port       its client port
        ├── nats.log        its log (appended across restarts)
        ├── token           the token clients must present (mode 0600)
        ├── nats.conf       the server's config: requires that token (mode 0600)
        └── start.lock      flock held while a process starts or stops the server

Unless told otherwise (``AQE_EMBEDDED_TOKEN=off``), the server requires a token that
aqe generates on first start and keeps readable by its owner only, so other users on
the machine cannot use it; aqe's own commands present it transparently
(:func:`~aqe.server.open_connection`). The token travels in the config file, never on
the command line, which every user can read in ``/proc``.

The server is detached (its own session) so it outlives the ``aqe`` command that started
it; the next command finds it through the pid and port files and reuses it once a
NATS-protocol probe of the port answers. Starting and stopping happen under an exclusive
``flock`` so two commands started at once cannot start two servers over one store
(nats-server itself does not lock its store directory).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from aqe.errors import ServerError
from aqe.server._pids import pid_alive, process_cmdline, terminate_pid
from aqe.server._probe import probe_info
from aqe.server._process import NatsServerProcess

__all__ = ["EmbeddedServer", "ServerStatus"]

_LOCK_POLL_S: Final = 0.05


@dataclass(frozen=True)
class ServerStatus:
    """What :meth:`EmbeddedServer.status` found.

    Attributes:
        running: Whether a healthy server answers for this data directory.
        pid: Its process id (``None`` when not running).
        port: Its client port.
        url: Its client URL.
        version: The version it reports.
        jetstream: Whether it reports JetStream enabled.
        uptime_s: Seconds since it was started (from the pid file's age).
        store_dir: Where its JetStream data lives.
        log_file: Its log file.
        token_file: The file holding the token clients present (``None`` when the
            server requires none).
    """

    running: bool
    pid: int | None
    port: int | None
    url: str | None
    version: str | None
    jetstream: bool
    uptime_s: float | None
    store_dir: Path
    log_file: Path
    token_file: Path | None = None

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready dictionary (paths as strings)."""
        data = asdict(self)
        data["store_dir"] = os.fspath(self.store_dir)
        data["log_file"] = os.fspath(self.log_file)
        data["token_file"] = os.fspath(self.token_file) if self.token_file else None
        return data


class EmbeddedServer:
    """The nats-server aqe manages under a data directory.

    Args:
        data_dir: The aqe data directory (made absolute).
        host: Address the server listens on; loopback by default.
        binary: The nats-server binary; found with ``find_nats_server`` when omitted.
        ready_timeout: Seconds a fresh server gets to become ready.
        probe_timeout: Seconds a health probe of a running server may take.
        hung_after: Seconds a live server of ours gets to answer a second probe, taken
            under the start lock, before it counts as hung and is replaced.
        require_token: Whether clients must present the generated token; a running
            server that does not match this is replaced.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        binary: Path | None = None,
        ready_timeout: float = 10.0,
        probe_timeout: float = 1.0,
        hung_after: float = 5.0,
        require_token: bool = True,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().absolute()
        self.host = host
        self.binary = binary
        self.ready_timeout = ready_timeout
        self.probe_timeout = probe_timeout
        self.hung_after = hung_after
        self.require_token = require_token

    def __repr__(self) -> str:
        return f"EmbeddedServer({os.fspath(self.data_dir)!r})"

    @property
    def server_dir(self) -> Path:
        """``data_dir/server``: pid, port, log and lock files."""
        return self.data_dir / "server"

    @property
    def pid_file(self) -> Path:
        """File holding the running server's process id."""
        return self.server_dir / "nats.pid"

    @property
    def port_file(self) -> Path:
        """File holding the running server's client port."""
        return self.server_dir / "nats.port"

    @property
    def log_file(self) -> Path:
        """The server's log file."""
        return self.server_dir / "nats.log"

    @property
    def lock_file(self) -> Path:
        """File locked while a process starts or stops the server."""
        return self.server_dir / "start.lock"

    @property
    def token_file(self) -> Path:
        """File holding the token clients present (mode 0600)."""
        return self.server_dir / "token"

    @property
    def config_file(self) -> Path:
        """The server's config file, which holds the token (mode 0600)."""
        return self.server_dir / "nats.conf"

    def token(self) -> str | None:
        """The token a client presents; ``None`` when the server requires none.

        Raises:
            ServerError: a token is required but its file cannot be read (start the
                server first: :meth:`ensure_running` writes it).
        """
        if not self.require_token:
            return None
        try:
            return self.token_file.read_text().strip()
        except OSError as exc:
            raise ServerError(f"cannot read the embedded server's token: {exc}") from exc

    @property
    def store_dir(self) -> Path:
        """Where JetStream keeps its data: ``data_dir/jetstream``."""
        return self.data_dir / "jetstream"

    def url_for(self, port: int) -> str:
        """The client URL for ``port`` on this server's host."""
        return f"nats://{self.host}:{port}"

    # -- public operations -----------------------------------------------------------

    def ensure_running(self) -> str:
        """Return the URL of a healthy server, starting one if needed.

        Reuses the server named by the pid file when that process is alive and answers on
        the recorded port; otherwise clears stale files (and stops a hung or orphaned
        server of this data directory) and starts a detached one.

        Returns:
            The client URL, e.g. ``nats://127.0.0.1:40123``.

        Raises:
            ConfigError: No nats-server binary was found.
            ServerError: The server did not start (the message carries its log's tail), or
                another process held the start lock for too long.
        """
        live = self._live()
        if live is not None:
            return self.url_for(live[1])
        with self._locked(self.ready_timeout + 15.0):
            # Another process may have started it while we waited for the lock, or a busy
            # server may just be slow to answer: look again, with more patience.
            live = self._live(max(self.probe_timeout, self.hung_after))
            if live is not None:
                return self.url_for(live[1])
            self._stop_leftovers(timeout=5.0)
            config = self._write_config()
            proc = NatsServerProcess.start_sync(
                self.data_dir,
                log_file=self.log_file,
                host=self.host,
                port=-1,
                config_file=config,
                detach=True,
                ready_timeout=self.ready_timeout,
                binary=self.binary,
            )
            _write_atomic(self.port_file, f"{proc.port}\n")
            _write_atomic(self.pid_file, f"{proc.pid}\n")
            return self.url_for(proc.port)

    def status(self) -> ServerStatus:
        """Report whether the server runs and how to reach it; starts nothing.

        Returns:
            The status; fields other than paths are ``None`` when it is not running.
        """
        live = self._live()
        if live is None:
            return ServerStatus(
                running=False,
                pid=None,
                port=None,
                url=None,
                version=None,
                jetstream=False,
                uptime_s=None,
                store_dir=self.store_dir,
                log_file=self.log_file,
            )
        pid, port, info = live
        try:
            uptime: float | None = max(0.0, time.time() - self.pid_file.stat().st_mtime)
        except OSError:
            uptime = None
        version = info.get("version")
        return ServerStatus(
            running=True,
            pid=pid,
            port=port,
            url=self.url_for(port),
            version=version if isinstance(version, str) else None,
            jetstream=info.get("jetstream") is True,
            uptime_s=uptime,
            store_dir=self.store_dir,
            log_file=self.log_file,
            token_file=self.token_file if self.require_token else None,
        )

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``) and remove its files.

        Args:
            timeout: Seconds to wait for a graceful shutdown.

        Returns:
            ``True`` when a server was running; ``False`` when nothing was.

        Raises:
            ServerError: The process could not be stopped, or the lock not taken.
        """
        if not self.server_dir.exists():
            return False
        with self._locked(self.ready_timeout + timeout + 15.0):
            return self._stop_leftovers(timeout)

    # -- internals -------------------------------------------------------------------

    def _live(self, timeout: float | None = None) -> tuple[int, int, dict[str, object]] | None:
        """``(pid, port, INFO)`` of a healthy server of ours, else ``None``."""
        pid = _read_int(self.pid_file)
        port = _read_int(self.port_file)
        if pid is None or port is None or not pid_alive(pid) or not self._is_ours(pid):
            return None
        info = probe_info(self.host, port, self.probe_timeout if timeout is None else timeout)
        if info is None:
            return None
        # A server started with the other setting (or one whose token file is gone)
        # is not the one wanted: ensure_running replaces it.
        if bool(info.get("auth_required")) != self.require_token:
            return None
        if self.require_token and not self.token_file.is_file():
            return None
        return pid, port, info

    def _write_config(self) -> Path | None:
        """The config file for a start: the token when required (generated once)."""
        if not self.require_token:
            self.config_file.unlink(missing_ok=True)
            return None
        if not self.token_file.is_file():
            _write_private(self.token_file, secrets.token_urlsafe(32) + "\n")
        token = self.token()
        _write_private(
            self.config_file,
            "# Written by aqe: clients must present the token in ./token.\n"
            f'authorization {{\n    token: "{token}"\n}}\n',
        )
        return self.config_file

    def _is_ours(self, pid: int) -> bool:
        """Whether ``pid`` is a nats-server started over this data directory."""
        args = process_cmdline(pid)
        if args is None:
            # Cannot tell (no /proc, no ps): trust the pid file; the probe still has to pass.
            return True
        return _serves(args, self.data_dir)

    def _stop_leftovers(self, timeout: float) -> bool:
        """Stop our recorded server and any orphan over this store; clear the files."""
        pids: set[int] = set(_find_servers_for(self.data_dir))
        recorded = _read_int(self.pid_file)
        if recorded is not None and pid_alive(recorded) and self._is_ours(recorded):
            pids.add(recorded)
        stopped = False
        for pid in sorted(pids):
            stopped = terminate_pid(pid, timeout) or stopped
        for path in (self.pid_file, self.port_file):
            path.unlink(missing_ok=True)
        return stopped

    @contextlib.contextmanager
    def _locked(self, timeout: float) -> Iterator[None]:
        """Hold an exclusive flock on ``start.lock`` (released when the fd closes).

        The descriptor is not inheritable (PEP 446), so the server we spawn while holding
        the lock does not keep it.
        """
        self.server_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise ServerError(
                            f"another process has held {self.lock_file} for over {timeout:g} s "
                            "while starting or stopping the server"
                        ) from None
                    time.sleep(_LOCK_POLL_S)
            yield
        finally:
            os.close(fd)


def _serves(args: list[str], data_dir: Path) -> bool:
    """Whether a command line is a nats-server with ``-sd data_dir``."""
    if not args or "nats-server" not in Path(args[0]).name:
        return False
    # Joined with spaces so that ps output, which splits paths with spaces, matches too.
    return f" -sd {os.fspath(data_dir)} " in " ".join(args) + " "


def _find_servers_for(data_dir: Path) -> list[int]:
    """Running nats-servers over ``data_dir`` found in ``/proc`` (empty elsewhere)."""
    proc = Path("/proc")
    if not (proc / "self").exists():
        return []
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        args = [a for a in raw.decode(errors="replace").split("\0") if a]
        pid = int(entry.name)
        if _serves(args, data_dir) and pid_alive(pid):
            found.append(pid)
    return found


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (0600 from creation), atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)  # O_CREAT's mode does not apply to a file left over
    os.replace(tmp, path)
