"""Every table the ``aqe`` command prints goes through :func:`emit_table`.

One rule for all of them, so no command cuts an id:

* On a terminal (or with ``--format table``): a rich table whose cells fold, wrapping
  a long id inside its cell instead of cutting it with an ellipsis.
* When stdout is not a terminal (a pipe, a file) or with ``--format tsv``: a header
  line of column names, then one line per row, cells separated by tabs, nothing
  styled, wrapped or cut. A tab, carriage return or newline inside a cell is written
  as ``\\t``, ``\\r`` or ``\\n`` so each row stays one line.
* ``--format json`` is ``--json``: the command prints its rows as JSON itself.

Cells are plain values, never rich markup, so a test id such as ``test_x[a-1]`` is
shown as it is; :class:`Styled` gives a cell colours that only the terminal sees.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

import click

if TYPE_CHECKING:
    from rich.text import Text

__all__ = ["Column", "Styled", "emit_table", "output_options", "styled", "table_format"]

FORMATS: Final = ("table", "tsv", "json")
_META_KEY: Final = "aqe.output_format"
_ESCAPES: Final = str.maketrans({"\t": "\\t", "\r": "\\r", "\n": "\\n"})


@dataclass(frozen=True)
class Styled:
    """A cell made of (text, rich style) pieces; pipes get the texts joined."""

    parts: tuple[tuple[str, str], ...]

    @property
    def plain(self) -> str:
        """The cell's text without styles."""
        return "".join(text for text, _ in self.parts)


def styled(text: object, style: str) -> Styled:
    """A one-piece :class:`Styled` cell."""
    return Styled(((str(text), style),))


Cell = str | int | float | Styled | None


@dataclass(frozen=True)
class Column:
    """A column's header and alignment."""

    name: str
    justify: Literal["left", "right"] = "left"


def output_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--json`` and ``--format table|tsv|json`` for a command that prints tables.

    The command receives ``as_json`` (true for ``--json`` or ``--format json``); the
    table format is kept on the click context for :func:`emit_table`.
    """

    @functools.wraps(func)
    def command(*args: Any, output_format: str | None, as_json: bool, **kwargs: Any) -> Any:
        click.get_current_context().meta[_META_KEY] = output_format
        return func(*args, as_json=as_json or output_format == "json", **kwargs)

    command = click.option(
        "--format",
        "output_format",
        type=click.Choice(FORMATS),
        help="table (rich, cells wrap), tsv (tab-separated with a header line) or json "
        "[default: table on a terminal, tsv otherwise].",
    )(command)
    return click.option(
        "--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of tables."
    )(command)


def table_format() -> Literal["table", "tsv"]:
    """How tables are printed now: the ``--format`` given, else by where stdout goes."""
    context = click.get_current_context(silent=True)
    chosen = context.meta.get(_META_KEY) if context is not None else None
    if chosen == "table" or (chosen != "tsv" and sys.stdout.isatty()):
        return "table"
    return "tsv"


def _plain(cell: Cell) -> str:
    if cell is None:
        return "-"
    if isinstance(cell, Styled):
        return cell.plain
    return str(cell)


def _rich(cell: Cell) -> Text:
    from rich.text import Text

    if isinstance(cell, Styled):
        return Text.assemble(*cell.parts)
    return Text(_plain(cell))


def emit_table(
    columns: Sequence[str | Column],
    rows: Iterable[Sequence[Cell]],
    *,
    title: str | None = None,
    show_header: bool = True,
    stderr: bool = False,
) -> None:
    """Print a table the way :func:`table_format` says (see the module docstring).

    Args:
        columns: Headers (a string is a left-aligned column).
        rows: One sequence of cells per row, as many as there are columns.
        title: Shown above a rich table; left out of plain rows, which are data only.
        show_header: Whether a rich table shows its header (plain rows always do).
        stderr: Print to stderr (a table that accompanies data printed on stdout).
    """
    cols = [c if isinstance(c, Column) else Column(c) for c in columns]
    stream = sys.stderr if stderr else sys.stdout
    if table_format() == "tsv":
        lines = ["\t".join(c.name for c in cols)]
        lines.extend("\t".join(_plain(cell).translate(_ESCAPES) for cell in row) for row in rows)
        stream.write("\n".join(lines) + "\n")
        stream.flush()
        return
    from rich.table import Table

    from aqe.cli._context import console

    table = Table(title=title, title_justify="left", show_header=show_header)
    for col in cols:
        table.add_column(col.name, justify=col.justify, overflow="fold")
    for row in rows:
        table.add_row(*(_rich(cell) for cell in row))
    # Not soft-wrapped like prose: the table is laid out to the console's width.
    console(stderr=stderr).print(table, soft_wrap=False)
