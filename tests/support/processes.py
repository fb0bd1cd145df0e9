"""Pausing a real process (SIGSTOP) for as long as a test needs it unresponsive."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path


def _thread_states(pid: int) -> set[str]:
    states: set[str] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            states.add((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
    return states


@contextlib.contextmanager
def paused(pid: int, *, timeout_s: float = 10.0) -> Iterator[None]:
    """SIGSTOP ``pid`` until every thread has stopped; SIGCONT it on the way out.

    ``kill`` returns before every thread of a Go program (nats-server) has stopped, so
    the body starts only once ``/proc`` shows them all stopped: nothing the test
    sends meanwhile can be answered before the process is continued.

    Raises:
        AssertionError: its threads were not all stopped within ``timeout_s``.
    """
    os.kill(pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + timeout_s
        while not _thread_states(pid) <= {"T", "t"}:
            if time.monotonic() > deadline:
                raise AssertionError(f"process {pid} did not stop in {timeout_s:g} s")
            time.sleep(0.01)
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
