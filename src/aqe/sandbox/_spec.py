"""What a sandbox run is described by, and what it returns.

A :class:`SandboxSpec` is plain data (msgspec, frozen) so a runner on another machine can
decode it from a task event and reproduce the same working copy, setup and limits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec

__all__ = ["STOP_REASONS", "Limits", "Sandbox", "SandboxResult", "SandboxSpec"]

#: The values :attr:`SandboxResult.stopped` takes when aqe (or a limit it set) stopped a run.
STOP_REASONS = ("wall-time", "cpu-time", "memory", "processes", "output", "file-size")


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Resource limits of one sandboxed command (``None`` turns a limit off)."""

    wall_s: float = 600.0
    """Whole-run wall clock; the whole process tree is killed when it passes."""
    cpu_s: float | None = None
    """CPU seconds (RLIMIT_CPU, per process)."""
    memory_mb: int | None = 2048
    """Address space per process (RLIMIT_AS) or the cgroup's memory."""
    processes: int | None = 256
    """Most processes and threads the sandbox may hold at once."""
    output_bytes: int = 1_048_576
    """Bytes kept per stream (stdout, stderr); the rest is read, counted and dropped."""
    file_mb: int | None = 1024
    """Largest file the command may write (RLIMIT_FSIZE)."""
    open_files: int | None = 4096
    """Most open file descriptors per process (RLIMIT_NOFILE)."""
    network: bool = False
    """Whether the command may reach the network (backends that can block it do)."""


class SandboxSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Where the working copy comes from, how it is prepared, and how it is confined."""

    source: str
    """A local path (copied) or a git URL (cloned)."""
    commit: str | None = None
    """For git sources: the commit (or branch/tag) to check out."""
    setup: tuple[str, ...] = ()
    """A setup command (argv) run once in a fresh working copy, under the same limits."""
    backend: str = "process"
    """``"process"``, ``"namespace"`` or ``"container"``."""
    image: str | None = None
    """Container backend only: the image to run in."""
    limits: Limits = Limits()
    env: dict[str, str] = {}
    """Extra environment; everything else of the caller's environment is scrubbed."""
    artefacts: tuple[str, ...] = ("**/*.xml", ".coverage*", "**/*benchmark*.json")
    """Globs, relative to the working copy, of files returned in the result."""


class SandboxResult(msgspec.Struct, frozen=True, kw_only=True):
    """What one sandboxed command did."""

    exit_code: int | None
    """The exit status; ``None`` when a signal ended it."""
    signal: int | None = None
    """The signal that ended it, if one did."""
    stopped: str | None = None
    """Why aqe (or a limit) stopped it: one of :data:`STOP_REASONS`, or ``None``."""
    stdout: str = ""
    stderr: str = ""
    stdout_dropped: int = 0
    """Bytes of stdout beyond ``Limits.output_bytes``, read and dropped."""
    stderr_dropped: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    """User plus system CPU seconds of the command and its waited-for children."""
    max_rss_kb: int = 0
    artefacts: dict[str, bytes] = {}
    """Relative path -> content of files matching the spec's globs (capped)."""
    backend: str = "process"

    @property
    def ok(self) -> bool:
        """Whether the command exited 0 and nothing stopped it."""
        return self.exit_code == 0 and self.stopped is None


class Sandbox(Protocol):
    """A place to run commands in a working copy under limits."""

    name: str
    isolates: frozenset[str]
    """What the backend keeps the command from: ``"network"``, ``"filesystem"``, ``"pids"``."""

    async def run(
        self, spec: SandboxSpec, argv: Sequence[str], *, workdir: str = "."
    ) -> SandboxResult:
        """Run ``argv`` in a working copy made from ``spec`` and return what it did.

        Args:
            spec: Source, setup, limits, environment and artefact globs.
            argv: The command, ``argv[0]`` looked up on the sandbox's PATH.
            workdir: Directory inside the working copy to run in.

        Raises:
            SandboxError: The working copy or setup could not be prepared.
            SandboxUnavailableError: The backend cannot run on this machine.
        """
        ...
