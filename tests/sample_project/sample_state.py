"""State shared by the sample project's tests, and the knobs that make them fail.

``AQE_RERUN_SEED`` seeds every random failure: the same seed gives the same outcome,
each rerun gets its own seed. Without it the outcomes are drawn afresh.
"""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime, timedelta

REGISTRY: dict[str, str] = {}
"""Users registered by tests (the polluter leaves one behind)."""
SETTINGS: dict[str, str] = {}
"""Settings a test loads (the state-setter) and another needs (the brittle test)."""
HANDLES: list[object] = []
"""Open handles a test leaks."""


def draw(name: str) -> float:
    """A number in [0, 1) for the test ``name``: fixed by ``AQE_RERUN_SEED`` when set."""
    seed = os.environ.get("AQE_RERUN_SEED")
    if seed is None:
        return random.SystemRandom().random()
    return random.Random(f"{seed}:{name}").random()


def now() -> datetime:
    """The clock: real time, or a seeded moment within one week when a seed is set."""
    if os.environ.get("AQE_RERUN_SEED") is None:
        return datetime.now(UTC)
    start = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday
    return start + timedelta(seconds=int(draw("clock") * 7 * 86_400))
