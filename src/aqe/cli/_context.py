"""What every command shares: settings, running coroutines, opening the log, output."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import click
import msgspec

if TYPE_CHECKING:
    from rich.console import Console

    from aqe.config import Discovered, Settings
    from aqe.log.jetstream import JetStreamEventLog

T = TypeVar("T")


class AppContext:
    """Built once per invocation from the root options."""

    def __init__(self, data_dir: str | None, nats_url: str | None) -> None:
        self._data_dir = data_dir
        self._nats_url = nats_url
        self._discovered: Discovered | None = None

    @property
    def discovered(self) -> Discovered:
        """Settings from the project's file, the environment and the options, by origin."""
        if self._discovered is None:
            from pathlib import Path

            from aqe.config import discover

            self._discovered = discover(
                option_names={"data_dir": "--data-dir", "nats_url": "--nats-url"},
                data_dir=Path(self._data_dir) if self._data_dir else None,
                nats_url=self._nats_url,
            )
        return self._discovered

    @property
    def settings(self) -> Settings:
        """The settings in force (see :func:`aqe.config.discover` for the order)."""
        return self.discovered.settings


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
    """A rich console (imported lazily so ``aqe --help`` stays fast).

    Lines of prose are not wrapped by rich (``soft_wrap``): a terminal wraps them at its
    own edge, and a pipe gets each message on one line instead of broken mid-sentence.
    Tables are printed by :func:`aqe.cli._table.emit_table`.
    """
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


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


class NoSuchFileError(click.ClickException):
    """A path argument that names nothing: one line, ``aqe: error: PATH: no such file``."""

    exit_code = 2

    def __init__(self, path: str) -> None:
        super().__init__(f"{path}: no such file or directory")


class ExistingPath(click.Path):
    """``click.Path`` for paths that must exist, failing with :class:`NoSuchFileError`.

    Click's own check answers with the usage text; a missing file is not a usage
    mistake, so it gets the one line every other aqe error gets.
    """

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Check the path exists, then let click convert it."""
        if not os.path.lexists(os.fspath(value)):
            raise NoSuchFileError(os.fspath(value))
        return super().convert(value, param, ctx)


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """The ``--json`` flag every data command takes."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of tables."
    )(func)
