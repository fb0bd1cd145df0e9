"""The ``process`` backend: own session, rlimits, cgroup limits where writable."""

from __future__ import annotations

from collections.abc import Sequence

from aqe.sandbox._spec import SandboxResult, SandboxSpec

__all__ = ["ProcessSandbox"]


class ProcessSandbox:
    """Runs commands as plain child processes in their own session (skeleton)."""

    name = "process"

    async def run(
        self, spec: SandboxSpec, argv: Sequence[str], *, workdir: str = "."
    ) -> SandboxResult:
        """See :meth:`aqe.sandbox.Sandbox.run`."""
        raise NotImplementedError("process backend: being built (issue 12)")
