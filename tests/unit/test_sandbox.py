"""Pure parts of aqe.sandbox: specs as data, environments, command lines, accounting."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import msgspec
import pytest

from aqe.sandbox import Limits, SandboxResult, SandboxSpec
from aqe.sandbox._cgroup import RunCgroups
from aqe.sandbox._container import ContainerSandbox
from aqe.sandbox._namespace import bwrap_argv
from aqe.sandbox._supervise import _CappedReader, _why_stopped
from aqe.sandbox._workcopy import RunArea, collect_artefacts, is_git_url, scrubbed_env


def area(root: Path) -> RunArea:
    return RunArea(root, root / "work", root / "home", root / "tmp")


def test_spec_travels_as_data() -> None:
    spec = SandboxSpec(
        source="https://example.invalid/repo.git",
        commit="abc123",
        setup=("pip", "install", "-e", "."),
        backend="namespace",
        limits=Limits(wall_s=30, processes=64, network=True),
        env={"PYTHONHASHSEED": "0"},
    )
    decoded = msgspec.json.decode(msgspec.json.encode(spec), type=SandboxSpec)
    assert decoded == spec
    result = SandboxResult(exit_code=0, artefacts={"junit.xml": b"<x/>"})
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(result), type=SandboxResult) == result
    assert result.ok
    assert not SandboxResult(exit_code=0, stopped="wall-time").ok


@pytest.mark.parametrize(
    ("source", "git"),
    [
        ("https://github.com/x/y.git", True),
        ("git@github.com:x/y.git", True),
        ("file:///srv/repo", True),
        ("ssh://host/repo", True),
        ("/home/me/project", False),
        ("project.git", False),  # a local directory that happens to end in .git
        ("./src", False),
    ],
)
def test_git_urls(source: str, git: bool) -> None:
    assert is_git_url(source) is git


def test_environment_is_scrubbed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    monkeypatch.setenv("PATH", "/opt/bin:/usr/bin")
    env = scrubbed_env(area(tmp_path), {"CI": "1", "PATH": "/custom"})
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert env["HOME"] == str(tmp_path / "home")
    assert env["TMPDIR"] == str(tmp_path / "tmp")
    assert env["CI"] == "1"
    assert env["PATH"] == "/custom"  # the spec's own win
    assert set(env) == {"PATH", "LANG", "HOME", "TMPDIR", "PYTHONDONTWRITEBYTECODE", "CI"}


def test_bwrap_command_line(tmp_path: Path) -> None:
    run = area(tmp_path)
    closed = bwrap_argv(["pytest", "-q"], run, run.work, network=False)
    assert closed[-3:] == ["--", "pytest", "-q"]
    assert "--share-net" not in closed
    assert "--unshare-all" in closed
    # The private /tmp comes before the area's bind, which usually lies under /tmp.
    assert closed.index("--tmpfs", closed.index("/dev")) < closed.index("--bind")
    assert closed[closed.index("--bind") + 1 : closed.index("--bind") + 3] == [str(tmp_path)] * 2
    assert closed[closed.index("--ro-bind") + 1 : closed.index("--ro-bind") + 3] == ["/", "/"]
    assert "--share-net" in bwrap_argv(["true"], run, run.work, network=True)


def test_container_command_line(tmp_path: Path) -> None:
    box = object.__new__(ContainerSandbox)
    box.engine = "docker"
    run = area(tmp_path)
    spec = SandboxSpec(
        source=".",
        image="python:3.12-slim",
        env={"CI": "1"},
        limits=Limits(memory_mb=512, processes=64, cpu_s=30, file_mb=10, open_files=256),
    )
    argv = box.engine_argv(spec, ["pytest"], run, run.work / "tests", "aqe-sandbox-x")
    joined = " ".join(argv)
    assert "--network none" in joined
    assert "--memory 512m --memory-swap 512m" in joined
    assert "--pids-limit 64" in joined
    assert "--ulimit cpu=30:31" in joined
    assert f"--ulimit fsize={10 * 1024 * 1024}:{10 * 1024 * 1024}" in joined
    assert f"-v {run.work}:/work" in joined
    assert "-w /work/tests" in joined
    assert "-e CI=1" in joined
    assert argv[argv.index("--") + 1 :] == ["python:3.12-slim", "pytest"]
    networked = msgspec.structs.replace(spec, limits=Limits(network=True))
    assert "--network bridge" in " ".join(box.engine_argv(networked, ["x"], run, run.work, "n"))


async def test_capped_reader_keeps_the_head_and_counts_the_rest() -> None:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    reader = _CappedReader(10, done)
    for chunk in (b"0123", b"456789ab", b"cdef"):
        reader.data_received(chunk)
    reader.connection_lost(None)
    assert bytes(reader.kept) == b"0123456789"
    assert reader.dropped == 6
    assert done.done()


def no_cgroups() -> RunCgroups:
    groups = object.__new__(RunCgroups)
    groups.pids = None
    groups.memory = None
    return groups


@pytest.mark.parametrize(
    ("exit_code", "sig", "cpu", "limits", "why"),
    [
        (0, None, 5.0, Limits(cpu_s=1), None),
        (None, signal.SIGXCPU, 1.0, Limits(cpu_s=1), "cpu-time"),
        (None, signal.SIGKILL, 2.1, Limits(cpu_s=1), "cpu-time"),
        (None, signal.SIGKILL, 0.1, Limits(cpu_s=1), None),
        (None, signal.SIGXFSZ, 0.1, Limits(), "file-size"),
        (1, None, 0.1, Limits(), None),
    ],
)
def test_why_stopped(
    exit_code: int | None, sig: int | None, cpu: float, limits: Limits, why: str | None
) -> None:
    assert _why_stopped(exit_code, sig, cpu, limits, no_cgroups()) == why


def test_artefacts_stay_inside_the_working_copy(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "reports").mkdir(parents=True)
    (work / "reports" / "junit.xml").write_bytes(b"<testsuite/>")
    (work / "notes.txt").write_text("no")
    secret = tmp_path / "secret.xml"
    secret.write_text("outside")
    (work / "reports" / "leak.xml").symlink_to(secret)
    (work / "linked").symlink_to(tmp_path, target_is_directory=True)
    found = collect_artefacts(work, ("**/*.xml",))
    assert found == {"reports/junit.xml": b"<testsuite/>"}
