"""``aqe bench run``'s work: measure a command in a sandbox at a commit, as one point.

The working copy comes from the repository at the commit (a git repository is cloned
and checked out by the sandbox; a plain folder is copied), the harness
(:mod:`aqe.perf.harness`) runs the command ``warmup`` + ``repeat`` times and every timed
run's time on the chosen clock (wall or CPU time) is a sample. The point keeps the
command and the repository, so the confirm workflow can measure the same thing again at
other commits.
"""

from __future__ import annotations

import shlex
import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path

from aqe.errors import ConfigError
from aqe.events.perf import BenchmarkMeasured, MachineFingerprint
from aqe.perf._fingerprint import series_id
from aqe.perf.harness import harness_argv, metric_of, parse_samples
from aqe.sandbox import SandboxSpec, open_sandbox

__all__ = ["Source", "measure", "repo_url", "resolve_source"]


def repo_url(repo: str) -> str:
    """A git URL for ``repo`` (a local path becomes ``file://<absolute path>``)."""
    if "://" in repo or repo.startswith("git@"):
        return repo
    return "file://" + str(Path(repo).resolve())


def _rev_parse(repo: Path, ref: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--verify", f"{ref}^{{commit}}"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


class Source:
    """Where a measurement runs: a sandbox source and, for git, the commit."""

    def __init__(self, source: str, commit: str | None) -> None:
        self.source = source
        self.commit = commit


def resolve_source(repo: str, ref: str = "HEAD") -> Source:
    """The sandbox source for ``repo`` at ``ref`` (a folder without git: copied as it is).

    Raises:
        ConfigError: ``repo`` is not a folder, or ``ref`` is not one of its commits.
    """
    folder = Path(repo)
    if not folder.is_dir():
        raise ConfigError(f"--repo {repo}: not a folder")
    if not (folder / ".git").exists():
        return Source(str(folder.resolve()), None)
    sha = _rev_parse(folder, ref)
    if sha is None:
        raise ConfigError(f"--commit {ref}: not a commit of {repo}")
    return Source(repo_url(repo), sha)


async def measure(
    source: Source,
    command: Sequence[str],
    *,
    machine: MachineFingerprint,
    name: str | None = None,
    warmup: int = 1,
    repeat: int = 5,
    backend: str = "process",
    clock: str = "wall",
) -> BenchmarkMeasured:
    """Run ``command`` at ``source`` and return the point (not appended).

    ``clock`` ``cpu`` makes the samples the command's CPU time (metric ``cpu-time``, a
    series of its own) instead of its wall time (metric ``time``).

    Raises:
        ConfigError: the command failed, the clock is unknown, or the harness printed
            no samples.
        SandboxError: the working copy could not be made.
    """
    argv = harness_argv(command, warmup=warmup, repeat=repeat, clock=clock)
    spec = SandboxSpec(source=source.source, commit=source.commit, backend=backend, artefacts=())
    result = await open_sandbox(backend).run(spec, argv)
    samples, code = parse_samples(result.stdout)
    if code != 0 or not samples:
        raise ConfigError(f"bench: the command exited {code}: {result.stderr[-300:].strip()}")
    benchmark = name or shlex.join(command)
    metric = metric_of(clock)
    return BenchmarkMeasured(
        series_id=series_id(benchmark, metric, machine.machine_class),
        benchmark=benchmark,
        metric=metric,
        unit="s",
        samples=samples,
        machine=machine,
        commit=source.commit or "",
        run_id=f"bench-{uuid.uuid4().hex[:16]}",
        source_format="aqe-bench",
        command=tuple(command),
        repo=source.source if source.commit else "",
    )
