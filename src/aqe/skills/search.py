"""``aqe skills search``: skills found by the pattern library's hybrid search.

Each skill becomes one document of the same engine that searches test patterns
(:class:`aqe.search.engine.PatternSearch`: all-MiniLM-L6-v2 vectors, a tantivy BM25
index with code-aware tokens, weighted RRF). Its name is the skill's title, its
description the frontmatter's description, its tags the skill's tags and category,
and its "code" the Level 1 section (commands included), so a query about what a skill
does or about a command it teaches finds it. The index is built in memory per call;
vectors come from the embedding cache shared with the pattern library, so only new
or changed skill text is embedded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aqe.skills.library import Skill

__all__ = ["search_skills", "skill_library_state"]


def skill_library_state(skills: Sequence[Skill]) -> Any:
    """The skills as a pattern :class:`~aqe.search.projection.LibraryState`."""
    from aqe.search.projection import LibraryState, PatternDoc

    return LibraryState(
        patterns={
            s.name: PatternDoc(
                name=s.title,
                description=s.description,
                code=s.levels.get(1, s.overview),
                category=s.category,
                language="skill",
                tags=(*s.tags, s.category),
            )
            for s in skills
        }
    )


def search_skills(
    query: str,
    skills: Sequence[Skill],
    *,
    k: int = 5,
    mode: str = "hybrid",
    cache_dir: Path | None = None,
) -> list[dict[str, Any]]:
    """The best ``k`` skills for ``query``, best first, with their scores and ranks.

    Args:
        query: What the user or agent wants to do.
        skills: The library (:func:`aqe.skills.library.load_library`).
        k: How many skills to return.
        mode: ``hybrid`` (default), ``keyword`` or ``semantic``.
        cache_dir: The embedding cache folder (``None``: in memory only).
    """
    from aqe.search.embed import Embedder
    from aqe.search.engine import PatternSearch

    by_name = {s.name: s for s in skills}
    with Embedder(cache_dir) as embedder:
        searcher = PatternSearch.from_state(skill_library_state(skills), embedder)
        result = searcher.search(query, mode=mode, k=k)  # type: ignore[arg-type]
    return [
        {
            "name": hit.pattern_id,
            "score": hit.score,
            "category": by_name[hit.pattern_id].category,
            "description": by_name[hit.pattern_id].description,
            "keyword_rank": hit.keyword_rank,
            "semantic_rank": hit.semantic_rank,
        }
        for hit in result.hits
    ]
