"""What the keep rule costs per candidate, against plain reruns of the same test.

Usage::

    python tests/benchmarks/bench_testgen.py [--rounds R] [--runs N] [--json]

For each sandbox backend that works here and each round (arms alternated so machine
noise hits both alike), one generated-style test of a small module is

* **plain**: run ``N`` times with ``python -m pytest``, each in its own fresh sandbox
  copy (what N reruns cost anyway: the baseline);
* **judged**: judged as the keep rule does, ``N`` runs in a fresh copy under coverage
  (``--branch``) with the coverage JSON read back (``aqe.testgen.pipeline``).

It prints the median seconds per candidate and the ratio judged / plain. The script
reports; it never fails on a number (exit 0), only on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from aqe.sandbox import Limits, SandboxSpec, available_backends, open_sandbox
from aqe.testgen.generators import Candidate
from aqe.testgen.pipeline import GenerationJob, evaluate_candidate

MODULE = """
def classify(n):
    if n < 0:
        return "negative"
    if n == 0:
        return "zero"
    return "positive"
"""

TEST = """
import shapes


def test_classify():
    assert shapes.classify(-1) == "negative"
    assert shapes.classify(0) == "zero"
"""


async def one_backend(
    backend: str, source: Path, plain_source: Path, rounds: int, runs: int
) -> dict[str, float]:
    box = open_sandbox(backend)
    cand = Candidate(
        name="test_shapes_gen.py", target="shapes", generator="bench", seed=0, code=TEST
    )
    job = GenerationJob(
        source=str(source), package="shapes", targets=("shapes",), backend=backend, runs=runs
    )
    env = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    spec = SandboxSpec(
        source=str(plain_source), backend=backend, env=env, limits=Limits(wall_s=120)
    )
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_shapes_gen.py"]

    async def plain() -> None:
        for _ in range(runs):
            done = await box.run(spec, argv)
            if done.exit_code != 0:
                raise RuntimeError(done.stdout[-500:])

    async def judged() -> None:
        found = await evaluate_candidate(job, box, cand)
        if found.measurement is None or found.measurement.passed != runs:
            raise RuntimeError(f"{found.stopped} {found.error}")

    await plain()
    await judged()  # warm: templates, imports
    times: dict[str, list[float]] = {"plain": [], "judged": []}
    for r in range(rounds):
        arms = [("plain", plain), ("judged", judged)]
        for name, arm in arms if r % 2 == 0 else reversed(arms):
            began = time.perf_counter()
            await arm()
            times[name].append(time.perf_counter() - began)
    box.close()  # type: ignore[attr-defined]
    p, j = statistics.median(times["plain"]), statistics.median(times["judged"])
    return {"plain_s": round(p, 3), "judged_s": round(j, 3), "ratio": round(j / p, 2)}


async def main(rounds: int, runs: int) -> dict[str, dict[str, float]]:
    source = Path(tempfile.mkdtemp(prefix="aqe-bench-testgen-"))
    (source / "shapes.py").write_text(MODULE)
    plain_source = Path(tempfile.mkdtemp(prefix="aqe-bench-testgen-plain-"))
    (plain_source / "shapes.py").write_text(MODULE)
    (plain_source / "test_shapes_gen.py").write_text(TEST)
    return {
        backend: await one_backend(backend, source, plain_source, rounds, runs)
        for backend in available_backends()
        if backend != "container"
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(main(args.rounds, args.runs))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"one candidate, {args.runs} runs, median of {args.rounds} rounds:")
        for backend, row in result.items():
            print(
                f"  {backend:<10} plain {row['plain_s']:.2f} s   judged {row['judged_s']:.2f} s"
                f"   judged/plain {row['ratio']:.2f}x"
            )
