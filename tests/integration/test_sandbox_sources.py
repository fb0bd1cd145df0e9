"""Working copies (a path, a git URL at a commit), setup once per spec, and refusals."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import venv as venv_module
from collections.abc import Iterator
from pathlib import Path

import pytest

from aqe.errors import SandboxError, SandboxUnavailableError
from aqe.sandbox import (
    BACKENDS,
    Limits,
    Sandbox,
    SandboxSpec,
    _cgroup,
    _container,
    _supervise,
    open_sandbox,
)

PY = sys.executable


@pytest.fixture(params=[name for name in BACKENDS if name != "container"])
def sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    try:
        box = open_sandbox(request.param)
    except SandboxUnavailableError as exc:
        pytest.skip(str(exc))
    yield box
    box.close()  # type: ignore[attr-defined]


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
async def test_git_source_at_a_commit(sandbox: Sandbox, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "--quiet")
    (repo / "version.txt").write_text("one\n")
    git(repo, "add", "version.txt")
    git(repo, "commit", "--quiet", "-m", "one")
    first = git(repo, "rev-parse", "HEAD")
    (repo / "version.txt").write_text("two\n")
    git(repo, "commit", "--quiet", "-am", "two")
    read = ["cat", "version.txt"]
    at_first = await sandbox.run(SandboxSpec(source=f"file://{repo}", commit=first), read)
    at_head = await sandbox.run(SandboxSpec(source=f"file://{repo}"), read)
    assert (at_first.stdout, at_head.stdout) == ("one\n", "two\n")
    with pytest.raises(SandboxError, match="git checkout"):
        await sandbox.run(SandboxSpec(source=f"file://{repo}", commit="f" * 40), read)


async def test_setup_runs_once_and_each_run_gets_a_fresh_copy(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    spec = SandboxSpec(
        source=str(src), setup=("sh", "-c", "echo prepared >> setup.log"), limits=Limits(wall_s=60)
    )
    first = await sandbox.run(
        spec, ["sh", "-c", "cat setup.log; echo scribbled >> setup.log"], workdir="pkg/.."
    )
    second = await sandbox.run(spec, ["sh", "-c", "cat ../setup.log; pwd"], workdir="pkg")
    assert first.stdout == "prepared\n"
    assert second.stdout.splitlines()[0] == "prepared"  # not "scribbled": a fresh copy
    assert second.stdout.splitlines()[1].endswith("/work/pkg")
    assert not (src / "setup.log").exists()


async def test_refusals(sandbox: Sandbox, tmp_path: Path) -> None:
    spec = SandboxSpec(source=str(tmp_path))
    with pytest.raises(SandboxError, match="workdir"):
        await sandbox.run(spec, ["true"], workdir="../..")
    with pytest.raises(SandboxError, match="empty command"):
        await sandbox.run(spec, [])
    with pytest.raises(SandboxError, match="not a directory"):
        await sandbox.run(SandboxSpec(source=str(tmp_path / "missing")), ["true"])
    failing = SandboxSpec(source=str(tmp_path), setup=("sh", "-c", "echo broken >&2; exit 4"))
    with pytest.raises(SandboxError, match=r"setup .* failed \(exit 4\): broken"):
        await sandbox.run(failing, ["true"])
    missing = await sandbox.run(spec, ["aqe-no-such-program"])
    assert missing.exit_code not in (0, None)
    assert "aqe-no-such-program" in missing.stderr
    after = await sandbox.run(spec, ["true"])
    assert after.ok


async def test_process_limit_as_root_without_pids_cgroup_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never run unbounded: RLIMIT_NPROC does not bind root, so no cgroup means no run."""
    monkeypatch.setattr(_supervise, "_is_root", lambda: True)
    real = _cgroup.cgroup_parent
    monkeypatch.setattr(
        _cgroup,
        "cgroup_parent",
        lambda controller, *a: None if controller == "pids" else real(controller),
    )
    box = open_sandbox("process")
    with pytest.raises(SandboxUnavailableError, match="pids cgroup"):
        await box.run(SandboxSpec(source=str(tmp_path)), ["true"])
    done = await box.run(
        SandboxSpec(source=str(tmp_path), limits=Limits(processes=None)), ["echo", "ran"]
    )
    assert done.stdout == "ran\n"


