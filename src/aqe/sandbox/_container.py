"""The ``container`` backend: docker or podman, for a full image.

The working copy is mounted at ``/work``, HOME at ``/home/aqe``; the engine enforces
memory (no swap beyond it), the process count, CPU time, file size and open files, drops
capabilities, forbids new privileges and keeps the image's file system read-only with a
private ``/tmp``. There is no network unless ``Limits.network``. The wall clock kills the
client's process tree and then the container by name (``rm -f``).

The engine must answer (``docker info``); a client without a running daemon gives
``SandboxUnavailableError("no container engine running: ...")``.
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import shutil
import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path

import msgspec

from aqe.errors import SandboxError, SandboxUnavailableError
from aqe.sandbox._base import BaseSandbox
from aqe.sandbox._spec import SandboxSpec
from aqe.sandbox._supervise import Outcome, supervise
from aqe.sandbox._workcopy import KEPT_VARIABLES, RunArea

__all__ = ["ENGINES", "ContainerSandbox", "find_engine"]

ENGINES = ("docker", "podman")
_INFO_TIMEOUT_S = 15.0
_WORK = "/work"
_HOME = "/home/aqe"
_TMP = "/tmp"  # noqa: S108 - a private tmpfs inside the container


@functools.cache
def find_engine() -> tuple[str | None, str]:
    """The first engine that answers, or None and why none did (asked once a process)."""
    reasons = []
    for engine in ENGINES:
        path = shutil.which(engine)
        if path is None:
            reasons.append(f"{engine}: not installed")
            continue
        try:
            done = subprocess.run(
                [path, "info", "--format", "{{.ServerVersion}}"]
                if engine == "docker"
                else [path, "info", "--format", "{{.Version.Version}}"],
                capture_output=True,
                timeout=_INFO_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            reasons.append(f"{engine}: {exc}")
            continue
        if done.returncode == 0 and done.stdout.strip():
            return path, ""
        detail = done.stderr.decode(errors="replace").strip().splitlines()
        reasons.append(f"{engine}: {detail[-1] if detail else f'exit {done.returncode}'}")
    return None, "; ".join(reasons)


class ContainerSandbox(BaseSandbox):
    """Runs commands in a throw-away container of ``SandboxSpec.image``."""

    name = "container"
    isolates = frozenset({"network", "filesystem", "pids"})

    def __init__(self, *, grace_s: float = 2.0) -> None:
        """Find a container engine that answers.

        Raises:
            SandboxUnavailableError: ``no container engine running: <why, per engine>``.
        """
        engine, why = find_engine()
        if engine is None:
            raise SandboxUnavailableError("container", f"no container engine running: {why}")
        self.engine = engine
        super().__init__(grace_s=grace_s)

    def _check(self, spec: SandboxSpec) -> None:
        if not spec.image:
            raise SandboxError("the container backend needs SandboxSpec.image")

    def engine_argv(
        self, spec: SandboxSpec, argv: Sequence[str], area: RunArea, cwd: Path, name: str
    ) -> list[str]:
        """The ``<engine> run`` command line for one run."""
        limits = spec.limits
        inside = Path(_WORK) / cwd.relative_to(area.work)
        args = [self.engine, "run", "--rm", "--init", "--name", name]
        args += ["--network", "bridge" if limits.network else "none"]
        args += ["--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
        args += ["--read-only", "--tmpfs", _TMP]
        if limits.memory_mb is not None:
            args += ["--memory", f"{limits.memory_mb}m", "--memory-swap", f"{limits.memory_mb}m"]
        if limits.processes is not None:
            args += ["--pids-limit", str(limits.processes)]
        if limits.cpu_s is not None:
            soft = max(1, math.ceil(limits.cpu_s))
            args += ["--ulimit", f"cpu={soft}:{soft + 1}"]
        if limits.file_mb is not None:
            size = limits.file_mb * 1024 * 1024
            args += ["--ulimit", f"fsize={size}:{size}"]
        if limits.open_files is not None:
            args += ["--ulimit", f"nofile={limits.open_files}:{limits.open_files}"]
        args += ["-v", f"{area.work}:{_WORK}", "-v", f"{area.home}:{_HOME}", "-w", str(inside)]
        env = {"HOME": _HOME, "TMPDIR": _TMP, "LANG": "C.UTF-8", **spec.env}
        for key, value in env.items():
            args += ["-e", f"{key}={value}"]
        return [*args, "--", str(spec.image), *argv]

    async def _execute(
        self, spec: SandboxSpec, argv: Sequence[str], area: RunArea, cwd: Path
    ) -> Outcome:
        name = f"aqe-sandbox-{uuid.uuid4().hex[:12]}"
        client_env = {key: os.environ[key] for key in KEPT_VARIABLES if key in os.environ}
        # The engine enforces these inside the container; the client itself is not limited.
        client_limits = msgspec.structs.replace(
            spec.limits, processes=None, memory_mb=None, cpu_s=None, file_mb=None
        )
        try:
            return await supervise(
                self.engine_argv(spec, argv, area, cwd, name),
                cwd=str(area.root),
                env=client_env,
                limits=client_limits,
                grace_s=self.grace_s,
                signal_from_exit=True,
            )
        finally:
            proc = await asyncio.create_subprocess_exec(
                self.engine,
                "rm",
                "-f",
                name,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            await proc.wait()
