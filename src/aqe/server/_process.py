"""One nats-server subprocess: start it, wait until it is ready, stop it.

The server logs to a file (``-l``) and its stdout/stderr are appended to the same file, so
errors it prints before its logger exists (a bad config file, an unknown flag) land there
too and nothing can block on a full pipe. Readiness is read from the log: "Server is
ready", after which the actual client port is taken from the "Listening for client
connections on HOST:PORT" line, which is how ``port=-1`` (a free port) is resolved.

The process is spawned with :func:`os.posix_spawn` rather than :class:`subprocess.Popen`:
a detached server must outlive the object that started it, and a garbage-collected
``Popen`` whose child is still running warns. Exited children are reaped with
``waitpid`` (see :mod:`aqe.server._pids`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, NoReturn, Self

from aqe.errors import ServerError
from aqe.server._binary import find_nats_server, require_min_version
from aqe.server._pids import pid_alive, reap_child, signal_until_gone

__all__ = ["NatsServerProcess"]

READY_LINE: Final = "Server is ready"
_LISTEN_RE: Final = re.compile(r"Listening for client connections on (\S+):(\d+)")
_VERSION_LINE_RE: Final = re.compile(r"\[INF\]\s+Version:\s+(\S+)")
_ERROR_RE: Final = re.compile(
    r"\[(?:ERR|FTL)\]|^nats-server: |flag provided but not defined|invalid value|^panic: "
)
_POLL_S: Final = 0.01
_TAIL_LINES: Final = 25
_WILDCARD_HOSTS: Final = frozenset({"", "0.0.0.0", "::", "[::]"})  # noqa: S104 - compared, not bound


def _read_from(path: Path, offset: int) -> tuple[str, int]:
    """Read ``path`` from ``offset``; restart at 0 when the file was rotated/truncated."""
    try:
        with path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < offset:
                offset = 0
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return "", offset
    return data.decode(errors="replace"), offset + len(data)


class NatsServerProcess:
    """A nats-server subprocess with JetStream enabled.

    Start it with :meth:`start` (async) or :meth:`start_sync`; stop it with :meth:`stop` /
    :meth:`stop_sync`, or use it as a (async) context manager. Dropping the object does not
    stop the server.

    Example:
        ::

            with NatsServerProcess.start_sync(tmp / "js", log_file=tmp / "nats.log") as srv:
                print(srv.url)
    """

    def __init__(
        self,
        *,
        pid: int,
        host: str,
        port: int,
        version: str,
        binary: Path,
        store_dir: Path,
        log_file: Path,
        args: Sequence[str],
        detached: bool,
    ) -> None:
        """Wrap an already started and ready server; use :meth:`start_sync` to start one."""
        self._pid = pid
        self._host = host
        self._port = port
        self._version = version
        self.binary = binary
        self.store_dir = store_dir
        self.log_file = log_file
        self.args: tuple[str, ...] = tuple(args)
        self.detached = detached
        self._returncode: int | None = None

    def __repr__(self) -> str:
        state = "running" if self.is_running() else f"exited {self._returncode}"
        return f"<NatsServerProcess pid={self._pid} url={self.url} {state}>"

    # -- start -----------------------------------------------------------------------

    @classmethod
    def start_sync(
        cls,
        store_dir: Path,
        *,
        log_file: Path,
        host: str = "127.0.0.1",
        port: int = -1,
        config_file: Path | None = None,
        extra_args: Sequence[str] = (),
        detach: bool = False,
        ready_timeout: float = 10.0,
        binary: Path | None = None,
    ) -> NatsServerProcess:
        """Start a server and block until it is ready.

        Runs ``nats-server -a HOST -p PORT -js -sd STORE_DIR -l LOG_FILE [-c CONFIG]
        [EXTRA_ARGS...]``. nats-server keeps JetStream data in ``STORE_DIR/jetstream``.

        Args:
            store_dir: JetStream store directory (created if missing).
            log_file: Log file, appended to (its directory is created if missing).
            host: Address to listen on for clients.
            port: Client port; -1 picks a free one.
            config_file: Optional server config; the flags above override it.
            extra_args: More command-line arguments, appended last.
            detach: Start the server in its own session so that it outlives this process
                and ignores the terminal's Ctrl-C.
            ready_timeout: Seconds to wait for "Server is ready".
            binary: The nats-server binary; :func:`find_nats_server` when omitted.

        Returns:
            The running server.

        Raises:
            ConfigError: No nats-server binary was found.
            ServerError: The server exited early, did not become ready in time, or is
                older than 2.12; the message ends with the log's last lines.
        """
        exe = binary if binary is not None else find_nats_server()
        store_dir = Path(store_dir).absolute()
        log_file = Path(log_file).absolute()
        store_dir.mkdir(parents=True, exist_ok=True)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        args = [os.fspath(exe), "-a", host, "-p", str(port), "-js"]
        args += ["-sd", os.fspath(store_dir), "-l", os.fspath(log_file)]
        if config_file is not None:
            args += ["-c", os.fspath(Path(config_file).absolute())]
        args += list(extra_args)

        offset = log_file.stat().st_size if log_file.exists() else 0
        pid = _spawn(args, log_file, detach=detach)
        proc = cls(
            pid=pid,
            host=host,
            port=port,
            version="",
            binary=exe,
            store_dir=store_dir,
            log_file=log_file,
            args=args,
            detached=detach,
        )
        proc._await_ready(offset, ready_timeout)
        return proc

    @classmethod
    async def start(
        cls,
        store_dir: Path,
        *,
        log_file: Path,
        host: str = "127.0.0.1",
        port: int = -1,
        config_file: Path | None = None,
        extra_args: Sequence[str] = (),
        detach: bool = False,
        ready_timeout: float = 10.0,
        binary: Path | None = None,
    ) -> NatsServerProcess:
        """Start a server without blocking the event loop; see :meth:`start_sync`.

        Args:
            store_dir: JetStream store directory.
            log_file: Log file.
            host: Address to listen on.
            port: Client port; -1 picks a free one.
            config_file: Optional server config.
            extra_args: More command-line arguments.
            detach: Start the server in its own session.
            ready_timeout: Seconds to wait for "Server is ready".
            binary: The nats-server binary.

        Returns:
            The running server.

        Raises:
            ConfigError: No nats-server binary was found.
            ServerError: The server did not start.
        """
        return await asyncio.to_thread(
            cls.start_sync,
            store_dir,
            log_file=log_file,
            host=host,
            port=port,
            config_file=config_file,
            extra_args=extra_args,
            detach=detach,
            ready_timeout=ready_timeout,
            binary=binary,
        )

    def _await_ready(self, offset: int, timeout: float) -> None:
        """Follow the log from ``offset`` until the server is ready; kill it otherwise."""
        deadline = time.monotonic() + timeout
        prefix = f"[{self._pid}] "
        text = ""
        while True:
            chunk, offset = _read_from(self.log_file, offset)
            text += chunk
            ours = [line for line in text.splitlines() if line.startswith(prefix)]
            if any(READY_LINE in line for line in ours):
                break
            code = self._poll()
            if code is not None:
                text += _read_from(self.log_file, offset)[0]
                self._fail(f"nats-server exited with status {code} during start-up", text)
            if time.monotonic() > deadline:
                self._fail(f"nats-server was not ready after {timeout:g} s", text)
            time.sleep(_POLL_S)

        for line in ours:
            if (match := _VERSION_LINE_RE.search(line)) and not self._version:
                self._version = match.group(1)
            if match := _LISTEN_RE.search(line):
                self._port = int(match.group(2))
        if self._port <= 0:
            self._fail("nats-server did not log its client port", text)
        try:
            require_min_version(self._version or "unknown", source=f"nats-server {self.binary}")
        except ServerError:
            self._kill()
            raise

    def _fail(self, reason: str, log_text: str) -> NoReturn:
        self._kill()
        raise ServerError(f"{reason}; from {self.log_file}:\n{_excerpt(log_text)}")

    def _kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while self.is_running() and time.monotonic() < deadline:
            time.sleep(_POLL_S)

    # -- state -----------------------------------------------------------------------

    def _poll(self) -> int | None:
        """Exit code once the server has exited, else ``None``."""
        if self._returncode is None:
            code = reap_child(self._pid)
            if code is not None:
                self._returncode = code
        return self._returncode

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self._pid

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The client port the server actually listens on."""
        return self._port

    @property
    def url(self) -> str:
        """The client URL, e.g. ``nats://127.0.0.1:4222`` (loopback for wildcard hosts)."""
        host = "127.0.0.1" if self._host in _WILDCARD_HOSTS else self._host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"nats://{host}:{self._port}"

    @property
    def version(self) -> str:
        """The server's version as it logged it, e.g. ``"2.15.1"`` (checked to be ≥ 2.12)."""
        return self._version

    @property
    def jetstream_dir(self) -> Path:
        """Where JetStream keeps its data: ``store_dir/jetstream``."""
        return self.store_dir / "jetstream"

    @property
    def returncode(self) -> int | None:
        """The exit code once the server has exited (negative: killed by that signal)."""
        return self._poll()

    def is_running(self) -> bool:
        """Whether the server process is still alive."""
        # _poll reaps our child and keeps its exit status; pid_alive must not reap it
        # in between, or the status (returncode) is lost.
        if self._poll() is not None:
            return False
        if pid_alive(self._pid, reap=False):
            return True
        # It is dying: /proc shows its main thread a zombie while its other threads may
        # still be exiting, and waitpid(WNOHANG) reports it only once they all have.
        # Wait for that here, or it stays a zombie until this process exits.
        self._reap_dead()
        return False

    def _reap_dead(self) -> None:
        """Collect the exit status of our child once ``/proc`` shows it dead (blocks briefly)."""
        if self._returncode is not None:
            return
        try:
            _, status = os.waitpid(self._pid, 0)
        except ChildProcessError:
            return  # not our child, or already reaped elsewhere
        self._returncode = os.waitstatus_to_exitcode(status)

    def log_tail(self, lines: int = _TAIL_LINES) -> str:
        """The last ``lines`` lines of the log file."""
        text, _ = _read_from(self.log_file, 0)
        return "\n".join(text.splitlines()[-lines:])

    # -- stop ------------------------------------------------------------------------

    def kill_sync(self) -> None:
        """SIGKILL the server and reap it: a crash, with no clean shutdown."""
        self._kill()

    def stop_sync(self, timeout: float = 5.0) -> bool:
        """Stop the server: SIGTERM, wait up to ``timeout`` seconds, then SIGKILL.

        Args:
            timeout: Seconds to wait for a graceful shutdown.

        Returns:
            ``True`` when it was running; ``False`` when it had already exited.

        Raises:
            ServerError: The process could not be stopped.
        """
        if not self.is_running():
            return False
        signal_until_gone(self._pid, timeout, self.is_running)
        return True

    async def stop(self, timeout: float = 5.0) -> bool:  # noqa: ASYNC109 - a grace period, not a deadline
        """Stop the server without blocking the event loop; see :meth:`stop_sync`.

        Args:
            timeout: Seconds to wait for a graceful shutdown.

        Returns:
            ``True`` when it was running.
        """
        return await asyncio.to_thread(self.stop_sync, timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_sync()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def _excerpt(log_text: str) -> str:
    """The log's last lines, preceded by earlier error lines they would leave out.

    nats-server answers an unknown flag with one error line and then its whole usage
    text (and exit status 0), so the tail alone can miss the reason.
    """
    lines = log_text.splitlines()
    earlier, tail = lines[:-_TAIL_LINES], lines[-_TAIL_LINES:]
    errors = [line for line in earlier if _ERROR_RE.search(line)]
    shown = [*errors, "..."] if errors else []
    return "\n".join(shown + tail) or "(the log is empty)"


def _spawn(args: Sequence[str], log_file: Path, *, detach: bool) -> int:
    """Spawn the server with stdin from /dev/null and stdout/stderr appended to the log."""
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (
            os.POSIX_SPAWN_OPEN,
            1,
            os.fspath(log_file),
            os.O_WRONLY | os.O_APPEND | os.O_CREAT,
            0o644,
        ),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    try:
        try:
            return os.posix_spawn(
                args[0], list(args), os.environ, file_actions=actions, setsid=detach
            )
        except NotImplementedError:
            # No POSIX_SPAWN_SETSID here: a process group of its own still keeps the
            # terminal's Ctrl-C away from the server.
            return os.posix_spawn(
                args[0], list(args), os.environ, file_actions=actions, setpgroup=0
            )
    except OSError as exc:
        raise ServerError(f"cannot start {args[0]}: {exc}") from exc
