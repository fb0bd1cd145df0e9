"""Start one command under limits and watch it to the end: the part every backend shares.

The child gets its own session (so its process group is its own), joins the run's cgroups
and sets its rlimits between fork and exec. Its stdout and stderr are read as they come
(a full pipe never blocks it), keeping ``output_bytes`` of each and counting the rest. It
is reaped with ``os.wait4`` for its resource use: asyncio's child watcher is not used, so
nothing else reaps it first. On the wall-clock limit the whole tree gets SIGTERM, then
SIGKILL after a grace period; when the command ends, whatever it left behind is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import resource
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from aqe.errors import SandboxError, SandboxUnavailableError
from aqe.sandbox._cgroup import RunCgroups
from aqe.sandbox._spec import Limits

__all__ = ["Outcome", "supervise"]

_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Outcome:
    """What :func:`supervise` saw; the backend turns it into a ``SandboxResult``."""

    exit_code: int | None
    signal: int | None
    stopped: str | None
    stdout: bytes
    stderr: bytes
    stdout_dropped: int
    stderr_dropped: int
    wall_s: float
    cpu_s: float
    max_rss_kb: int


class _CappedReader(asyncio.Protocol):
    """Keeps the first ``cap`` bytes of a pipe, counts the rest, and never stops reading."""

    def __init__(self, cap: int, done: asyncio.Future[None]) -> None:
        self._cap = cap
        self._done = done
        self.kept = bytearray()
        self.dropped = 0

    def data_received(self, data: bytes) -> None:
        room = self._cap - len(self.kept)
        if room > 0:
            self.kept += data[:room]
        self.dropped += max(0, len(data) - max(room, 0))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            self._done.set_result(None)


def _rlimits(limits: Limits, cgroups: RunCgroups) -> list[tuple[int, tuple[int, int]]]:
    out: list[tuple[int, tuple[int, int]]] = [(resource.RLIMIT_CORE, (0, 0))]
    if limits.cpu_s is not None:
        soft = max(1, math.ceil(limits.cpu_s))
        # SIGXCPU at the soft limit; the kernel's SIGKILL a second later for one that ignores it.
        out.append((resource.RLIMIT_CPU, (soft, soft + 1)))
    if limits.memory_mb is not None and cgroups.memory is None:
        size = limits.memory_mb * _MIB
        out.append((resource.RLIMIT_AS, (size, size)))
    if limits.file_mb is not None:
        size = limits.file_mb * _MIB
        out.append((resource.RLIMIT_FSIZE, (size, size)))
    if limits.open_files is not None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        cap = limits.open_files if hard == resource.RLIM_INFINITY else min(limits.open_files, hard)
        out.append((resource.RLIMIT_NOFILE, (cap, cap)))
    if limits.processes is not None and cgroups.pids is None:
        # Counted per user, system-wide, and not enforced for root: the fallback only.
        out.append((resource.RLIMIT_NPROC, (limits.processes, limits.processes)))
    return out


def _preexec(
    joins: tuple[str, ...], rlimits: list[tuple[int, tuple[int, int]]]
) -> Callable[[], None]:
    # Runs in the child between fork and exec: only os calls, everything prepared beforehand.
    def run() -> None:
        me = str(os.getpid()).encode()
        for path in joins:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, me)
            finally:
                os.close(fd)
        for which, value in rlimits:
            resource.setrlimit(which, value)

    return run


def _is_root() -> bool:
    return os.geteuid() == 0


def _signal_tree(pgid: int, cgroups: RunCgroups, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
    cgroups.signal_all(sig)


async def _wait4(pid: int) -> tuple[int, resource.struct_rusage]:
    """Reap ``pid`` when it exits (its pidfd turns readable), returning status and rusage."""
    loop = asyncio.get_running_loop()
    pidfd = os.pidfd_open(pid)
    exited: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        loop.remove_reader(pidfd)
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(pidfd, ready)
    try:
        await exited
        # Readable pidfd: the process has exited, so this wait does not block.
        _, status, usage = os.wait4(pid, 0)  # noqa: ASYNC222
        return status, usage
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


async def supervise(
    argv: Sequence[str],
    *,
    cwd: str,
    env: Mapping[str, str],
    limits: Limits,
    grace_s: float = 2.0,
    signal_from_exit: bool = False,
) -> Outcome:
    """Run ``argv`` to its end under ``limits``; see the module docstring.

    Args:
        argv: The command as the backend wraps it.
        cwd: Where it starts.
        env: Its whole environment.
        limits: The run's limits.
        grace_s: Time between SIGTERM and SIGKILL when the wall clock runs out.
        signal_from_exit: Read an exit status of 128+N as "killed by signal N" (a wrapper
            such as bwrap reports its child's signal that way).

    Raises:
        SandboxUnavailableError: A process limit is asked for as root and no pids cgroup
            can hold it.
        SandboxError: The command could not be started for another reason than a missing
            or non-executable program (those give exit status 127 or 126).
    """
    cgroups = await asyncio.to_thread(
        RunCgroups, processes=limits.processes, memory_mb=limits.memory_mb
    )
    if limits.processes is not None and cgroups.pids is None and _is_root():
        await asyncio.to_thread(cgroups.remove)
        raise SandboxUnavailableError(
            "process",
            "a process limit needs a writable pids cgroup (/sys/fs/cgroup/pids) when running "
            "as root (RLIMIT_NPROC does not bind root); set Limits(processes=None) to run "
            "without one",
        )
    try:
        return await _supervise(argv, cwd, env, limits, grace_s, signal_from_exit, cgroups)
    finally:
        await asyncio.to_thread(cgroups.remove)


async def _supervise(
    argv: Sequence[str],
    cwd: str,
    env: Mapping[str, str],
    limits: Limits,
    grace_s: float,
    signal_from_exit: bool,
    cgroups: RunCgroups,
) -> Outcome:
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    try:
        # Popen, not asyncio's subprocess: the child must be ours to reap with wait4, and
        # it joins its cgroups in preexec_fn. Spawning is a fork and an exec: no waiting.
        proc = subprocess.Popen(  # noqa: ASYNC220
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
            preexec_fn=_preexec(cgroups.join_paths(), _rlimits(limits, cgroups)),
        )
    except (FileNotFoundError, PermissionError) as exc:
        code = 127 if isinstance(exc, FileNotFoundError) else 126
        message = f"aqe sandbox: cannot execute {argv[0]!r}: {exc.strerror}\n".encode()
        return Outcome(code, None, None, b"", message, 0, 0, 0.0, 0.0, 0)
    except (OSError, subprocess.SubprocessError) as exc:
        raise SandboxError(f"cannot start {argv[0]!r} in the sandbox: {exc}") from exc
    if proc.stdout is None or proc.stderr is None:  # pragma: no cover - PIPE was asked
        raise SandboxError("the sandboxed command has no output pipes")
    out_done: asyncio.Future[None] = loop.create_future()
    err_done: asyncio.Future[None] = loop.create_future()
    out = _CappedReader(limits.output_bytes, out_done)
    err = _CappedReader(limits.output_bytes, err_done)
    await loop.connect_read_pipe(lambda: out, proc.stdout)
    await loop.connect_read_pipe(lambda: err, proc.stderr)

    stopped: str | None = None
    reaped = asyncio.ensure_future(_wait4(proc.pid))
    try:
        status, usage = await asyncio.wait_for(asyncio.shield(reaped), limits.wall_s)
    except TimeoutError:
        stopped = "wall-time"
        _signal_tree(proc.pid, cgroups, signal.SIGTERM)
        try:
            status, usage = await asyncio.wait_for(asyncio.shield(reaped), grace_s)
        except TimeoutError:
            _signal_tree(proc.pid, cgroups, signal.SIGKILL)
            status, usage = await reaped
    finally:
        if not reaped.done():
            # Cancelled from outside: kill the tree and reap, so no process outlives the run.
            _signal_tree(proc.pid, cgroups, signal.SIGKILL)
            with contextlib.suppress(BaseException):
                await asyncio.shield(reaped)
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen

    # What the command left running (background jobs, a fork loop) dies with it.
    _signal_tree(proc.pid, cgroups, signal.SIGKILL)
    await asyncio.to_thread(cgroups.kill_all)
    # A process that escaped the group without a cgroup may still hold the pipes open.
    _, pending = await asyncio.wait({out_done, err_done}, timeout=max(grace_s, 1.0))
    if pending:
        for pipe in (proc.stdout, proc.stderr):
            with contextlib.suppress(OSError):
                pipe.close()

    exit_code: int | None = None
    sig: int | None = None
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
    else:
        code = os.WEXITSTATUS(status)
        if signal_from_exit and 128 < code < 128 + 65:
            sig = code - 128
        else:
            exit_code = code
    cpu = max(usage.ru_utime + usage.ru_stime, cgroups.cpu_seconds() or 0.0)
    if stopped is None:
        stopped = _why_stopped(exit_code, sig, cpu, limits, cgroups)
    return Outcome(
        exit_code=exit_code,
        signal=sig,
        stopped=stopped,
        stdout=bytes(out.kept),
        stderr=bytes(err.kept),
        stdout_dropped=out.dropped,
        stderr_dropped=err.dropped,
        wall_s=wall,
        cpu_s=cpu,
        max_rss_kb=usage.ru_maxrss,
    )


def _why_stopped(
    exit_code: int | None, sig: int | None, cpu_s: float, limits: Limits, cgroups: RunCgroups
) -> str | None:
    if exit_code == 0:
        return None
    if sig == signal.SIGXCPU or (
        sig == signal.SIGKILL and limits.cpu_s is not None and cpu_s >= limits.cpu_s
    ):
        return "cpu-time"
    if sig == signal.SIGXFSZ:
        return "file-size"
    if cgroups.oom_killed():
        return "memory"
    if cgroups.hit_process_limit():
        return "processes"
    return None
