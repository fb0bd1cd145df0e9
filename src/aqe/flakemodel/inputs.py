"""A test's code as the model's input row: MiniLM embedding + code signals (+ history).

MiniLM reads at most 256 word pieces (its ``max_seq_length``); a Java test method of
more than about 1,000 characters is cut there and its end (where the asserts and the
waits usually are) is lost. Such a code is embedded twice, its head and its last
:data:`TAIL_CHARS` characters, and the two unit vectors are averaged and normalised
again (head + tail). Every vector goes through the embedder's persistent cache, keyed
by the text's digest and the model version, so the 18,722 FlakeFlagger methods are
embedded once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from aqe.flakemodel.features import HISTORY_FEATURES, SIGNAL_NAMES, history_features, signal_matrix

if TYPE_CHECKING:
    from aqe.search.embed import Embedder

__all__ = ["TAIL_CHARS", "Blocks", "code_views", "embed_codes", "input_matrix"]

TAIL_CHARS = 1000
"""Codes longer than this are embedded as head + tail."""


def code_views(code: str) -> tuple[str, str | None]:
    """The head (the whole code: the model cuts it) and, for long codes, the tail."""
    if len(code) <= TAIL_CHARS:
        return code, None
    tail = code[-TAIL_CHARS:]
    cut = tail.find("\n")
    return code, tail[cut + 1 :] if 0 <= cut < len(tail) - 1 else tail


def embed_codes(
    embedder: Embedder,
    codes: Sequence[str],
    *,
    tail: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> NDArray[np.float32]:
    """Unit vectors of ``codes`` (head + tail for long codes when ``tail``).

    Args:
        embedder: The MiniLM embedder (its cache makes a second call cheap).
        codes: Test sources.
        tail: Average the tail's vector into long codes' (False: head only).
        on_progress: Called with (texts done, texts in all).

    Returns:
        ``(len(codes), 384)`` float32.
    """
    views = [code_views(c) for c in codes]
    texts = [h for h, _ in views]
    tails = [(i, t) for i, (_, t) in enumerate(views) if t is not None] if tail else []
    texts.extend(t for _, t in tails)
    total = len(texts)
    vectors = embedder.embed(
        texts, on_progress=None if on_progress is None else lambda n: on_progress(n, total)
    )
    out: NDArray[np.float32] = vectors[: len(codes)].copy()
    for k, (row, _) in enumerate(tails):
        mixed = out[row] + vectors[len(codes) + k]
        out[row] = mixed / max(float(np.linalg.norm(mixed)), 1e-12)
    return out


class Blocks:
    """Which input blocks a model reads, and the column names they give."""

    def __init__(self, *, embedding: bool = True, signals: bool = True, history: bool = False):
        self.embedding = embedding
        self.signals = signals
        self.history = history

    def names(self, dim: int) -> list[str]:
        """Column names, in the order :func:`input_matrix` writes them."""
        names: list[str] = []
        if self.embedding:
            names += [f"emb{i}" for i in range(dim)]
        if self.signals:
            names += [f"sig_{n}" for n in SIGNAL_NAMES]
        if self.history:
            names += [f"hist_{n}" for n in HISTORY_FEATURES]
        return names


def input_matrix(
    blocks: Blocks,
    codes: Sequence[str],
    embeddings: NDArray[np.float32] | None,
    history: Sequence[Mapping[str, Any] | None] | None = None,
) -> NDArray[np.float32]:
    """The model's input rows: the blocks ``blocks`` names, side by side."""
    parts: list[NDArray[np.float32]] = []
    if blocks.embedding:
        if embeddings is None or len(embeddings) != len(codes):
            raise ValueError("the embedding block needs one vector per code")
        parts.append(embeddings)
    if blocks.signals:
        parts.append(signal_matrix(codes))
    if blocks.history:
        rows = history if history is not None else [None] * len(codes)
        parts.append(np.stack([history_features(r) for r in rows]).astype(np.float32))
    if not parts:
        raise ValueError("a model needs at least one input block")
    return np.hstack(parts).astype(np.float32, copy=False)
