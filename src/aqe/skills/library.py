"""Skills: one folder per skill with a ``SKILL.md``, read with progressive disclosure.

A ``SKILL.md`` opens with YAML frontmatter (name, version, description, category,
tags, related: checked against ``skill.schema.json`` by :mod:`aqe.skills.check`),
then a title and a short overview, then three sections an agent loads only as far as
it needs::

    ## Level 1: Quick start       (about 5 minutes)
    ## Level 2: Core concepts     (about 15 minutes)
    ## Level 3: Advanced          (about an hour)

Optional ``references/`` and ``scripts/`` folders sit beside it. The library's
``README.md`` is the index: every skill must be linked from it.

Where the library is found (:func:`skills_root`), first match wins:

1. ``AQE_SKILLS_DIR``;
2. ``aqe/_skills`` inside the installed package (a non-editable install: ``setup.py``
   copies the top-level ``skills/`` there when the wheel is built);
3. ``skills/`` of the source checkout the package is imported from (an editable
   install, or running from the repository).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aqe.errors import SkillError

__all__ = [
    "LEVELS",
    "Skill",
    "find_skill",
    "load_library",
    "load_skill",
    "parse_frontmatter",
    "skills_root",
]

LEVELS = (1, 2, 3)
INDEX = "README.md"
SKILL_FILE = "SKILL.md"
_LEVEL_RE = re.compile(r"^## Level ([1-3])\b.*$", re.MULTILINE)


@dataclass(frozen=True)
class Skill:
    """One skill as read from its folder."""

    path: Path
    """The skill's folder."""
    meta: dict[str, Any]
    """The frontmatter, as parsed (validated by :mod:`aqe.skills.check`)."""
    title: str
    overview: str
    """Everything between the frontmatter and Level 1 (title line included)."""
    levels: dict[int, str] = field(default_factory=dict)
    """Level number -> that section's text, heading included."""
    body_line: int = 1
    """The line of SKILL.md where the body (after the frontmatter) starts."""

    @property
    def name(self) -> str:
        """The skill's name (its folder's name)."""
        return str(self.meta.get("name", self.path.name))

    @property
    def description(self) -> str:
        """The frontmatter's description."""
        return str(self.meta.get("description", ""))

    @property
    def category(self) -> str:
        """The frontmatter's category."""
        return str(self.meta.get("category", ""))

    @property
    def tags(self) -> tuple[str, ...]:
        """The frontmatter's tags."""
        return tuple(str(t) for t in self.meta.get("tags") or ())

    @property
    def related(self) -> tuple[str, ...]:
        """Names of related skills."""
        return tuple(str(t) for t in self.meta.get("related") or ())

    @property
    def file(self) -> Path:
        """The SKILL.md file."""
        return self.path / SKILL_FILE

    def text(self, level: int) -> str:
        """The overview and every level up to ``level`` (progressive disclosure).

        Raises:
            SkillError: ``level`` is not 1, 2 or 3.
        """
        if level not in LEVELS:
            raise SkillError(f"no level {level}: levels are 1, 2 and 3")
        parts = [self.overview.rstrip()]
        parts += [self.levels[n].rstrip() for n in LEVELS if n <= level and n in self.levels]
        return "\n\n".join(p for p in parts if p) + "\n"

    def files(self) -> list[Path]:
        """The skill's other files (references/, scripts/), relative to its folder."""
        return sorted(
            p.relative_to(self.path)
            for p in self.path.rglob("*")
            if p.is_file() and p.name != SKILL_FILE and "__pycache__" not in p.parts
        )

    def summary(self) -> dict[str, Any]:
        """Name, version, category, description, tags, related, levels and other files."""
        return {
            "name": self.name,
            "version": str(self.meta.get("version", "")),
            "category": self.category,
            "description": self.description,
            "tags": list(self.tags),
            "related": list(self.related),
            "levels": sorted(self.levels),
            "files": [str(p) for p in self.files()],
            "path": str(self.path),
        }


def skills_root(start: Path | None = None) -> Path:
    """The skill library's folder (see the module docstring for the order).

    Args:
        start: Look only here (a folder holding the skill folders).

    Raises:
        SkillError: No library was found; the message names every place looked at.
    """
    if start is not None:
        if not (start / INDEX).is_file():
            raise SkillError(f"not a skill library (no {INDEX} index)", start)
        return start
    env = os.environ.get("AQE_SKILLS_DIR")
    if env:
        return skills_root(Path(env))
    package = Path(__file__).resolve().parent.parent
    candidates = [package / "_skills", package.parent.parent / "skills"]
    for candidate in candidates:
        if (candidate / INDEX).is_file():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise SkillError(
        f"no skill library found (looked in AQE_SKILLS_DIR, {looked}); set AQE_SKILLS_DIR "
        "to the skills/ folder of an aqe checkout"
    )


def parse_frontmatter(text: str, path: Path) -> tuple[dict[str, Any], int]:
    """The YAML mapping between the leading ``---`` lines, and the body's first line.

    Raises:
        SkillError: No frontmatter, unterminated, not YAML, or not a mapping.
    """
    import yaml

    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        raise SkillError("no YAML frontmatter: the file must start with a '---' line", path, 1)
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        raise SkillError("frontmatter never closed: no second '---' line", path, 1) from None
    try:
        meta = yaml.safe_load("\n".join(lines[1:end]))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 2 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise SkillError(f"frontmatter is not valid YAML: {problem}", path, line) from None
    if not isinstance(meta, dict):
        raise SkillError("frontmatter must be a YAML mapping (key: value lines)", path, 2)
    return meta, end + 2


def load_skill(folder: Path) -> Skill:
    """Read one skill folder.

    Raises:
        SkillError: No SKILL.md, no frontmatter, or a level section out of order.
    """
    file = folder / SKILL_FILE
    if not file.is_file():
        raise SkillError(f"no {SKILL_FILE}", folder)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SkillError(f"cannot read: {exc}", file) from exc
    meta, body_line = parse_frontmatter(text, file)
    body = "\n".join(text.splitlines()[body_line - 1 :])
    matches = list(_LEVEL_RE.finditer(body))
    overview = body[: matches[0].start()] if matches else body
    levels: dict[int, str] = {}
    for i, match in enumerate(matches):
        number = int(match[1])
        if number in levels or number != len(levels) + 1:
            line = body_line + body.count("\n", 0, match.start())
            raise SkillError(f"'{match[0]}' out of order: levels go 1, 2, 3 once each", file, line)
        end = matches[i + 1].start() if i + 1 < len(matches) else len(body)
        # A level ends at the next level; a later non-level "## " heading stays inside it.
        levels[number] = body[match.start() : end]
    title = next(
        (line[2:].strip() for line in overview.splitlines() if line.startswith("# ")), folder.name
    )
    return Skill(folder, meta, title, overview, levels, body_line)


def load_library(root: Path | None = None) -> list[Skill]:
    """Every skill under the library, sorted by name.

    Raises:
        SkillError: The library is missing, or a skill folder cannot be read.
    """
    root = skills_root(root)
    return [
        load_skill(folder)
        for folder in sorted(root.iterdir())
        if folder.is_dir() and not folder.name.startswith((".", "_"))
    ]


def find_skill(name: str, skills: list[Skill]) -> Skill:
    """The skill called ``name``.

    Raises:
        SkillError: No such skill (the message suggests close names).
    """
    for skill in skills:
        if skill.name == name:
            return skill
    import difflib

    close = difflib.get_close_matches(name, [s.name for s in skills], n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else " (`aqe skills list` names them)"
    raise SkillError(f"no skill named {name!r}{hint}")
