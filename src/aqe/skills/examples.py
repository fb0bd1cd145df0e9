"""Every example in a skill runs: extract the fenced blocks, run them in order.

Each fenced ``bash`` (or ``sh``) and ``python`` block of a SKILL.md is an example.
:func:`run_examples` runs one skill's blocks in the order they appear, in one fresh
working directory, with ``AQE_DATA_DIR`` inside it (so the first command that needs
the log starts an embedded nats-server there, stopped at the end) and the running
interpreter's ``bin/`` first on ``PATH`` (so ``aqe`` and ``python`` are this
installation's). A bash block runs under ``set -euo pipefail``: any failing command
fails it. The first failing block stops the skill (the blocks after it build on it).

A block that cannot run here (it needs a remote CI service, a second machine, a
container engine) is preceded by a marker naming the reason, on the last non-blank
line before its fence::

    <!-- aqe-skip: needs a GitLab runner -->

Marked blocks are counted, never run. Blocks of other languages (toml, json, text)
are documentation only.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from aqe.errors import SkillError
from aqe.skills.library import Skill, skills_root

__all__ = [
    "RUNNABLE",
    "Block",
    "BlockResult",
    "SkillRun",
    "extract_blocks",
    "run_examples",
]

RUNNABLE = {"bash": "bash", "sh": "bash", "python": "python"}
_FENCE_RE = re.compile(r"^(`{3,}|~{3,})\s*([\w+-]*)")
_SKIP_RE = re.compile(r"^<!--\s*aqe-skip:\s*(.+?)\s*-->$")
_OUTPUT_TAIL = 4000

Status = Literal["passed", "failed", "marked", "not run"]


@dataclass(frozen=True)
class Block:
    """One runnable fenced block."""

    skill: str
    file: Path
    line: int
    """The line of the opening fence."""
    lang: str
    """``bash`` or ``python``."""
    code: str
    skip: str | None = None
    """The marker's reason, when the block is marked as not runnable here."""

    @property
    def where(self) -> str:
        """``file:line`` of the block."""
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class BlockResult:
    """What running (or not running) one block gave."""

    block: Block
    status: Status
    exit_code: int | None = None
    seconds: float = 0.0
    output: str = ""
    """The tail of stdout and stderr together."""


@dataclass
class SkillRun:
    """One skill's examples, run in order."""

    skill: str
    results: list[BlockResult] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: Status) -> int:
        """How many blocks ended with ``status``."""
        return sum(r.status == status for r in self.results)

    @property
    def ok(self) -> bool:
        """No block failed or was left unrun."""
        return not any(r.status in ("failed", "not run") for r in self.results)

    def summary(self) -> dict[str, object]:
        """Counts per status and the failure, for ``--json`` and reports."""
        failed = next((r for r in self.results if r.status == "failed"), None)
        return {
            "skill": self.skill,
            "blocks": len(self.results),
            "executed": self.count("passed") + self.count("failed"),
            "passed": self.count("passed"),
            "failed": self.count("failed"),
            "marked": self.count("marked"),
            "not_run": self.count("not run"),
            "seconds": round(self.seconds, 2),
            "failure": None
            if failed is None
            else {
                "where": failed.block.where,
                "exit_code": failed.exit_code,
                "output": failed.output,
            },
            "marks": [r.block.skip for r in self.results if r.status == "marked"],
        }


