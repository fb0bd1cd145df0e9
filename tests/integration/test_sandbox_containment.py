"""Containment, per backend this machine has: what a hostile or runaway test does is stopped.

Every program that would run without end (forks, allocates, sleeps) is itself bounded AND
only ever runs inside a sandbox whose limits stop it first: a sandbox that cannot enforce
a process limit refuses to run (SandboxUnavailableError) rather than run it unbounded.
After each stop, the same sandbox object runs a plain command, which must work.
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from aqe.sandbox import (
    BACKENDS,
    Limits,
    Sandbox,
    SandboxResult,
    SandboxSpec,
    SandboxUnavailableError,
    open_sandbox,
)
from aqe.sandbox._cgroup import cgroup_parent

PY = sys.executable


@pytest.fixture(params=BACKENDS)
def sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    try:
        box = open_sandbox(request.param)
    except SandboxUnavailableError as exc:
        pytest.skip(str(exc))
    yield box
    box.close()  # type: ignore[attr-defined]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "README").write_text("a working copy\n")
    return src


def spec_for(source: Path, **limits: object) -> SandboxSpec:
    return SandboxSpec(source=str(source), limits=Limits(**{"wall_s": 60.0, **limits}))  # type: ignore[arg-type]


async def run_py(box: Sandbox, spec: SandboxSpec, code: str, *args: str) -> SandboxResult:
    return await box.run(spec, [PY, "-c", code, *args])


async def still_works(box: Sandbox, source: Path) -> None:
    """The next run in the same sandbox object starts clean and succeeds."""
    done = await run_py(box, spec_for(source), "print(open('README').read().strip())")
    assert done.exit_code == 0, done
    assert done.stdout.strip() == "a working copy"
    assert done.stopped is None


def processes_with(token: str) -> list[int]:
    """Host pids whose command line holds ``token`` (what a run left behind)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if token.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


# --- the network --------------------------------------------------------------------------

CONNECT = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(10)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
except OSError as exc:
    print("blocked:", exc)
    sys.exit(3)
print("connected")
"""


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP listener on the host's loopback: reachable only from the host's network."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


async def test_no_network_unless_asked(sandbox: Sandbox, source: Path, listener: int) -> None:
    if "network" not in sandbox.isolates:
        # Documented (README: Sandboxes): the process backend shares the host's network.
        shared = await run_py(sandbox, spec_for(source), CONNECT, "127.0.0.1", str(listener))
        assert shared.stdout.strip() == "connected", shared
        return
    outside = await run_py(sandbox, spec_for(source), CONNECT, "1.1.1.1", "53")
    assert outside.exit_code == 3, outside
    assert "unreachable" in outside.stdout.lower(), outside.stdout
    host = await run_py(sandbox, spec_for(source), CONNECT, "127.0.0.1", str(listener))
    assert host.exit_code == 3, host  # its loopback is its own, not the host's
    allowed = await run_py(
        sandbox, spec_for(source, network=True), CONNECT, "127.0.0.1", str(listener)
    )
    assert allowed.stdout.strip() == "connected", allowed
    await still_works(sandbox, source)


# --- processes ----------------------------------------------------------------------------

# Bounded (at most 2,000 children), and run only under a pids limit of 32.
FORK_LOOP = """
import os, sys, time
token = sys.argv[1]
for n in range(2000):
    try:
        pid = os.fork()
    except OSError as exc:
        print("fork refused after", n, exc)
        sys.exit(3)
    if pid == 0:
        os.execvp("sleep", ["sleep", token])
print("never refused")
"""


async def test_fork_loop_is_stopped(sandbox: Sandbox, source: Path) -> None:
    token = f"3600.{uuid.uuid4().int % 10**12}"
    done = await run_py(sandbox, spec_for(source, processes=32), FORK_LOOP, token)
    assert done.exit_code == 3, done
    assert "fork refused" in done.stdout
    assert done.stopped == "processes", done
    assert processes_with(token) == [], "children outlived the run"
    await still_works(sandbox, source)


# --- memory -------------------------------------------------------------------------------

# Bounded (1 GiB at most, in touched 8 MiB pieces), and run only under a 200 MiB limit.
ALLOCATE = """
chunks = []
for _ in range(128):
    chunks.append(b"\\x01" * (8 * 1024 * 1024))
print("allocated", len(chunks) * 8, "MiB")
"""


async def test_allocation_is_stopped(sandbox: Sandbox, source: Path) -> None:
    done = await run_py(sandbox, spec_for(source, memory_mb=200), ALLOCATE)
    assert done.exit_code != 0, done
    assert "allocated" not in done.stdout
    if sandbox.name == "container" or cgroup_parent("memory") is not None:
        assert done.stopped == "memory", done
        assert done.signal == signal.SIGKILL
    else:  # RLIMIT_AS: the allocation fails inside the program
        assert "MemoryError" in done.stderr, done
    await still_works(sandbox, source)


# --- the file system ----------------------------------------------------------------------

ESCAPE = """
import sys
escaped = []
for path in sys.argv[1:]:
    try:
        with open(path, "w") as handle:
            handle.write("escaped")
        escaped.append(path)
    except OSError as exc:
        print("refused", path, exc)
