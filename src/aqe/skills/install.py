"""``aqe skills install``: copy skills where an agent runtime looks for them."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from aqe.errors import SkillError
from aqe.skills.library import Skill

__all__ = ["install_skills"]

_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")


def install_skills(skills: Sequence[Skill], target: Path, *, force: bool = False) -> list[Path]:
    """Copy each skill's folder (SKILL.md, references/, scripts/) into ``target``.

    Args:
        skills: The skills to copy.
        target: The folder (created if missing); each skill lands in ``target/<name>``.
        force: Replace a skill folder that is already there.

    Returns:
        The folders written, in order.

    Raises:
        SkillError: ``target`` is a file, or a skill's folder exists there and ``force`` is
            not set (nothing is copied then).
    """
    if target.exists() and not target.is_dir():
        raise SkillError("not a folder", target)
    existing = [s.name for s in skills if (target / s.name).exists()]
    if existing and not force:
        shown = ", ".join(existing[:5]) + (" ..." if len(existing) > 5 else "")
        raise SkillError(
            f"{len(existing)} skill(s) already installed there ({shown}); --force replaces them",
            target,
        )
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for skill in skills:
        destination = target / skill.name
        if destination.exists():
            shutil.rmtree(destination)
        shutil.copytree(skill.path, destination, ignore=_IGNORE)
        written.append(destination)
    return written
