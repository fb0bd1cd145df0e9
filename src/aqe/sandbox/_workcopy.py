"""Working copies, private temp dirs and HOMEs, the scrubbed environment, and artefacts.

A run's area is one fresh directory holding ``work/`` (the working copy), ``home/`` and
``tmp/``; nothing of it outlives the run except the artefacts read back into the result.
A source is copied (a local path) or cloned and checked out (a git URL) once per spec into
a template, the setup command runs there once, and each run copies the template.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aqe.errors import SandboxError

__all__ = [
    "ARTEFACT_CAP_BYTES",
    "COPY_IGNORED",
    "RunArea",
    "collect_artefacts",
    "copy_tree",
    "fetch_source",
    "is_git_url",
    "new_area",
    "private_dir",
    "scrubbed_env",
    "sweep_dead_dirs",
]

#: Directories and files a local source's copy leaves out: VCS data, virtualenvs, caches.
COPY_IGNORED = (
    ".git",
    ".hg",
    ".venv",
    "venv",
    "node_modules",
    "__pycache__",
    "*.pyc",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".aqe",
)
#: Per artefact file; a larger one is cut at this size.
ARTEFACT_CAP_BYTES = 16 * 1024 * 1024
#: All artefacts of one run together.
ARTEFACTS_TOTAL_BYTES = 64 * 1024 * 1024
#: Variables kept from the caller's environment (everything else is scrubbed).
KEPT_VARIABLES = ("PATH", "LANG")
_GIT_PREFIXES = ("http://", "https://", "git://", "ssh://", "git@", "file://")


@dataclass(frozen=True, slots=True)
class RunArea:
    """The directories of one run."""

    root: Path
    work: Path
    home: Path
    tmp: Path


#: Run areas and templates are named ``aqe-sandbox-<kind>-<owner pid>-<random>``.
AREA_PREFIX = "aqe-sandbox-"


def private_dir(kind: str) -> Path:
    """A fresh directory (mode 0700) under the system temp dir, named after this process."""
    return Path(tempfile.mkdtemp(prefix=f"{AREA_PREFIX}{kind}-{os.getpid()}-"))


def sweep_dead_dirs(tmp: Path | None = None) -> list[Path]:
    """Remove the run areas and templates of aqe processes that are gone (kill -9).

    Returns:
        The directories removed.
    """
    removed = []
    for path in Path(tmp or tempfile.gettempdir()).glob(f"{AREA_PREFIX}*-*-*"):
        parts = path.name[len(AREA_PREFIX) :].split("-")
        if len(parts) < 3 or not parts[1].isdigit() or not path.is_dir():
            continue
        try:
            os.kill(int(parts[1]), 0)
            continue
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def new_area() -> RunArea:
    """Make a fresh, private run area (mode 0700) under the system temp dir."""
    root = private_dir("run")
    area = RunArea(root, root / "work", root / "home", root / "tmp")
    for path in (area.home, area.tmp):
        path.mkdir()
    return area


def scrubbed_env(area: RunArea, extra: Mapping[str, str]) -> dict[str, str]:
    """PATH and LANG of the caller, HOME and TMPDIR in the area, then the spec's own."""
    env = {key: os.environ[key] for key in KEPT_VARIABLES if key in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.setdefault("LANG", "C.UTF-8")
    env.update(HOME=str(area.home), TMPDIR=str(area.tmp), PYTHONDONTWRITEBYTECODE="1")
    env.update(extra)
    return env


def is_git_url(source: str) -> bool:
    """Whether a spec's source names a git repository to clone rather than a local path."""
    return source.startswith(_GIT_PREFIXES) or (source.endswith(".git") and "://" in source)


async def _git(*args: str, cwd: Path | None, timeout_s: float) -> None:
    proc = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        # The runner's own environment: cloning is preparation (its credentials, its
        # ssh keys), done outside the sandbox; the command never sees it.
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise SandboxError(f"git {args[0]} took longer than {timeout_s:g} s") from None
    if proc.returncode != 0:
        detail = err.decode(errors="replace").strip().splitlines()[-3:]
        raise SandboxError(f"git {' '.join(args)} failed: {' '.join(detail) or proc.returncode}")


async def fetch_source(source: str, commit: str | None, into: Path, *, timeout_s: float) -> None:
    """Fill ``into`` (which must not exist) from a local path or a git URL at ``commit``.

    Raises:
        SandboxError: The path does not exist, or git could not clone or check out.
    """
    if is_git_url(source):
        if shutil.which("git") is None:
            raise SandboxError(f"cannot clone {source}: git is not installed")
        await _git("clone", "--quiet", "--", source, str(into), cwd=None, timeout_s=timeout_s)
        if commit:
            await _git("checkout", "--quiet", "--detach", commit, cwd=into, timeout_s=timeout_s)
        return
    path = Path(source).expanduser()
    if not path.is_dir():
        raise SandboxError(f"sandbox source {source!r} is not a directory or a git URL")
    if commit:
        raise SandboxError(f"sandbox source {source!r} is a local path: commit applies to git")
    await asyncio.to_thread(
        shutil.copytree, path, into, symlinks=True, ignore=shutil.ignore_patterns(*COPY_IGNORED)
    )


def copy_tree(template: Path, into: Path) -> None:
    """Copy a prepared template into a run's working copy, keeping symlinks as links."""
    shutil.copytree(template, into, symlinks=True)


def collect_artefacts(work: Path, globs: tuple[str, ...]) -> dict[str, bytes]:
    """Read the files under ``work`` that match ``globs`` (never following a link out of it).

    Each file is cut at :data:`ARTEFACT_CAP_BYTES`; collection stops at
    ``ARTEFACTS_TOTAL_BYTES`` in all.
    """
    found: dict[str, bytes] = {}
    total = 0
    root = work.resolve()
    for pattern in globs:
        for path in sorted(work.glob(pattern)):
            rel = path.relative_to(work).as_posix()
            # No link anywhere on the way: a link could lead out of the copy (or loop in it).
            if rel in found or not path.is_file() or path.resolve() != root / rel:
                continue
            with path.open("rb") as handle:
                data = handle.read(min(ARTEFACT_CAP_BYTES, ARTEFACTS_TOTAL_BYTES - total))
            found[rel] = data
            total += len(data)
            if total >= ARTEFACTS_TOTAL_BYTES:
                return found
    return found
