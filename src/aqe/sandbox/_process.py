"""The ``process`` backend: a plain child process, confined by what needs no privilege.

It gets its own session and process group, rlimits (CPU, file size, open files, address
space where no memory cgroup is available), per-run ``pids`` and ``memory`` cgroups where
they are writable, a scrubbed environment and a private HOME and temp dir; the whole tree
is killed on the wall clock. It does NOT isolate the network nor the file system: the
command runs as the caller's user and can reach what that user can (use ``namespace``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from aqe.sandbox._base import BaseSandbox
from aqe.sandbox._spec import SandboxSpec
from aqe.sandbox._supervise import Outcome, supervise
from aqe.sandbox._workcopy import RunArea, scrubbed_env

__all__ = ["ProcessSandbox"]


class ProcessSandbox(BaseSandbox):
    """Runs commands as child processes in their own session, under limits."""

    name = "process"

    async def _execute(
        self, spec: SandboxSpec, argv: Sequence[str], area: RunArea, cwd: Path
    ) -> Outcome:
        return await supervise(
            argv,
            cwd=str(cwd),
            env=scrubbed_env(area, spec.env),
            limits=spec.limits,
            grace_s=self.grace_s,
        )
