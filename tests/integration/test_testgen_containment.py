"""Hostile "generated" tests go through the keep pipeline and stay in their sandbox.

The approach of ``test_sandbox_containment.py``, through the test-generation path: a
generator hands the pipeline tests that pass only if their attack works (write outside
the working copy, plant a file in the interpreter's site-packages, reach a listener on
the host's loopback, read a secret from aqe's environment or from a file under the
host's /tmp, run forever). Under the ``namespace`` backend every one fails or is
stopped, none is kept, and the host shows no trace of them.
"""

from __future__ import annotations

import socket
import sys
import sysconfig
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from aqe.events.testgen import GeneratedTestRejected
from aqe.sandbox import SandboxUnavailableError, open_sandbox
from aqe.testgen.generators import Candidate, GeneratorCommand
from aqe.testgen.pipeline import GenerationJob, batch_events, run_batch

pytestmark = pytest.mark.timeout(180)

SECRET = f"s3cret-{uuid.uuid4().hex}"


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        yield sock


def attacks(
    home_file: Path, site_file: Path, outside: Path, port: int, secret_file: Path
) -> dict[str, str]:
    return {
        "write_home": f"def test_write_home():\n    open({str(home_file)!r}, 'w').write('x')\n",
        "plant_site_packages": (
            f"def test_plant():\n    open({str(site_file)!r}, 'w').write('import os\\n')\n"
        ),
        "write_outside": (
            "import pathlib\n\n\ndef test_outside():\n"
            f"    pathlib.Path({str(outside)!r}).write_text('x')\n"
        ),
        "network": (
            "import socket\n\n\ndef test_connect():\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=5).close()\n"
        ),
        "secret_env": (
            "import os\n\n\ndef test_secret():\n"
            f"    assert os.environ.get('AQE_TESTGEN_SECRET') == {SECRET!r}\n"
        ),
        "secret_file": (
            f"def test_secret_file():\n    assert open({str(secret_file)!r}).read() == {SECRET!r}\n"
        ),
        "forever": "import time\n\n\ndef test_forever():\n    time.sleep(3600)\n",
    }


class HostileGenerator:
    """A generator whose tests attack the machine (its own command writes nothing)."""

    name = "hostile"

    def __init__(self, codes: Mapping[str, str]) -> None:
        self.codes = codes

    def command(
        self, target: str, *, seed: int, budget_s: float, max_candidates: int
    ) -> GeneratorCommand:
        return GeneratorCommand(argv=(sys.executable, "-c", "pass"), wall_s=30)

    def candidates(
        self, target: str, *, seed: int, max_candidates: int, files: Mapping[str, bytes]
    ) -> list[Candidate]:
        return [
            Candidate(
                name=f"test_h_{key}.py", target=target, generator=self.name, seed=seed, code=code
            )
            for key, code in self.codes.items()
        ]


async def test_hostile_generated_tests_are_contained_and_not_kept(
    tmp_path: Path, listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    try:
        box = open_sandbox("namespace")
    except SandboxUnavailableError as exc:
        pytest.skip(str(exc))
    monkeypatch.setenv("AQE_TESTGEN_SECRET", SECRET)
    project = tmp_path / "proj"
    project.mkdir()
    (project / "victim.py").write_text("def f(x):\n    return x + 1\n")
    (project / "test_victim.py").write_text(
        "import victim\n\n\ndef test_f():\n    assert victim.f(1) == 2\n"
    )
    token = uuid.uuid4().hex
    home_file = Path.home() / f".aqe-testgen-pwned-{token}"
    site_file = Path(sysconfig.get_paths()["purelib"]) / f"aqe_pwned_{token}.pth"
    outside = tmp_path / f"outside-{token}"
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(SECRET)
    codes = attacks(home_file, site_file, outside, listener.getsockname()[1], secret_file)
    job = GenerationJob(
        source=str(project),
        package="victim",
        targets=("victim",),
        generators=("hostile",),
        tests=("test_victim.py",),
        runs=3,
        backend="namespace",
        candidate_wall_s=5.0,
    )
    try:
        result = await run_batch(job, box, {"hostile": HostileGenerator(codes)})
    finally:
        box.close()
    reasons = {v.candidate.name: v.reason for v in result.verdicts}
    assert reasons == {
        **{f"test_h_{k}.py": "failed" for k in codes if k != "forever"},
        "test_h_forever.py": "stopped: wall-time",
    }
    assert result.kept == {"hostile": 0}
    # Nothing reached the host.
    assert not home_file.exists()
    assert not site_file.exists()
    assert not outside.exists()
    with pytest.raises(BlockingIOError):
        listener.accept()
    # The rejections are events, each with the reason and the failing run's output.
    rejected = [e for e in batch_events(result) if isinstance(e, GeneratedTestRejected)]
    assert len(rejected) == len(codes)
    by_name = {e.name: e for e in rejected}
    assert "Read-only file system" in by_name["test_h_plant_site_packages.py"].detail
    assert by_name["test_h_network.py"].passed == 0
