"""What every backend does around the command: working copy, setup, result, clean-up.

A backend only says how to run one command in a prepared :class:`RunArea`
(:meth:`BaseSandbox._execute`); this class makes the template once per spec (fetch the
source, run the setup), gives each run a fresh copy of it with its own HOME and temp dir,
collects the artefacts and removes the area, whatever happened.
"""

from __future__ import annotations

import asyncio
import shutil
import weakref
from collections.abc import Sequence
from pathlib import Path

import msgspec

from aqe.errors import SandboxError
from aqe.sandbox._spec import SandboxResult, SandboxSpec
from aqe.sandbox._supervise import Outcome
from aqe.sandbox._workcopy import (
    RunArea,
    collect_artefacts,
    copy_tree,
    fetch_source,
    new_area,
    private_dir,
    sweep_dead_dirs,
)

__all__ = ["BaseSandbox"]

_SETUP_TAIL_CHARS = 2000
#: Prepared templates one sandbox object keeps (a long-lived runner sees many commits).
MAX_TEMPLATES = 8


_swept_dirs = False


def _remove(paths: list[Path]) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


class BaseSandbox:
    """Template cache and run life cycle shared by the backends.

    A sandbox object may run any number of commands, one after another or at once; each
    gets a fresh working copy, so nothing one run did (or broke) is seen by the next.
    Templates are removed by :meth:`close` (or ``async with``), at the latest when the
    object is collected.
    """

    name = "base"
    isolates: frozenset[str] = frozenset()

    def __init__(self, *, grace_s: float = 2.0) -> None:
        """Args:
        grace_s: Time between SIGTERM and SIGKILL when a run passes its wall clock.
        """
        self.grace_s = grace_s
        self._templates: dict[bytes, Path] = {}
        self._preparing: dict[bytes, asyncio.Future[Path]] = {}
        self._owned: list[Path] = []
        self._copying: dict[Path, int] = {}
        self._finalizer = weakref.finalize(self, _remove, self._owned)
        global _swept_dirs
        if not _swept_dirs:
            # Once a process: what a killed aqe process left in the temp dir goes.
            _swept_dirs = True
            sweep_dead_dirs()

    async def __aenter__(self) -> BaseSandbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the prepared templates (the next run prepares again)."""
        _remove(self._owned)
        self._owned.clear()
        self._templates.clear()

    def _check(self, spec: SandboxSpec) -> None:
        """Refuse a spec this backend cannot honour (overridden where needed)."""

    async def _execute(
        self, spec: SandboxSpec, argv: Sequence[str], area: RunArea, cwd: Path
    ) -> Outcome:
        raise NotImplementedError

    async def run(
        self, spec: SandboxSpec, argv: Sequence[str], *, workdir: str = "."
    ) -> SandboxResult:
        """Run ``argv`` in a fresh working copy made from ``spec``; see :class:`Sandbox`.

        Raises:
            SandboxError: An empty command, a ``workdir`` outside the working copy, a source
                that cannot be fetched, or a setup command that failed.
            SandboxUnavailableError: A limit that cannot be enforced on this machine.
        """
        if not argv:
            raise SandboxError("an empty command cannot run in a sandbox")
        self._check(spec)
        template = await self._template(spec)
        area = new_area()
        self._copying[template] = self._copying.get(template, 0) + 1
        try:
            try:
                await asyncio.to_thread(copy_tree, template, area.work)
            finally:
                self._copying[template] -= 1
            cwd = (area.work / workdir).resolve()
            if not cwd.is_relative_to(area.work.resolve()) or not cwd.is_dir():
                raise SandboxError(f"workdir {workdir!r} is not a directory in the working copy")
            outcome = await self._execute(spec, argv, area, cwd)
            artefacts = await asyncio.to_thread(collect_artefacts, area.work, spec.artefacts)
        finally:
            await asyncio.to_thread(shutil.rmtree, area.root, True)
        return SandboxResult(
            exit_code=outcome.exit_code,
            signal=outcome.signal,
            stopped=outcome.stopped,
            stdout=outcome.stdout.decode(errors="replace"),
            stderr=outcome.stderr.decode(errors="replace"),
            stdout_dropped=outcome.stdout_dropped,
            stderr_dropped=outcome.stderr_dropped,
            wall_s=outcome.wall_s,
            cpu_s=outcome.cpu_s,
            max_rss_kb=outcome.max_rss_kb,
            artefacts=artefacts,
            backend=self.name,
        )

    async def _template(self, spec: SandboxSpec) -> Path:
        # One template per way of preparing it; artefact globs do not change the copy.
        key = msgspec.json.encode(msgspec.structs.replace(spec, artefacts=()))
        if (ready := self._templates.get(key)) is not None and ready.is_dir():
            return ready
        pending = self._preparing.get(key)
        if pending is None or pending.get_loop() is not asyncio.get_running_loop():
            pending = asyncio.ensure_future(self._prepare(spec))
            self._preparing[key] = pending
        try:
            path = await asyncio.shield(pending)
        finally:
            if pending.done() and self._preparing.get(key) is pending:
                del self._preparing[key]
        self._templates[key] = path
        self._evict(keep=path)
        return path

    def _evict(self, *, keep: Path) -> None:
        """Remove the oldest templates past :data:`MAX_TEMPLATES` that no run is copying."""
        for key, path in list(self._templates.items()):
            if len(self._templates) <= MAX_TEMPLATES:
                return
            if path == keep or self._copying.get(path, 0):
                continue
            del self._templates[key]
            self._copying.pop(path, None)
            root = path.parent
            if root in self._owned:
                self._owned.remove(root)
            shutil.rmtree(root, ignore_errors=True)

    async def _prepare(self, spec: SandboxSpec) -> Path:
        root = private_dir("template")
        area = RunArea(root, root / "work", root / "home", root / "tmp")
        try:
            area.home.mkdir()
            area.tmp.mkdir()
            await fetch_source(spec.source, spec.commit, area.work, timeout_s=spec.limits.wall_s)
            if spec.setup:
                done = await self._execute(spec, spec.setup, area, area.work)
                if done.exit_code != 0 or done.stopped is not None:
                    tail = done.stderr.decode(errors="replace")[-_SETUP_TAIL_CHARS:].strip()
                    why = done.stopped or (
                        f"exit {done.exit_code}"
                        if done.exit_code is not None
                        else f"signal {done.signal}"
                    )
                    raise SandboxError(
                        f"sandbox setup {' '.join(spec.setup)!r} failed ({why})"
                        + (f": {tail}" if tail else "")
                    )
            shutil.rmtree(area.tmp, ignore_errors=True)
            shutil.rmtree(area.home, ignore_errors=True)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        self._owned.append(root)
        return area.work
