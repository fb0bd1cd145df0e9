"""State shared between tests (the cause of order dependence) and a seeded draw."""

import os
import random

CART: list[str] = []


def draw(name: str) -> float:
    """A number in [0, 1) fixed by AQE_RERUN_SEED (the seed the workflow gives a rerun)."""
    seed = os.environ.get("AQE_RERUN_SEED", "0")
    return random.Random(f"{seed}:{name}").random()  # noqa: S311 - a test fixture
