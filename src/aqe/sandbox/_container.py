"""The ``container`` backend (skeleton)."""

from __future__ import annotations

from collections.abc import Sequence

from aqe.errors import SandboxUnavailableError
from aqe.sandbox._spec import SandboxResult, SandboxSpec

__all__ = ["ContainerSandbox"]


class ContainerSandbox:
    """Skeleton: not built yet."""

    name = "container"

    def __init__(self) -> None:
        raise SandboxUnavailableError("container", "not built yet (issue 12)")

    async def run(
        self, spec: SandboxSpec, argv: Sequence[str], *, workdir: str = "."
    ) -> SandboxResult:
        """See :meth:`aqe.sandbox.Sandbox.run`."""
        raise NotImplementedError