def extract_blocks(skill: Skill) -> list[Block]:
    """The runnable fenced blocks of ``skill``'s SKILL.md, in order.

    Raises:
        SkillError: A fence is never closed (names the file and line).
    """
    lines = skill.file.read_text("utf-8").splitlines()
    blocks: list[Block] = []
    index = skill.body_line - 1
    while index < len(lines):
        match = _FENCE_RE.match(lines[index])
        if not match:
            index += 1
            continue
        fence, lang = match[1], match[2].lower()
        start = index
        end = next(
            (
                i
                for i in range(start + 1, len(lines))
                if lines[i].strip().startswith(fence[0] * len(fence))
                and not lines[i].strip().strip(fence[0])
            ),
            None,
        )
        if end is None:
            raise SkillError(
                f"code block opened here ({fence}{lang}) is never closed", skill.file, start + 1
            )
        if lang in RUNNABLE:
            marker = next(
                (lines[i].strip() for i in range(start - 1, -1, -1) if lines[i].strip()), ""
            )
            skip = _SKIP_RE.match(marker)
            blocks.append(
                Block(
                    skill=skill.name,
                    file=skill.file,
                    line=start + 1,
                    lang=RUNNABLE[lang],
                    code="\n".join(lines[start + 1 : end]) + "\n",
                    skip=skip[1] if skip else None,
                )
            )
        index = end + 1
    return blocks


def example_env(
    workdir: Path, library: Path, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment the blocks run in: no outside ``AQE_*``, this aqe on PATH."""
    env = {
        k: v
        for k, v in (base if base is not None else os.environ).items()
        if not k.startswith("AQE_")
    }
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env["AQE_DATA_DIR"] = str(workdir / ".aqe")
    env["AQE_SKILLS_DIR"] = str(library)
    env.setdefault("COLUMNS", "160")
    env.pop("VIRTUAL_ENV", None)
    return env


def _run_block(
    block: Block, workdir: Path, env: Mapping[str, str], timeout_s: float
) -> BlockResult:
    script = workdir / f".block-{block.line}.{'py' if block.lang == 'python' else 'sh'}"
    script.write_text(block.code if block.lang == "python" else "set -euo pipefail\n" + block.code)
    argv = [sys.executable, str(script)] if block.lang == "python" else ["bash", str(script)]
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=workdir,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a timeout kills the whole group (background jobs too)
    )
    try:
        out, _ = proc.communicate(timeout=timeout_s)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        out += f"\n[aqe: block killed after {timeout_s:.0f} s]\n".encode()
        code = None
    finally:
        # Whatever the block left running in its session (a `&` it did not wait for) goes.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    text = out.decode("utf-8", "replace")
    return BlockResult(
        block,
        "passed" if code == 0 else "failed",
        exit_code=code,
        seconds=time.monotonic() - started,
        output=text[-_OUTPUT_TAIL:],
    )


def run_examples(
    skill: Skill,
    workdir: Path,
    *,
    library: Path | None = None,
    timeout_s: float = 300.0,
    env: Mapping[str, str] | None = None,
    on_block: Callable[[BlockResult], None] | None = None,
) -> SkillRun:
    """Run ``skill``'s examples in order in ``workdir`` (created; left for inspection).

    Args:
        skill: The skill.
        workdir: A fresh folder for this skill alone.
        library: The skill library (default: :func:`aqe.skills.library.skills_root`).
        timeout_s: Seconds one block may take before it is killed and fails.
        env: Base environment (default: this process's).
        on_block: Called with each block's result as it ends.

    Returns:
        Each block's result; blocks after a failure are ``not run``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    run_env = example_env(workdir, library or skills_root(), env)
    outcome = SkillRun(skill.name)
    started = time.monotonic()
    failed = False
    try:
        for block in extract_blocks(skill):
            if block.skip is not None:
                result = BlockResult(block, "marked")
            elif failed:
                result = BlockResult(block, "not run")
            else:
                result = _run_block(block, workdir, run_env, timeout_s)
                failed = result.status == "failed"
            outcome.results.append(result)
            if on_block is not None:
                on_block(result)
    finally:
        if (workdir / ".aqe" / "server").exists():
            subprocess.run(
                [sys.executable, "-m", "aqe.cli", "server", "stop"],
                cwd=workdir,
                env=run_env,
                capture_output=True,
                timeout=60,
                check=False,
            )
        outcome.seconds = time.monotonic() - started
    return outcome
