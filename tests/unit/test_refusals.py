"""Server refusals offered to guarded operations (no server: the hub's own logic)."""

from __future__ import annotations

import asyncio

import pytest

from aqe.errors import LimitExceededError, PermissionDeniedError
from aqe.log._refusals import Refusal, Refusals, parse_refusal


@pytest.mark.parametrize(
    ("message", "refusal"),
    [
        (
            'nats: permissions violation for publish to "aqe.tests.run.r1.started"',
            ("publish", "aqe.tests.run.r1.started"),
        ),
        (
            'nats: permissions violation for subscription to "_inbox.abc.*"',
            ("subscribe", "_inbox.abc.*"),
        ),
        (
            'nats: permissions violation for publish with reply of "_inbox.x"',
            ("publish", "_inbox.x"),
        ),
        ("nats: maximum control line exceeded", None),
    ],
)
def test_parse_refusal(message: str, refusal: tuple[str, str] | None) -> None:
    parsed = parse_refusal(message)
    assert (parsed and (parsed.operation, parsed.subject)) == refusal


async def _guarded(hub: Refusals, subject: str, started: asyncio.Event) -> None:
    with hub.guard(subject, subjects=lambda: (subject,)):
        started.set()
        await asyncio.Event().wait()  # a reply that never comes


async def test_a_refusal_of_the_subject_fails_the_operation_at_once() -> None:
    hub, started = Refusals(), asyncio.Event()
    task = asyncio.create_task(_guarded(hub, "aqe.tests.X", started))
    await started.wait()
    hub.offer(Refusal("publish", "aqe.tests.other", "not ours"))
    hub.offer(Refusal("publish", "aqe.tests.x", "permissions violation ..."))
    with pytest.raises(PermissionDeniedError, match=r"aqe\.tests\.x"):
        await task
    assert task.cancelling() == 0  # our cancellation was taken back


async def test_a_closing_limit_is_a_limit_error() -> None:
    hub, started = Refusals(), asyncio.Event()
    task = asyncio.create_task(_guarded(hub, "aqe.tests.x", started))
    await started.wait()
    hub.offer(Refusal("connection", "", "maximum control line exceeded"))
    with pytest.raises(LimitExceededError, match="maximum control line exceeded"):
        await task


async def test_an_outside_cancellation_still_cancels() -> None:
    hub, started = Refusals(), asyncio.Event()
    task = asyncio.create_task(_guarded(hub, "aqe.tests.x", started))
    await started.wait()
    task.cancel()
    hub.offer(Refusal("publish", "aqe.tests.x", "permissions violation ..."))
    with pytest.raises(asyncio.CancelledError):
        await task
