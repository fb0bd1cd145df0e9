"""Weighted Reciprocal Rank Fusion (Cormack, Clarke & Büttcher, SIGIR 2009).

Each ranking votes ``w_i / (k + rank_i(d))`` for every document it lists (rank from 1);
a document's fused score is the sum of its votes. Only ranks matter, so BM25 scores and
cosine similarities never need to be put on one scale. ``k`` damps the lead of the
very top ranks: the larger it is, the more a document found by several rankings beats
one found first by a single ranking.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["rrf"]


def rrf(
    rankings: Sequence[Sequence[str]],
    *,
    k: float = 60,
    weights: Sequence[float] | None = None,
    limit: int | None = None,
) -> list[tuple[str, float]]:
    """Fuse ranked id lists into one ranking.

    Ties on the fused score go to the document with the better best single rank, then
    to the smaller id, so the result is deterministic. A ranking that lists an id
    twice counts only its first (best) place.

    Args:
        rankings: Id lists, best first.
        k: The rank constant, greater than 0 (60 in the original paper).
        weights: One non-negative weight per ranking; all 1 when omitted.
        limit: Keep at most this many results; all when ``None``.

    Returns:
        ``(id, fused score)`` pairs, best first.

    Raises:
        ValueError: ``k`` is not positive, ``weights`` does not have one finite,
            non-negative value per ranking, or ``limit`` is negative.
    """
    if not k > 0:
        raise ValueError(f"k must be greater than 0, got {k}")
    if weights is None:
        weights = [1.0] * len(rankings)
    elif len(weights) != len(rankings):
        raise ValueError(f"{len(weights)} weights for {len(rankings)} rankings")
    if any(not 0 <= w < float("inf") for w in weights):
        raise ValueError(f"weights must be finite and non-negative, got {list(weights)}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")

    scores: dict[str, float] = {}
    best_rank: dict[str, int] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        seen: set[str] = set()
        for rank, doc_id in enumerate(ranking, start=1):
            if doc_id in seen:
                continue
            seen.add(doc_id)
            scores[doc_id] = scores.get(doc_id, 0.0) + weight / (k + rank)
            if rank < best_rank.get(doc_id, rank + 1):
                best_rank[doc_id] = rank
    fused = sorted(scores.items(), key=lambda item: (-item[1], best_rank[item[0]], item[0]))
    return fused if limit is None else fused[:limit]
