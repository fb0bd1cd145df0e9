"""Test generators: a target module, a seed and a budget in, candidate test files out.

A generator never runs anything itself: it says which command writes the tests (run by
the pipeline inside a sandbox, because writing them means importing, and for Pynguin
executing, the module under test) and turns the files that command left into
:class:`Candidate` values, one per test.

* :class:`GhostwriterGenerator` (``ghostwriter``): Hypothesis's ghostwriter, one
  property-based test per public function of the module, in the main environment.
* :class:`PynguinGenerator` (``pynguin``): Pynguin's search-based unit tests. Pynguin
  pins older pytest and black than aqe uses, so it lives in a virtual environment of its
  own (``aqe testgen setup`` creates it; :func:`pynguin_venv` says where).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import msgspec

from aqe.errors import ConfigError
from aqe.testgen._split import split_tests

__all__ = [
    "GENERATORS",
    "PYNGUIN_VERSION",
    "Candidate",
    "Generator",
    "GeneratorCommand",
    "GhostwriterGenerator",
    "PynguinGenerator",
    "generator_names",
    "make_generator",
    "pynguin_venv",
    "setup_pynguin",
]

GENERATORS = ("ghostwriter", "pynguin")
PYNGUIN_VERSION = "0.48.0"
OUT_DIR = "aqe-testgen-out"
"""Where, in the working copy, a generator writes (its files come back as artefacts)."""


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    """One generated test, alone in a module of its own."""

    name: str
    """File name (``test_gw_toolz_itertoolz_groupby.py``)."""
    target: str
    generator: str
    seed: int
    code: str
    unresolved: str = ""
    """Why the test cannot run as written (the ghostwriter left ``st.nothing()``)."""

    def candidate_id(self, batch_id: str) -> str:
        """A stable id: the batch, the generator and the code."""
        digest = hashlib.sha256(f"{batch_id}|{self.generator}|{self.code}".encode())
        return f"gen-{digest.hexdigest()[:24]}"


class GeneratorCommand(msgspec.Struct, frozen=True, kw_only=True):
    """What to run in the sandbox to write the tests."""

    argv: tuple[str, ...]
    env: dict[str, str] = msgspec.field(default_factory=dict)
    wall_s: float = 300.0


class Generator(Protocol):
    """Writes candidate tests for one module (see the module docstring)."""

    name: str

    def command(
        self, target: str, *, seed: int, budget_s: float, max_candidates: int
    ) -> GeneratorCommand:
        """The command that writes tests for ``target`` under :data:`OUT_DIR`."""
        ...

    def candidates(
        self, target: str, *, seed: int, max_candidates: int, files: Mapping[str, bytes]
    ) -> list[Candidate]:
        """The candidates in the files the command wrote (artefacts by relative path)."""
        ...


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_")


def _split_files(
    files: Mapping[str, bytes], *, prefix: str, target: str, generator: str, seed: int
) -> list[Candidate]:
    out: list[Candidate] = []
    for path in sorted(files):
        if not (path.startswith(OUT_DIR + "/") and path.endswith(".py")):
            continue
        code = files[path].decode(errors="replace")
        for test, module in split_tests(code):
            unresolved = "st.nothing()" if "st.nothing()" in module else ""
            name = f"test_{prefix}_{_slug(target)}_{_slug(test.removeprefix('test_'))}.py"
            out.append(
                Candidate(
                    name=name,
                    target=target,
                    generator=generator,
                    seed=seed,
                    code=module,
                    unresolved=unresolved and f"the ghostwriter left {unresolved} in it",
                )
            )
    return out


class GhostwriterGenerator:
    """Hypothesis ghostwriter tests (property-based), one per public function."""

    name = "ghostwriter"

    def __init__(self, python: str = sys.executable) -> None:
        self.python = python

    def command(
        self, target: str, *, seed: int, budget_s: float, max_candidates: int
    ) -> GeneratorCommand:
        """``python -m aqe.testgen._ghostwrite`` for ``target``."""
        argv = (
            self.python,
            "-m",
            "aqe.testgen._ghostwrite",
            "--module",
            target,
            "--out",
            OUT_DIR,
            "--seed",
            str(seed),
            "--max",
            str(max_candidates),
        )
        return GeneratorCommand(argv=argv, wall_s=max(60.0, budget_s))

    def candidates(
        self, target: str, *, seed: int, max_candidates: int, files: Mapping[str, bytes]
    ) -> list[Candidate]:
        """One candidate per test the ghostwriter wrote."""
        found = _split_files(files, prefix="gw", target=target, generator=self.name, seed=seed)
        return found[: max_candidates * 2]  # a function may get two tests (round trips)


def pynguin_venv(data_dir: Path) -> Path:
    """Where ``aqe testgen setup`` puts Pynguin's own virtual environment."""
    return data_dir / "tools" / "pynguin"