def test_container_backend_says_no_engine_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A docker client whose daemon does not answer, as on this machine.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "docker").write_text(
        "#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock."
        " Is the docker daemon running?' >&2\nexit 1\n"
    )
    (fake / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))
    _container.find_engine.cache_clear()
    try:
        with pytest.raises(SandboxUnavailableError) as caught:
            open_sandbox("container")
    finally:
        _container.find_engine.cache_clear()
    message = str(caught.value)
    assert message.startswith("sandbox backend 'container' is unavailable: no container engine")
    assert "docker: Cannot connect to the Docker daemon" in message
    assert "podman: not installed" in message


def test_unknown_backend() -> None:
    with pytest.raises(SandboxUnavailableError, match="unknown backend; known: process"):
        open_sandbox("vm")


def test_a_dead_runs_processes_are_swept() -> None:
    """kill -9 of the aqe process mid-run leaves its cgroup; the next sandbox ends it."""
    parent = _cgroup.cgroup_parent("pids")
    if parent is None:
        pytest.skip("no writable pids cgroup here")
    gone = subprocess.Popen(["true"])
    gone.wait()
    group = parent / f"{gone.pid}-orphan{os.getpid()}"
    group.mkdir()
    left = subprocess.Popen(["sleep", "3600"])
    try:
        (group / "cgroup.procs").write_text(str(left.pid))
        assert _cgroup.sweep_orphans(parent) == [group]
        assert left.wait(timeout=30) == -signal.SIGKILL
        assert not group.exists()
    finally:
        left.kill()
        left.wait()
        if group.exists():
            group.rmdir()


async def test_templates_are_bounded(tmp_path: Path) -> None:
    """A long-lived runner sees many specs: old templates go, the newest stay usable."""
    from aqe.sandbox._base import MAX_TEMPLATES

    box = open_sandbox("process")
    specs = [SandboxSpec(source=str(tmp_path), env={"N": str(n)}) for n in range(MAX_TEMPLATES + 3)]
    for spec in specs:
        assert (await box.run(spec, ["sh", "-c", 'echo "$N"'])).stdout == f"{spec.env['N']}\n"
    kept = list(box._templates.values())  # type: ignore[attr-defined]
    assert len(kept) == MAX_TEMPLATES
    assert all(path.is_dir() for path in kept)
    assert len(box._owned) == MAX_TEMPLATES  # type: ignore[attr-defined]
    assert (await box.run(specs[0], ["true"])).ok  # evicted: prepared again
    box.close()  # type: ignore[attr-defined]
    assert not any(path.exists() for path in kept)


def test_a_dead_runs_directories_are_swept(tmp_path: Path) -> None:
    from aqe.sandbox._workcopy import sweep_dead_dirs

    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = tmp_path / f"aqe-sandbox-template-{gone.pid}-abc123"
    live = tmp_path / f"aqe-sandbox-run-{os.getpid()}-def456"
    other = tmp_path / "aqe-sandbox-notes"
    for path in (dead / "work", live / "work", other):
        path.mkdir(parents=True)
    assert sweep_dead_dirs(tmp_path) == [dead]
    assert live.is_dir()
    assert other.is_dir()


async def test_an_interpreter_kept_under_tmp_runs_in_every_backend(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    # A CI checkout under /tmp has its virtualenv there too; the namespace backend's
    # private /tmp hid it ("bwrap: execvp .../.venv/bin/python3: No such file").
    assert tmp_path.is_relative_to("/tmp")
    venv = tmp_path / "venv"
    venv_module.create(venv, with_pip=False, symlinks=True)
    source = tmp_path / "src"
    source.mkdir()
    result = await sandbox.run(
        SandboxSpec(source=str(source), backend=sandbox.name, limits=Limits(wall_s=60.0)),
        [str(venv / "bin" / "python"), "-c", "import sys; print(sys.prefix)"],
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(venv)
