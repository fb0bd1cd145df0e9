"""Cut a generated test module into one candidate per test (pure).

Generators write modules with many tests (Pynguin: ``test_case_0`` ... in one file);
the keep rule judges each test alone, so each becomes a module of its own: every
top-level statement that is not a test (imports, helpers, module constants) followed by
that one test function (or ``Test*`` class), with its decorators.
"""

from __future__ import annotations

import ast

__all__ = ["split_tests"]


def _is_test(node: ast.stmt) -> bool:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return node.name.startswith("test")
    if isinstance(node, ast.ClassDef):
        return node.name.startswith("Test")
    return False


def split_tests(code: str) -> list[tuple[str, str]]:
    """``(test name, module source)`` for each top-level test in ``code``.

    Code that does not parse gives no candidates (a generator's broken output is not a
    test); a module without tests gives none either.
    """
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    lines = code.splitlines()

    def segment(node: ast.stmt) -> str:
        decorators = getattr(node, "decorator_list", [])
        start = min([node.lineno, *(d.lineno for d in decorators)])
        end = node.end_lineno or node.lineno
        return "\n".join(lines[start - 1 : end])

    header = [segment(n) for n in tree.body if not _is_test(n)]
    tests = [n for n in tree.body if _is_test(n)]
    first = min((getattr(n, "lineno", 1) for n in tree.body), default=1)
    leading = [line for line in lines[: first - 1] if line.startswith("#")]
    prefix = "\n".join([*leading, *([""] if leading else []), *header]).rstrip()
    out = []
    for test in tests:
        name = test.name  # type: ignore[attr-defined]
        body = segment(test)
        out.append((name, f"{prefix}\n\n\n{body}\n" if prefix else f"{body}\n"))
    return out