print("escaped" if escaped else "contained", *escaped)
sys.exit(1 if escaped else 0)
"""


async def test_writes_outside_are_refused(sandbox: Sandbox, source: Path) -> None:
    if "filesystem" not in sandbox.isolates:
        # Not attempted: this backend would really write there (README: Sandboxes). What
        # it does keep private is HOME and the temp dir, removed after the run.
        done = await run_py(
            sandbox,
            spec_for(source),
            "import os, tempfile; print(os.environ['HOME']); print(tempfile.gettempdir())",
        )
        home, tmp = done.stdout.split()
        real_home = pwd.getpwuid(os.getuid()).pw_dir
        assert home != real_home
        assert Path(home).parent == Path(tmp).parent
        assert not Path(home).exists()  # the run's area is gone
        return
    token = uuid.uuid4().hex[:12]
    targets = [
        f"/etc/aqe-escape-{token}",
        os.path.join(pwd.getpwuid(os.getuid()).pw_dir, f"aqe-escape-{token}"),
        str(source / f"aqe-escape-{token}"),  # the source itself: only its copy is writable
    ]
    try:
        done = await run_py(sandbox, spec_for(source), ESCAPE, *targets)
        assert done.exit_code == 0, done
        assert done.stdout.strip().endswith("contained")
        assert all(not Path(path).exists() for path in targets)
    finally:
        for path in targets:
            Path(path).unlink(missing_ok=True)
    await still_works(sandbox, source)


# --- time ---------------------------------------------------------------------------------


async def test_wall_clock_kills_the_whole_tree(sandbox: Sandbox, source: Path) -> None:
    token = f"3600.{uuid.uuid4().int % 10**12}"
    # A child in its own session (out of the process group) that ignores SIGTERM, and a
    # parent that ignores it too: only SIGKILL of the whole tree ends them.
    never_ends = (
        "import os, signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "subprocess.Popen(['sh', '-c', 'trap \"\" TERM; sleep ' + sys.argv[1]],"
        " start_new_session=True)\n"
        "print('started', flush=True)\n"
        "time.sleep(3600)\n"
    )
    done = await run_py(sandbox, spec_for(source, wall_s=3.0), never_ends, token)
    assert done.stopped == "wall-time", done
    assert done.exit_code is None
    if sandbox.name == "process":
        assert done.signal == signal.SIGKILL  # SIGTERM was ignored: the grace ran out
    else:
        assert done.signal is not None  # the namespace's init took its processes down
    assert "started" in done.stdout
    assert processes_with(token) == [], "a process outlived the run"
    await still_works(sandbox, source)


async def test_cpu_time_limit(sandbox: Sandbox, source: Path) -> None:
    done = await run_py(sandbox, spec_for(source, cpu_s=1), "while True: pass")
    assert done.stopped == "cpu-time", done
    assert done.exit_code is None
    assert done.cpu_s >= 0.9  # counted for the whole tree, bwrap's namespace included
    await still_works(sandbox, source)


async def test_file_size_limit(sandbox: Sandbox, source: Path) -> None:
    done = await sandbox.run(
        spec_for(source, file_mb=1), ["sh", "-c", "exec head -c 5000000 /dev/zero > big"]
    )
    assert done.stopped == "file-size", done
    assert done.signal == signal.SIGXFSZ
    await still_works(sandbox, source)


# --- output, exit codes, artefacts, environment -------------------------------------------

FLOOD = """
import sys
chunk = b"y" * 65536
for _ in range(160):  # 10 MiB on each stream, interleaved: a full pipe would block
    sys.stdout.buffer.write(chunk)
    sys.stderr.buffer.write(chunk)
sys.stdout.flush()
"""


async def test_output_flood_is_capped(sandbox: Sandbox, source: Path) -> None:
    done = await run_py(sandbox, spec_for(source, output_bytes=1000), FLOOD)
    assert done.exit_code == 0, done
    assert done.stdout == "y" * 1000
    assert done.stderr == "y" * 1000
    assert done.stdout_dropped == 160 * 65536 - 1000
    assert done.stderr_dropped == 160 * 65536 - 1000


async def test_exit_code_artefacts_and_scrubbed_env(
    sandbox: Sandbox, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AQE_TEST_SECRET", "hunter2")
    spec = SandboxSpec(
        source=str(source),
        env={"AQE_GIVEN": "yes"},
        limits=Limits(wall_s=60.0),
        artefacts=("**/*.xml", "bench*.json"),
    )
    code = (
        "import os, sys\n"
        "os.makedirs('reports', exist_ok=True)\n"
        "open('reports/junit.xml', 'w').write('<testsuite/>')\n"
        "open('bench-1.json', 'w').write('{}')\n"
        "open('other.txt', 'w').write('not collected')\n"
        "print(os.environ.get('AQE_TEST_SECRET', 'no secret'), os.environ['AQE_GIVEN'])\n"
        "sys.exit(7)\n"
    )
    done = await run_py(sandbox, spec, code)
    assert done.exit_code == 7, done
    assert done.stdout.split() == ["no", "secret", "yes"]
    assert done.artefacts == {"reports/junit.xml": b"<testsuite/>", "bench-1.json": b"{}"}
    assert done.backend == sandbox.name
    assert done.wall_s > 0
    assert done.max_rss_kb > 0
    assert not (source / "reports").exists()  # the source is copied, never written
