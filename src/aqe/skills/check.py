"""``aqe skills check``: the library is valid, linked and reachable.

Checks, each reported with the file and line at fault:

* the frontmatter matches ``skill.schema.json`` (JSON Schema 2020-12) and its name is
  the folder's name;
* the body has the three level sections, in order;
* every ``related`` name is a skill (not itself), and every relative link in a
  SKILL.md or the index names an existing file;
* every skill is linked from the index (``README.md``), and the index links nothing
  that is not a skill.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from aqe.errors import SkillError
from aqe.skills.library import INDEX, LEVELS, SKILL_FILE, Skill, load_skill, skills_root

__all__ = ["Problem", "check_library", "skill_schema"]

_LINK_RE = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")


@dataclass(frozen=True)
class Problem:
    """One thing wrong, where it is."""

    path: Path
    line: int | None
    message: str

    def __str__(self) -> str:
        return (
            f"{self.path}:{self.line}: {self.message}"
            if self.line
            else f"{self.path}: {self.message}"
        )


@cache
def skill_schema() -> dict[str, Any]:
    """The frontmatter's JSON Schema (shipped beside this module)."""
    text = resources.files("aqe.skills").joinpath("skill.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _frontmatter_line(skill: Skill, key: str) -> int:
    """The line of SKILL.md where ``key:`` is set in the frontmatter (else the first)."""
    for number, line in enumerate(skill.file.read_text("utf-8").splitlines()[: skill.body_line], 1):
        if line.startswith(f"{key}:"):
            return number
    return 1


def _schema_problems(skill: Skill) -> list[Problem]:
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(skill_schema())
    problems = []
    for error in sorted(validator.iter_errors(skill.meta), key=lambda e: list(e.absolute_path)):
        path = list(error.absolute_path)
        key = str(path[0]) if path else ""
        where = ".".join(str(p) for p in path) or "frontmatter"
        problems.append(
            Problem(
                skill.file, _frontmatter_line(skill, key) if key else 1, f"{where}: {error.message}"
            )
        )
    return problems


def _link_problems(file: Path, text: str, first_line: int = 1) -> list[Problem]:
    problems = []
    for number, line in enumerate(text.splitlines(), first_line):
        for target in _LINK_RE.findall(line):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (file.parent / target).exists():
                problems.append(Problem(file, number, f"link to {target!r}: no such file"))
    return problems


def check_library(root: Path | None = None) -> tuple[list[Skill], list[Problem]]:
    """Read and check the whole library.

    Returns:
        The skills that could be read, and every problem found (empty: all good).

    Raises:
        SkillError: There is no library at all.
    """
    root = skills_root(root)
    skills: list[Skill] = []
    problems: list[Problem] = []
    for folder in sorted(root.iterdir()):
        if not folder.is_dir() or folder.name.startswith((".", "_")):
            continue
        try:
            skills.append(load_skill(folder))
        except SkillError as exc:
            problems.append(Problem(exc.path or folder, exc.line, exc.reason))
    names = {s.name for s in skills}
    for skill in skills:
        problems += _schema_problems(skill)
        if skill.meta.get("name") != skill.path.name:
            problems.append(
                Problem(
                    skill.file,
                    _frontmatter_line(skill, "name"),
                    f"name {skill.meta.get('name')!r} is not the folder's name {skill.path.name!r}",
                )
            )
        missing = [n for n in LEVELS if n not in skill.levels]
        if missing:
            problems.append(
                Problem(
                    skill.file,
                    None,
                    "missing level section(s) "
                    + ", ".join(f"'## Level {n}: ...'" for n in missing),
                )
            )
        for other in skill.related:
            if other == skill.name:
                problems.append(
                    Problem(skill.file, _frontmatter_line(skill, "related"), "related to itself")
                )
            elif other not in names:
                problems.append(
                    Problem(
                        skill.file,
                        _frontmatter_line(skill, "related"),
                        f"related skill {other!r} does not exist",
                    )
                )
        body = "\n".join(skill.file.read_text("utf-8").splitlines()[skill.body_line - 1 :])
        problems += _link_problems(skill.file, body, skill.body_line)
    problems += _index_problems(root, names)
    return skills, problems


def _index_problems(root: Path, names: set[str]) -> list[Problem]:
    index = root / INDEX
    text = index.read_text("utf-8")
    problems = _link_problems(index, text)
    linked = {
        target.split("/")[0]
        for target in _LINK_RE.findall(text)
        if target.endswith(f"/{SKILL_FILE}")
    }
    problems += [
        Problem(index, None, f"skill {name!r} is not linked from the index (unreachable)")
        for name in sorted(names - linked)
    ]
    problems += [
        Problem(index, None, f"the index links {name!r}, which is not a skill")
        for name in sorted(linked - names)
    ]
    return problems
