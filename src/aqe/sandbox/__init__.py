"""Run a command in a working copy, in isolation, under limits.

One interface, three backends:

- ``process``: always available. Own session and process group, rlimits, a cgroup for
  the process count and memory where one is writable, a scrubbed environment, a private
  temp dir and HOME. It does not isolate the network or the file system.
- ``namespace``: bubblewrap (``bwrap``): user, PID, network, mount, IPC and UTS
  namespaces; the root file system read-only except the working copy and its temp dir;
  no network but loopback unless ``Limits.network``.
- ``container``: docker or podman, for a full image, where an engine answers.

:func:`open_sandbox` raises :class:`~aqe.errors.SandboxUnavailableError` with the reason
when a backend cannot run on this machine; :func:`available_backends` lists those that can.
"""

from __future__ import annotations

from aqe.errors import SandboxError, SandboxUnavailableError
from aqe.sandbox._spec import STOP_REASONS, Limits, Sandbox, SandboxResult, SandboxSpec

__all__ = [
    "BACKENDS",
    "STOP_REASONS",
    "Limits",
    "Sandbox",
    "SandboxError",
    "SandboxResult",
    "SandboxSpec",
    "SandboxUnavailableError",
    "available_backends",
    "open_sandbox",
]

#: Every backend name, in order of increasing isolation.
BACKENDS = ("process", "namespace", "container")


def open_sandbox(backend: str = "process") -> Sandbox:
    """Return a sandbox of the named backend, checked to work on this machine.

    Args:
        backend: ``"process"``, ``"namespace"`` or ``"container"``.

    Raises:
        SandboxUnavailableError: The backend is unknown or cannot run here; the message
            says why and what to do.
    """
    if backend == "process":
        from aqe.sandbox._process import ProcessSandbox

        return ProcessSandbox()
    if backend == "namespace":
        from aqe.sandbox._namespace import NamespaceSandbox

        return NamespaceSandbox()
    if backend == "container":
        from aqe.sandbox._container import ContainerSandbox

        return ContainerSandbox()
    raise SandboxUnavailableError(backend, f"unknown backend; known: {', '.join(BACKENDS)}")


def available_backends() -> list[str]:
    """The backends that can run on this machine, in order of increasing isolation."""
    names = []
    for name in BACKENDS:
        try:
            open_sandbox(name)
        except SandboxUnavailableError:
            continue
        names.append(name)
    return names
