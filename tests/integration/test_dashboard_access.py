"""The dashboard is read-only unless started with a token, and then writes need it."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import nats
import pytest

from aqe.dashboard import serve
from aqe.dashboard.app import PAGE
from aqe.log import load_stream_specs
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog

pytestmark = [pytest.mark.nats, pytest.mark.timeout(60)]


@asynccontextmanager
async def dashboard(nats_url: str, tmp_path: Path, token: str | None) -> AsyncIterator[str]:
    nc = await nats.connect(nats_url)
    await apply_streams(nc, load_stream_specs())
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(JetStreamEventLog(nc), tmp_path, port=0, token=token, on_ready=ready.set_result)
    )
    try:
        yield await asyncio.wait_for(ready, 30)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await nc.close()


async def status(url: str, method: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    def call() -> tuple[int, str]:
        body = b"{}" if method == "POST" else None
        request = urllib.request.Request(url, method=method, headers=headers or {}, data=body)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    return await asyncio.to_thread(call)


async def test_read_only_without_a_token(nats_url: str, tmp_path: Path) -> None:
    async with dashboard(nats_url, tmp_path, None) as url:
        assert await status(url, "GET") == (200, PAGE)
        code, body = await status(url + "api/state", "POST")
        assert (code, body) == (403, "read-only dashboard (start it with --token to allow writes)")
        code, body = await status(url + "healthz", "DELETE")
        assert code == 403


async def test_with_a_token_writes_must_carry_it(nats_url: str, tmp_path: Path) -> None:
    async with dashboard(nats_url, tmp_path, "s3cret") as url:
        assert (await status(url + "healthz", "GET"))[0] == 200  # reading needs no token
        assert (await status(url + "api/state", "POST"))[0] == 401
        assert (await status(url + "api/state", "POST", {"Authorization": "Bearer nope"}))[0] == 401
        # The right token passes the guard; the route itself only reads.
        assert (await status(url + "api/state", "POST", {"Authorization": "Bearer s3cret"}))[
            0
        ] == 405
