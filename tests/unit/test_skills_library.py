"""The skill library: loading, levels, the checks, example extraction (no I/O but files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aqe.errors import SkillError
from aqe.skills.check import check_library
from aqe.skills.examples import extract_blocks
from aqe.skills.library import load_library, load_skill, skills_root

GOOD = """---
name: {name}
version: 1.0.0
description: A skill used by the tests of the skill library.
category: operations
tags: [test]
related: [{related}]
---

# {name}

Overview.

## Level 1: Quick start

```bash
echo one
```

<!-- aqe-skip: needs a remote CI service -->
```python
print("never run here")
```

## Level 2: Core concepts

```toml
not = "an example"
```

## Level 3: Advanced

```sh
echo three
```
"""


def _library(tmp_path: Path, skills: dict[str, str], index: str | None = None) -> Path:
    root = tmp_path / "skills"
    for name, text in skills.items():
        (root / name).mkdir(parents=True)
        (root / name / "SKILL.md").write_text(text)
    links = "\n".join(f"- [{n}]({n}/SKILL.md)" for n in skills)
    (root / "README.md").write_text(index if index is not None else f"# index\n{links}\n")
    return root


def test_the_shipped_library_is_valid_and_has_25_skills() -> None:
    skills, problems = check_library()
    assert [str(p) for p in problems] == []
    assert len(skills) >= 25
    assert all(set(s.levels) == {1, 2, 3} for s in skills)
    # Every skill teaches something runnable: at least one example that is not marked.
    assert all(any(b.skip is None for b in extract_blocks(s)) for s in skills)


def test_levels_disclose_progressively(tmp_path: Path) -> None:
    root = _library(tmp_path, {"a-skill": GOOD.format(name="a-skill", related="")})
    (skill,) = load_library(root)
    one, two, three = (skill.text(n) for n in (1, 2, 3))
    assert "Overview." in one
    assert "echo one" in one
    assert "Level 2" not in one
    assert one.rstrip() in two
    assert "Level 3" not in two
    assert two.rstrip() in three
    assert "echo three" in three
    with pytest.raises(SkillError, match="no level 4"):
        skill.text(4)


def test_blocks_are_extracted_in_order_with_markers(tmp_path: Path) -> None:
    root = _library(tmp_path, {"a-skill": GOOD.format(name="a-skill", related="")})
    blocks = extract_blocks(load_skill(root / "a-skill"))
    assert [(b.lang, b.skip) for b in blocks] == [
        ("bash", None),
        ("python", "needs a remote CI service"),
        ("bash", None),
    ]
    assert blocks[0].code == "echo one\n"
    assert blocks[0].line == 16


def test_check_reports_each_problem_with_file_and_line(tmp_path: Path) -> None:
    bad = GOOD.format(name="wrong-name", related="missing-skill").replace(
        "version: 1.0.0", "version: one"
    )
    root = _library(
        tmp_path,
        {"b-skill": bad, "c-skill": GOOD.format(name="c-skill", related="")},
        index="# index\n- [b-skill](b-skill/SKILL.md)\n- [gone](gone/SKILL.md)\n",
    )
    _, problems = check_library(root)
    text = "\n".join(str(p) for p in problems)
    assert "b-skill/SKILL.md:3: version: 'one' does not match" in text
    assert "b-skill/SKILL.md:2: name 'wrong-name' is not the folder's name 'b-skill'" in text
    assert "b-skill/SKILL.md:7: related skill 'missing-skill' does not exist" in text
    assert "skill 'c-skill' is not linked from the index (unreachable)" in text
    assert "link to 'gone/SKILL.md': no such file" in text


def test_bad_frontmatter_names_the_line(tmp_path: Path) -> None:
    root = _library(tmp_path, {"d-skill": "---\nname: [unclosed\n---\n# d\n"})
    with pytest.raises(SkillError, match=r"d-skill/SKILL.md:\d+: frontmatter is not valid YAML"):
        load_skill(root / "d-skill")
    _, problems = check_library(root)
    assert any("not valid YAML" in str(p) for p in problems)


def test_an_unclosed_fence_is_an_error(tmp_path: Path) -> None:
    text = GOOD.format(name="e-skill", related="") + "\n```bash\necho never closed\n"
    root = _library(tmp_path, {"e-skill": text})
    with pytest.raises(SkillError, match="never closed"):
        extract_blocks(load_skill(root / "e-skill"))


def test_library_location_env_and_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _library(tmp_path, {"a-skill": GOOD.format(name="a-skill", related="")})
    monkeypatch.setenv("AQE_SKILLS_DIR", str(root))
    assert skills_root() == root
    monkeypatch.setenv("AQE_SKILLS_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(SkillError, match="not a skill library"):
        skills_root()


def test_install_copies_folders_and_refuses_to_overwrite(tmp_path: Path) -> None:
    from aqe.skills.install import install_skills

    root = _library(tmp_path, {"a-skill": GOOD.format(name="a-skill", related="")})
    (root / "a-skill" / "scripts").mkdir()
    (root / "a-skill" / "scripts" / "run.py").write_text("print(1)\n")
    skills = load_library(root)
    target = tmp_path / "agent" / "skills"
    assert install_skills(skills, target) == [target / "a-skill"]
    assert (target / "a-skill" / "SKILL.md").read_text() == (
        root / "a-skill" / "SKILL.md"
    ).read_text()
    assert (target / "a-skill" / "scripts" / "run.py").is_file()
    (target / "a-skill" / "stale.txt").write_text("old")
    with pytest.raises(SkillError, match="already installed there \\(a-skill\\); --force"):
        install_skills(skills, target)
    install_skills(skills, target, force=True)
    assert not (target / "a-skill" / "stale.txt").exists()
