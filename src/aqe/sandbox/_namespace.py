"""The ``namespace`` backend: bubblewrap's user, PID, network, mount, IPC and UTS namespaces.

The root file system is bound read-only, ``/tmp`` is a private tmpfs (with the host
directories under it that the interpreter and the command need bound back read-only),
and only the run's area (working copy, HOME, temp dir) is writable; ``/proc`` shows the
sandbox's own PID namespace, which dies with its first process; the network namespace
has only loopback unless ``Limits.network``. Capabilities are dropped. Limits are those
of the process backend (rlimits, ``pids`` and ``memory`` cgroups), which apply to the
whole namespace.

Needs ``bwrap`` (Debian/Ubuntu: ``apt-get install bubblewrap``) and a kernel that lets this
user make user namespaces; otherwise :class:`NamespaceSandbox` raises
``SandboxUnavailableError`` saying which, and the ``process`` backend is the fallback.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from aqe.errors import SandboxUnavailableError
from aqe.sandbox._base import BaseSandbox
from aqe.sandbox._spec import SandboxSpec
from aqe.sandbox._supervise import Outcome, supervise
from aqe.sandbox._workcopy import RunArea, scrubbed_env

__all__ = ["NamespaceSandbox", "bwrap_argv"]

_PROBE_TIMEOUT_S = 15.0


@functools.cache
def _probe() -> str | None:
    """Why bwrap cannot make namespaces here, or None when it can (asked once a process)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bwrap (bubblewrap) is not installed: apt-get install bubblewrap"
    try:
        done = subprocess.run(
            [bwrap, "--unshare-all", "--ro-bind", "/", "/", "--proc", "/proc", "true"],
            capture_output=True,
            timeout=_PROBE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap did not run: {exc}"
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip() or f"exit {done.returncode}"
        return (
            f"the kernel refused the namespaces ({detail}); check "
            "/proc/sys/user/max_user_namespaces and kernel.unprivileged_userns_clone"
        )
    return None


_PRIVATE_TMP = Path("/tmp")  # noqa: S108 - replaced by a private tmpfs in the sandbox


def _under_private_tmp(path: Path) -> bool:
    return path != _PRIVATE_TMP and path.is_relative_to(_PRIVATE_TMP)


def host_paths_to_keep(argv: Sequence[str]) -> list[str]:
    """Host directories under ``/tmp`` the command needs, to bind back read-only.

    The private ``/tmp`` hides whatever the host keeps there: an interpreter or virtual
    environment (a CI checkout under ``/tmp``), the directories its ``sys.path`` names
    (an editable install's sources) and the program itself. Parents come first, so a
    bind of a child is not hidden by its parent's.
    """
    candidates = [Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix)]
    candidates += [Path(entry) for entry in sys.path if entry]
    if argv and Path(argv[0]).is_absolute():
        folder = Path(argv[0]).parent
        # A virtualenv's interpreter needs its pyvenv.cfg, one level up from bin/.
        venv = folder.parent
        candidates.append(venv if (venv / "pyvenv.cfg").is_file() else folder)
    keep = {
        str(path.resolve())
        for path in candidates
        if path.is_dir() and _under_private_tmp(path.resolve())
    }
    return sorted(keep, key=lambda p: (p.count("/"), p))


def bwrap_argv(argv: Sequence[str], area: RunArea, cwd: Path, *, network: bool) -> list[str]:
    """The bwrap command line that runs ``argv`` in ``cwd`` with only ``area`` writable."""
    root = str(area.root)
    kept = [arg for path in host_paths_to_keep(argv) for arg in ("--ro-bind", path, path)]
    return [
        "bwrap",
        "--die-with-parent",
        "--new-session",
        "--unshare-all",
        *(["--share-net"] if network else []),
        "--cap-drop",
        "ALL",
        "--hostname",
        "aqe-sandbox",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--tmpfs",
        "/dev/shm",  # noqa: S108 - a private tmpfs inside the sandbox
        "--proc",
        "/proc",
        # A private /tmp first, then the area over it (the area usually lives under /tmp).
        "--tmpfs",
        "/tmp",  # noqa: S108
        *kept,
        "--bind",
        root,
        root,
        "--chdir",
        str(cwd),
        "--",
        *argv,
    ]


class NamespaceSandbox(BaseSandbox):
    """Runs commands inside fresh Linux namespaces made by bubblewrap."""

    name = "namespace"
    isolates = frozenset({"network", "filesystem", "pids"})

    def __init__(self, *, grace_s: float = 2.0) -> None:
        """Check that bwrap can make namespaces here.

        Raises:
            SandboxUnavailableError: bwrap is missing or the kernel refuses; the message
                says which (the ``process`` backend runs without namespaces).
        """
        reason = _probe()
        if reason is not None:
            raise SandboxUnavailableError(
                "namespace", f"{reason} (the 'process' backend runs without namespaces)"
            )
        super().__init__(grace_s=grace_s)

    async def _execute(
        self, spec: SandboxSpec, argv: Sequence[str], area: RunArea, cwd: Path
    ) -> Outcome:
        return await supervise(
            bwrap_argv(argv, area, cwd, network=spec.limits.network),
            cwd=str(cwd),
            env=scrubbed_env(area, spec.env),
            limits=spec.limits,
            grace_s=self.grace_s,
            signal_from_exit=True,
        )
