"""``aqe config``: every setting in force and where it came from."""

from __future__ import annotations

import click

from aqe.app import AppContext
from aqe.cli._context import console, pass_app, print_json
from aqe.cli._table import emit_table, output_options


@click.command()
@output_options
@pass_app
def config(app: AppContext, as_json: bool) -> None:
    """Show every setting in force and where it came from (file, env, option, default).

    Each source overrides the one before: defaults, then [tool.aqe] in the nearest
    pyproject.toml or an aqe.toml (walking up from here), then AQE_* variables, then
    options. The data directory defaults to .aqe in the project root. Secrets are hidden.
    """
    found = app.discovered
    rows = found.shown()
    if as_json:
        print_json(
            {
                "root": str(found.root),
                "file": str(found.file.path) if found.file else None,
                "settings": {
                    name: {"value": value, "from": origin} for name, value, origin in rows
                },
            }
        )
        return
    where = found.file.label if found.file else "none (no [tool.aqe] or aqe.toml found)"
    console(stderr=True).print(f"project root: {found.root}; file: {where}", markup=False)
    emit_table(["setting", "value", "from"], [list(row) for row in rows])
