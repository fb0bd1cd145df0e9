"""The source of a pytest test from its node id (``path.py::Class::test_name[param]``)."""

from __future__ import annotations

import ast
from pathlib import Path

from aqe.errors import ConfigError

__all__ = ["pytest_source"]


def pytest_source(node_id: str, root: Path) -> str:
    """The test function's source (decorators included) for a pytest node id.

    Args:
        node_id: ``tests/test_x.py::test_y``, ``...::TestClass::test_y[param]``.
        root: The directory node ids are relative to.

    Raises:
        ConfigError: The file is missing or not Python, or has no such test.
    """
    path_part, sep, rest = node_id.partition("::")
    if not sep or not rest:
        raise ConfigError(f"{node_id!r}: not a pytest node id (path.py::test)")
    path = root / path_part
    try:
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text, filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the test's source ({exc})") from exc
    names = [n.partition("[")[0] for n in rest.split("::")]
    body: list[ast.stmt] = tree.body
    found: ast.AST | None = None
    for name in names:
        found = next(
            (
                n
                for n in body
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                and n.name == name
            ),
            None,
        )
        if found is None:
            raise ConfigError(f"{path}: no test {'::'.join(names)} in it")
        body = found.body if isinstance(found, ast.ClassDef) else []
    if found is None:  # pragma: no cover - names is never empty
        raise ConfigError(f"{node_id!r}: no test name")
    lines = text.splitlines()
    decorators = getattr(found, "decorator_list", [])
    start = min([d.lineno for d in decorators] + [getattr(found, "lineno", 1)])
    end = getattr(found, "end_lineno", None) or start
    return "\n".join(lines[start - 1 : end])
