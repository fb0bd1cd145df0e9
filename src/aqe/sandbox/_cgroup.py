"""Per-run cgroups (v1 ``pids`` and ``memory`` controllers) where this process may make them.

As root, RLIMIT_NPROC is not enforced, so the only sound cap on the process count of a
sandbox is a ``pids`` cgroup; a ``memory`` cgroup caps the whole tree's memory (RLIMIT_AS
caps each process alone) and tells an out-of-memory kill from any other SIGKILL. A run's
cgroups also list every process the run started, even one that left its process group,
which is how the whole tree is killed.

The child joins its cgroups itself, between fork and exec (:meth:`RunCgroups.join_paths`
is written from ``preexec_fn``), so not one instruction of the command runs outside them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from pathlib import Path

__all__ = ["CGROUP_ROOT", "RunCgroups", "cgroup_parent"]

CGROUP_ROOT = Path("/sys/fs/cgroup")
_PARENT = "aqe-sandbox"


def cgroup_parent(controller: str, root: Path = CGROUP_ROOT) -> Path | None:
    """The ``aqe-sandbox`` cgroup of a v1 controller, made if needed; None if not writable."""
    mount = root / controller
    if not (mount / "cgroup.procs").is_file():
        return None
    parent = mount / _PARENT
    try:
        parent.mkdir(exist_ok=True)
    except OSError:
        return None
    if not os.access(parent, os.W_OK):
        return None
    if parent not in _swept:
        _swept.add(parent)
        sweep_orphans(parent)
    return parent


_swept: set[Path] = set()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_orphans(parent: Path) -> list[Path]:
    """Kill and remove the run cgroups whose aqe process is gone (killed mid-run).

    A run's cgroup is named ``<owner pid>-<random>``; when the owner died with SIGKILL,
    nothing else would ever stop what the run had started. Returns the cgroups removed.
    """
    removed = []
    for group in parent.iterdir():
        owner, sep, _ = group.name.partition("-")
        if not group.is_dir() or not sep or not owner.isdigit() or _alive(int(owner)):
            continue
        orphan = object.__new__(RunCgroups)
        orphan.pids, orphan.memory, orphan.cpuacct = group, None, None
        orphan.remove()
        if not group.exists():
            removed.append(group)
    return removed


class RunCgroups:
    """The cgroups of one run: made with its limits, joined by the child, removed after."""

    def __init__(self, *, processes: int | None, memory_mb: int | None) -> None:
        """Make the run's cgroups for the limits that are set and that this machine allows.

        A ``cpuacct`` cgroup, where writable, counts the CPU time of every process of the
        run (``wait4`` sees only what was waited for, and bwrap's init is not).

        Args:
            processes: ``pids.max``, or None for no pids cgroup.
            memory_mb: ``memory.limit_in_bytes`` (and memsw), or None for no memory cgroup.
        """
        name = f"{os.getpid()}-{uuid.uuid4().hex[:16]}"
        self.pids: Path | None = None
        self.memory: Path | None = None
        self.cpuacct: Path | None = None
        if (parent := cgroup_parent("cpuacct")) is not None:
            self.cpuacct = self._make(parent / name, {})
        if processes is not None and (parent := cgroup_parent("pids")) is not None:
            self.pids = self._make(parent / name, {"pids.max": str(processes)})
        if memory_mb is not None and (parent := cgroup_parent("memory")) is not None:
            limit = str(memory_mb * 1024 * 1024)
            # memsw (memory + swap) too where the kernel counts swap, so swap is no way out.
            self.memory = self._make(
                parent / name,
                {"memory.limit_in_bytes": limit, "memory.memsw.limit_in_bytes": limit},
            )

    @staticmethod
    def _make(path: Path, settings: dict[str, str]) -> Path | None:
        try:
            path.mkdir()
        except OSError:
            return None
        for key, value in settings.items():
            target = path / key
            if not target.exists():
                continue
            try:
                target.write_text(value)
            except OSError:
                with contextlib.suppress(OSError):
                    path.rmdir()
                return None
        return path

    def join_paths(self) -> tuple[str, ...]:
        """The ``cgroup.procs`` files the child writes its pid to before exec."""
        return tuple(str(group / "cgroup.procs") for group in self._groups())

    def _groups(self) -> list[Path]:
        return [group for group in (self.pids, self.memory, self.cpuacct) if group is not None]

    def members(self) -> set[int]:
        """Every process still in the run's cgroups."""
        found: set[int] = set()
        for group in self._groups():
            with contextlib.suppress(OSError):
                found.update(int(line) for line in (group / "cgroup.procs").read_text().split())
        return found

    def signal_all(self, sig: int) -> int:
        """Send ``sig`` to every process in the run's cgroups; return how many there were."""
        pids = self.members()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        return len(pids)

    def kill_all(self, *, timeout_s: float = 10.0) -> bool:
        """SIGKILL the run's processes until none is left (a fork loop may still be forking).

        Returns:
            Whether the cgroups are empty.
        """
        deadline = time.monotonic() + timeout_s
        while self.signal_all(signal.SIGKILL):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def hit_process_limit(self) -> bool:
        """Whether a fork or clone was refused for the pids limit during the run."""
        if self.pids is None:
            return False
        with contextlib.suppress(OSError, ValueError):
            for line in (self.pids / "pids.events").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "max":
                    return int(value) > 0
        return False

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of the run for the memory limit."""
        if self.memory is None:
            return False
        with contextlib.suppress(OSError, ValueError):
            for line in (self.memory / "memory.oom_control").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value) > 0
        return False

    def cpu_seconds(self) -> float | None:
        """CPU time of every process that ran in the run's cgroups, if counted."""
        if self.cpuacct is None:
            return None
        try:
            return int((self.cpuacct / "cpuacct.usage").read_text()) / 1e9
        except (OSError, ValueError):
            return None

    def remove(self) -> None:
        """Kill what is left and remove the cgroups (a busy one is retried, then left)."""
        self.kill_all()
        for group in self._groups():
            for _ in range(50):
                try:
                    group.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
