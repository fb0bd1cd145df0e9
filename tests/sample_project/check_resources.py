"""A test that leaks a resource, one whose budget it breaks, a time bomb and an async race."""

import asyncio
import tempfile

from sample_state import HANDLES, draw, now


def test_open_scratch_files():
    """Leaks three open temporary files (passes; a polluter of the budget test)."""
    for _ in range(3):
        HANDLES.append(tempfile.TemporaryFile())  # noqa: SIM115 - the leak is the point
    assert len(HANDLES) >= 3


def test_sum_of_squares():
    assert sum(i * i for i in range(4)) == 14


def test_handle_budget():
    """Order-dependent: fails when a test before it leaked handles."""
    assert len(HANDLES) < 2, f"{len(HANDLES)} handles leaked by earlier tests"


def test_next_business_day():
    """Time-dependent: the clock's weekday decides (fails on weekends)."""
    assert now().weekday() < 5, f"ran on a {now():%A}"


def test_counter_race():
    """An async race: two workers read, yield, write; seeded yields decide the interleaving."""
    counter = {"value": 0}

    async def worker(name: str) -> None:
        for _ in range(int(draw(name) * 3)):
            await asyncio.sleep(0)
        seen = counter["value"]
        await asyncio.sleep(0)
        counter["value"] = seen + 1

    async def main() -> None:
        await asyncio.gather(worker("w1"), worker("w2"))

    asyncio.run(main())
    assert counter["value"] == 2, "a lost update"
