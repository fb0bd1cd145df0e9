"""``aqe skills search``: skills found by the pattern library's hybrid search.

Each skill becomes one document of the same engine that searches test patterns
(:class:`aqe.search.engine.PatternSearch`: all-MiniLM-L6-v2 vectors, a tantivy BM25
index with code-aware tokens, weighted RRF). Its name is the skill's title, its
description the frontmatter's description, its tags the skill's tags and category,
and its "code" what Level 1 teaches: the prose and the ``aqe`` / ``pytest`` command
lines of its examples (the rest of an example, such as a report written inline or a
data generator several skills share, would only blur one skill into another). The
index is built in memory; vectors come from the embedding cache shared with the
pattern library, so only new or changed skill text is embedded.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aqe.skills.library import Skill

if TYPE_CHECKING:
    from aqe.search.embed import Embedder
    from aqe.search.engine import PatternSearch

__all__ = ["SkillSearch", "search_skills", "skill_document"]

_FENCE_RE = re.compile(r"^(```|~~~)")
_COMMAND_RE = re.compile(r"^\s*(?:[A-Z_]+=\S+\s+)*(aqe|pytest|python -m pytest)\b")


def skill_document(skill: Skill) -> str:
    """What Level 1 teaches: its prose, and the command lines of its examples."""
    kept: list[str] = []
    inside = False
    for line in skill.levels.get(1, skill.overview).splitlines():
        if _FENCE_RE.match(line.strip()):
            inside = not inside
            continue
        if not inside or _COMMAND_RE.match(line):
            kept.append(line)
    return "\n".join(kept).strip()


class SkillSearch:
    """An in-memory hybrid index over a skill library (build once, query many times)."""

    def __init__(self, skills: Sequence[Skill], embedder: Embedder) -> None:
        from aqe.search.engine import PatternSearch
        from aqe.search.projection import LibraryState, PatternDoc

        self.skills = {s.name: s for s in skills}
        state = LibraryState(
            patterns={
                s.name: PatternDoc(
                    name=s.title,
                    description=s.description,
                    code=skill_document(s),
                    category=s.category,
                    language="skill",
                    tags=(*s.tags, s.category),
                )
                for s in skills
            }
        )
        self._engine: PatternSearch = PatternSearch.from_state(state, embedder)

    def search(self, query: str, *, k: int = 5, mode: str = "hybrid") -> list[dict[str, Any]]:
        """The best ``k`` skills for ``query``, best first, with their scores and ranks."""
        result = self._engine.search(query, mode=mode, k=k)  # type: ignore[arg-type]
        return [
            {
                "name": hit.pattern_id,
                "score": hit.score,
                "category": self.skills[hit.pattern_id].category,
                "description": self.skills[hit.pattern_id].description,
                "keyword_rank": hit.keyword_rank,
                "semantic_rank": hit.semantic_rank,
            }
            for hit in result.hits
        ]


def search_skills(
    query: str,
    skills: Sequence[Skill],
    *,
    k: int = 5,
    mode: str = "hybrid",
    cache_dir: Path | None = None,
) -> list[dict[str, Any]]:
    """The best ``k`` skills for ``query`` (one index, one query).

    Args:
        query: What the user or agent wants to do.
        skills: The library (:func:`aqe.skills.library.load_library`).
        k: How many skills to return.
        mode: ``hybrid`` (default), ``keyword`` or ``semantic``.
        cache_dir: The embedding cache folder (``None``: in memory only).
    """
    from aqe.search.embed import Embedder

    with Embedder(cache_dir) as embedder:
        return SkillSearch(skills, embedder).search(query, k=k, mode=mode)
