"""Process ids: liveness (zombies count as dead), command lines, and stopping.

Servers are spawned without a :class:`subprocess.Popen` object, so exited children are
reaped here with ``waitpid`` (see :func:`pid_alive`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from aqe.errors import ServerError

__all__ = [
    "pid_alive",
    "process_cmdline",
    "reap_child",
    "signal_until_gone",
    "terminate_pid",
]

_POLL_S: Final = 0.01


def reap_child(pid: int) -> int | None:
    """Reap ``pid`` if it is our exited child; return its exit code (negative: signal).

    Returns ``None`` while the child runs, and also when ``pid`` is not our child.
    """
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    if done == 0:
        return None
    return os.waitstatus_to_exitcode(status)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The command name (field 2) may contain spaces and parentheses; the state follows
    # the last ')'.
    fields = stat[stat.rfind(")") + 1 :].split()
    return bool(fields) and fields[0] in {"Z", "X"}


def pid_alive(pid: int, *, reap: bool = True) -> bool:
    """Whether a process with this id exists and has not exited.

    Reaps it first when it is an exited child of ours (unless ``reap`` is False: the
    caller reaps it itself and wants its exit status), and counts a zombie as dead.

    Args:
        pid: Process id.
        reap: Reap an exited child of ours (its exit status is then lost).

    Returns:
        ``True`` when the process is running.
    """
    if pid <= 0:
        return False
    if reap:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            reap = False  # not our child: someone else reaps it
        else:
            if done == pid:
                return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it belongs to someone else
    if not _is_zombie(pid):
        return True
    if reap:
        # /proc shows a dying multi-threaded child (nats-server) a zombie as soon as
        # its main thread exits; waitpid(WNOHANG) reports it only once every thread
        # has. Wait for that, or the zombie stays until this process exits.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    return False


def process_cmdline(pid: int) -> list[str] | None:
    """Return a running process's command line, or ``None`` when it cannot be read.

    Reads ``/proc`` where there is one, else asks ``ps`` (whose output splits arguments
    on whitespace, which is enough to recognise a nats-server and its store directory).

    Args:
        pid: Process id.
    """
    proc = Path(f"/proc/{pid}/cmdline")
    if Path("/proc/self").exists():
        try:
            raw = proc.read_bytes()
        except OSError:
            return None
        args = raw.decode(errors="replace").split("\0")
        return [a for a in args if a] or None
    try:
        done = subprocess.run(
            ["ps", "-o", "command=", "-p", str(pid)],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.split() or None


def terminate_pid(pid: int, timeout: float = 5.0) -> bool:
    """Stop a process: SIGTERM, wait up to ``timeout`` seconds, then SIGKILL.

    Args:
        pid: Process id.
        timeout: Seconds to wait for a graceful exit before killing.

    Returns:
        ``True`` when the process was running and is gone now; ``False`` when it was not
        running.

    Raises:
        ServerError: The process survived SIGKILL (or may not be signalled).
    """
    if not pid_alive(pid):
        return False
    signal_until_gone(pid, timeout, lambda: pid_alive(pid))
    return True


def signal_until_gone(pid: int, timeout: float, alive: Callable[[], bool]) -> None:
    """Send SIGTERM, wait up to ``timeout`` while ``alive()``, then SIGKILL and wait 5 s.

    Raises:
        ServerError: The process is still alive after SIGKILL, or may not be signalled.
    """
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError as exc:
            raise ServerError(f"not allowed to stop process {pid}: {exc}") from exc
        if sig == signal.SIGTERM:
            # A stopped (SIGSTOP, ^Z) process would only see SIGTERM once continued.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        deadline = time.monotonic() + wait
        while alive():
            if time.monotonic() >= deadline:
                break
            time.sleep(_POLL_S)
        else:
            return
    raise ServerError(f"process {pid} did not exit after SIGKILL")
