"""Kept tests and batch measurements read back from the log; kept tests written out.

The log is the only record: :func:`read_generation` folds the ``aqe.tests.generated.*``
and ``aqe.tests.generation.*`` subjects of ``AQE_TESTS`` into :class:`GenerationLog`
(pure fold in :meth:`GenerationLog.apply`), optionally limited to some batches or one
workflow instance. :func:`write_tests` writes the kept tests as files, :func:`as_patch`
as a unified diff that adds them.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path

import msgspec

from aqe.errors import ConfigError
from aqe.events import Envelope, Event
from aqe.events.testgen import GeneratedTestKept, GeneratedTestRejected, GenerationMeasured
from aqe.log.port import EventLog

__all__ = [
    "GENERATION_SUBJECTS",
    "TESTS_STREAM",
    "GenerationLog",
    "as_patch",
    "read_generation",
    "record_batch",
    "write_tests",
]

TESTS_STREAM = "AQE_TESTS"
GENERATION_SUBJECTS = ("aqe.tests.generated.>", "aqe.tests.generation.>")


class GenerationLog(msgspec.Struct, kw_only=True):
    """What the log says about test generation (optionally one instance's or batches')."""

    kept: dict[str, GeneratedTestKept] = msgspec.field(default_factory=dict)
    """Candidate id -> kept test, in log order."""
    rejected: dict[str, GeneratedTestRejected] = msgspec.field(default_factory=dict)
    batches: dict[str, GenerationMeasured] = msgspec.field(default_factory=dict)
    instance_id: str | None = None
    batch_ids: frozenset[str] | None = None

    def _wanted(self, batch_id: str, instance_id: str) -> bool:
        if self.instance_id is not None and instance_id != self.instance_id:
            return False
        return self.batch_ids is None or batch_id in self.batch_ids

    def apply(self, env: Envelope) -> None:
        """Fold one envelope (other events are ignored)."""
        try:
            event = env.decode()
        except ValueError:
            return  # an undecodable event is the projections' dead-letter business
        if isinstance(event, GeneratedTestKept):
            if self._wanted(event.batch_id, event.instance_id):
                self.kept.setdefault(event.candidate_id, event)
        elif isinstance(event, GeneratedTestRejected):
            if self._wanted(event.batch_id, event.instance_id):
                self.rejected.setdefault(event.candidate_id, event)
        elif isinstance(event, GenerationMeasured) and self._wanted(
            event.batch_id, event.instance_id
        ):
            self.batches.setdefault(event.batch_id, event)

    def finished_kept(self) -> list[GeneratedTestKept]:
        """Kept tests of batches whose measurement is in the log (finished batches)."""
        return [k for k in self.kept.values() if k.batch_id in self.batches]


async def read_generation(
    log: EventLog, *, instance_id: str | None = None, batch_ids: Iterable[str] | None = None
) -> GenerationLog:
    """Fold the generation events of the log (see the module docstring)."""
    state = GenerationLog(
        instance_id=instance_id,
        batch_ids=frozenset(batch_ids) if batch_ids is not None else None,
    )
    for subjects in GENERATION_SUBJECTS:
        async for env in log.read(TESTS_STREAM, subjects=subjects):
            state.apply(env)
    return state


def _check_name(name: str) -> str:
    if "/" in name or "\\" in name or name.startswith(".") or not name.endswith(".py"):
        raise ConfigError(f"kept test name {name!r} is not a plain .py file name")
    return name


def write_tests(kept: Iterable[GeneratedTestKept], out_dir: Path) -> list[Path]:
    """Write each kept test to ``out_dir/<name>``; returns the paths written.

    Raises:
        ConfigError: a name that is not a plain ``.py`` file name, or two kept tests
            with the same name and different code.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    paths = []
    for test in kept:
        name = _check_name(test.name)
        if name in written:
            if written[name] != test.code:
                raise ConfigError(f"two kept tests are both called {name}; write one batch")
            continue
        written[name] = test.code
        path = out_dir / name
        path.write_text(test.code, encoding="utf-8")
        paths.append(path)
    return paths


def as_patch(kept: Iterable[GeneratedTestKept], out_dir: str = "tests/generated") -> str:
    """A unified diff (``git apply``-able) adding each kept test under ``out_dir``."""
    chunks = []
    seen: set[str] = set()
    for test in kept:
        name = _check_name(test.name)
        if name in seen:
            continue
        seen.add(name)
        path = f"{out_dir.rstrip('/')}/{name}"
        lines = test.code.splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        diff = difflib.unified_diff([], lines, fromfile="/dev/null", tofile=f"b/{path}")
        chunks.append(f"diff --git a/{path} b/{path}\nnew file mode 100644\n" + "".join(diff))
    return "".join(chunks)


async def record_batch(log: EventLog, events: Iterable[Event]) -> int:
    """Append a batch's events atomically (verdicts, then the measurement); returns the count.

    Every event has its deterministic id, so recording the same batch again stores
    nothing new.
    """
    from aqe.log.port import NewEvent
    from aqe.log.retry import while_unavailable

    items = [NewEvent(event=e) for e in events]
    result = await while_unavailable(lambda: log.append_batch(items))
    return result.count
