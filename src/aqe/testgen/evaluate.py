"""Prepare a real package with part of its test suite removed, for a before/after measure.

Some packages ship their tests inside the package (toolz: ``toolz/tests``). The
evaluation copies the installed package into a project folder, deletes the named test
files, and describes the batch that measures the rest of the suite, generates tests for
the modules that lost theirs, and measures again: :func:`prepare_package`.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Sequence
from pathlib import Path

import msgspec

from aqe.errors import ConfigError

__all__ = ["PreparedProject", "prepare_package"]


class PreparedProject(msgspec.Struct, frozen=True, kw_only=True):
    """A copy of an installed package with some of its test files removed."""

    source: str
    package: str
    tests: tuple[str, ...]
    """The remaining suite, as pytest arguments relative to ``source``."""
    omit: str
    removed: tuple[str, ...]


def prepare_package(
    package: str, dest: Path, *, remove: Sequence[str], tests_dir: str = "tests"
) -> PreparedProject:
    """Copy installed ``package`` to ``dest/<package>`` without the test files ``remove``.

    Raises:
        ConfigError: the package is not installed, is a single module, has no
            ``tests_dir``, or a file to remove is not in it.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"testgen eval: {package!r} is not an installed package")
    origin = Path(next(iter(spec.submodule_search_locations)))
    tests = origin / tests_dir
    if not tests.is_dir():
        raise ConfigError(f"testgen eval: {package} has no {tests_dir}/ with its tests ({tests})")
    missing = [name for name in remove if not (tests / name).is_file()]
    if missing:
        raise ConfigError(f"testgen eval: no {', '.join(missing)} in {tests}")
    copy = dest / package
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(origin, copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in remove:
        (copy / tests_dir / name).unlink()
    return PreparedProject(
        source=str(dest),
        package=package,
        tests=(f"{package}/{tests_dir}",),
        omit=f"{package}/{tests_dir}/*",
        removed=tuple(remove),
    )