def setup_pynguin(venv: Path, *, python: str = "python3") -> Path:
    """Create ``venv`` with Pynguin installed from the package index; return its binary.

    Raises:
        ConfigError: the venv could not be created or pip failed (with pip's output).
    """
    binary = venv / "bin" / "pynguin"
    if binary.exists():
        return binary
    steps = [
        [python, "-m", "venv", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"pynguin=={PYNGUIN_VERSION}"],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ConfigError(
                f"pynguin setup: {' '.join(step)} failed (exit {done.returncode}): "
                f"{(done.stderr or done.stdout)[-1500:].strip()}"
            )
    return binary


class PynguinGenerator:
    """Pynguin's search-based unit tests, run from its own virtual environment."""

    name = "pynguin"

    def __init__(self, venv: Path) -> None:
        self.venv = venv

    def binary(self) -> Path:
        """The ``pynguin`` executable.

        Raises:
            ConfigError: the venv is missing, with the command that creates it.
        """
        binary = self.venv / "bin" / "pynguin"
        if not os.access(binary, os.X_OK):
            raise ConfigError(
                f"pynguin is not installed at {self.venv}: run `aqe testgen setup` "
                f"(it creates that venv with pynguin=={PYNGUIN_VERSION}; Pynguin pins older "
                "pytest and black than aqe, so it cannot share aqe's environment)"
            )
        return binary

    def command(
        self, target: str, *, seed: int, budget_s: float, max_candidates: int
    ) -> GeneratorCommand:
        """``pynguin`` on ``target`` for ``budget_s`` seconds of search."""
        # Resolved: the namespace sandbox binds back the real folder under /tmp, not a link.
        argv = (
            str(self.binary().resolve()),
            "--project-path",
            ".",
            "--module-name",
            target,
            "--output-path",
            OUT_DIR,
            "--maximum-search-time",
            str(max(1, int(budget_s))),
            "--seed",
            str(seed),
            # Plain value assertions: mutation analysis (the default) costs minutes more.
            "--assertion-generation",
            "SIMPLE",
            # A generated call that hangs (an infinite iterator) is cut after 2 s.
            "--maximum_test_execution_timeout",
            "2",
        )
        # Pynguin runs the module under test and refuses to without this acknowledgement;
        # the sandbox is what makes that acceptable.
        env = {"PYNGUIN_DANGER_AWARE": "1"}
        return GeneratorCommand(argv=argv, env=env, wall_s=budget_s + 240.0)

    def candidates(
        self, target: str, *, seed: int, max_candidates: int, files: Mapping[str, bytes]
    ) -> list[Candidate]:
        """One candidate per ``test_*`` function Pynguin wrote, at most ``max_candidates``."""
        found = _split_files(files, prefix="pn", target=target, generator=self.name, seed=seed)
        return found[:max_candidates]


def make_generator(name: str, *, data_dir: Path, python: str = sys.executable) -> Generator:
    """The generator called ``name``.

    Raises:
        ConfigError: an unknown name.
    """
    if name == "ghostwriter":
        return GhostwriterGenerator(python)
    if name == "pynguin":
        return PynguinGenerator(pynguin_venv(data_dir))
    raise ConfigError(f"unknown test generator {name!r}; known: {', '.join(GENERATORS)}")


def generator_names(raw: str | Sequence[str]) -> tuple[str, ...]:
    """Names from ``"ghostwriter,pynguin"`` (or a sequence), checked.

    Raises:
        ConfigError: an unknown or no name.
    """
    names = [n.strip() for n in (raw.split(",") if isinstance(raw, str) else raw) if n.strip()]
    bad = [n for n in names if n not in GENERATORS]
    if bad or not names:
        raise ConfigError(
            f"generators {','.join(names) or '(none)'}: choose from {', '.join(GENERATORS)}"
        )
    return tuple(dict.fromkeys(names))
