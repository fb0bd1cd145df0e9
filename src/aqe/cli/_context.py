"""What every command shares: the app context decorator, output, option helpers.

The settings, running coroutines and opening the log are the composition root's
(:mod:`aqe.app`), shared with the MCP server.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click
import msgspec

from aqe.app import AppContext

if TYPE_CHECKING:
    from rich.console import Console

pass_app = click.make_pass_decorator(AppContext)


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
