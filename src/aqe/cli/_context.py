"""What every command shares: settings, running coroutines, opening the log, output."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import click
import msgspec

if TYPE_CHECKING:
    from rich.console import Console

    from aqe.config import Settings
    from aqe.log.jetstream import JetStreamEventLog

T = TypeVar("T")


class AppContext:
    """Built once per invocation from the root options."""

    def __init__(self, data_dir: str | None, nats_url: str | None) -> None:
        self._data_dir = data_dir
        self._nats_url = nats_url
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        """Settings from the environment with the command-line overrides applied."""
        if self._settings is None:
            from pathlib import Path

            from aqe.config import Settings

            self._settings = Settings.from_env(
                data_dir=Path(self._data_dir) if self._data_dir else None,
                nats_url=self._nats_url,
            )
        return self._settings


pass_app = click.make_pass_decorator(AppContext)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine to completion."""
    return asyncio.run(coro)


@contextlib.asynccontextmanager
async def open_log(
    app: AppContext, *, ensure_streams: bool = True
) -> AsyncIterator[JetStreamEventLog]:
    """Connect (starting the embedded server if needed) and create missing streams.

    Missing streams are created from ``streams/*.json`` so a first command on a fresh
    machine just works; changing an existing stream is left to ``aqe streams apply``.
    """
    from aqe.log.admin import create_missing_streams
    from aqe.log.jetstream import JetStreamEventLog

    log = await JetStreamEventLog.connect(app.settings)
    try:
        if ensure_streams:
            await create_missing_streams(log.connection, log.specs)
        yield log
    finally:
        await log.close()


def console(stderr: bool = False) -> Console:
    """A rich console (imported lazily so ``aqe --help`` stays fast)."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def print_json(value: Any) -> None:
    """Write one JSON document to stdout."""
    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")
    sys.stdout.flush()


Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def apply_options(func: Callable[..., Any], options: list[Decorator]) -> Callable[..., Any]:
    """Decorate ``func`` with ``options`` as if they were stacked above it, in order."""
    for option in reversed(options):
        func = option(func)
    return func


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """The ``--json`` flag every data command takes."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of tables."
    )(func)
