"""A small AST mutation operator set, line-preserving, for the escape audit.

Each :class:`Mutant` changes one expression or statement that sits on one line: the
change is a replacement of that source segment, so every other line keeps its number
and the mutant's *change* is exactly one line (what test impact analysis is given).

Operators (:data:`OPERATORS`):

* ``compare``: ``==`` <-> ``!=``, ``<`` <-> ``>=``, ``>`` <-> ``<=``, ``in`` <-> ``not in``,
  ``is`` <-> ``is not``;
* ``arith``: ``+`` <-> ``-``, ``*`` <-> ``//`` (``/`` -> ``*``), ``%`` -> ``*``;
* ``constant``: an integer ``n`` -> ``n + 1``, ``True`` <-> ``False``, a non-empty string
  -> ``""``;
* ``negate``: the test of an ``if`` / ``while`` / ternary -> ``not (test)``;
* ``boolop``: ``and`` <-> ``or``;
* ``return``: ``return x`` -> ``return None`` (``x`` not already ``None``).
"""

from __future__ import annotations

import ast
import random
from collections.abc import Iterator
from pathlib import Path

import msgspec

__all__ = ["OPERATORS", "Mutant", "apply_mutant", "find_mutants", "sample_mutants"]

OPERATORS = ("compare", "arith", "constant", "negate", "boolop", "return")

_CMP_SWAP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Lt: ast.GtE,
    ast.GtE: ast.Lt,
    ast.Gt: ast.LtE,
    ast.LtE: ast.Gt,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
_ARITH_SWAP: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.FloorDiv,
    ast.FloorDiv: ast.Mult,
    ast.Div: ast.Mult,
    ast.Mod: ast.Mult,
}


class Mutant(msgspec.Struct, frozen=True, kw_only=True):
    """One mutation: in ``path`` (relative), line ``line``, columns ``[col, end_col)``
    of the original source are replaced by ``replacement``."""

    path: str
    line: int
    col: int
    end_col: int
    operator: str
    original: str
    replacement: str

    @property
    def label(self) -> str:
        """``path:line operator: original -> replacement``."""
        return f"{self.path}:{self.line} {self.operator}: {self.original} -> {self.replacement}"


def _one_line(node: ast.AST) -> bool:
    line = getattr(node, "lineno", None)
    return (
        line is not None
        and line == getattr(node, "end_lineno", None)
        and getattr(node, "end_col_offset", None) is not None
    )


def _variants(node: ast.AST) -> Iterator[tuple[str, ast.AST]]:
    """(operator, mutated copy of ``node``) for each mutation that applies to it."""
    if isinstance(node, ast.Compare) and len(node.ops) == 1:
        swap = _CMP_SWAP.get(type(node.ops[0]))
        if swap is not None:
            yield "compare", ast.Compare(left=node.left, ops=[swap()], comparators=node.comparators)
    elif isinstance(node, ast.BinOp):
        swap_op = _ARITH_SWAP.get(type(node.op))
        if swap_op is not None:
            yield "arith", ast.BinOp(left=node.left, op=swap_op(), right=node.right)
    elif isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool):
            yield "constant", ast.Constant(value=not value)
        elif isinstance(value, int):
            yield "constant", ast.Constant(value=value + 1)
        elif isinstance(value, str) and value and not value.isspace() and len(value) < 40:
            yield "constant", ast.Constant(value="")
    elif isinstance(node, ast.BoolOp):
        other = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        yield "boolop", ast.BoolOp(op=other, values=node.values)


def _segments(tree: ast.Module) -> Iterator[tuple[str, ast.AST, ast.AST]]:
    """(operator, node whose source is replaced, replacement node)."""
    docstrings = {
        id(body[0].value)
        for body in (getattr(n, "body", None) for n in ast.walk(tree) if hasattr(n, "body"))
        if isinstance(body, list)
        and body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.If | ast.While | ast.IfExp) and _one_line(node.test):
            negated = ast.UnaryOp(op=ast.Not(), operand=node.test)
            yield "negate", node.test, negated
        if (
            isinstance(node, ast.Return)
            and node.value is not None
            and _one_line(node.value)
            and not (isinstance(node.value, ast.Constant) and node.value.value is None)
        ):
            yield "return", node.value, ast.Constant(value=None)
        if id(node) in docstrings or not _one_line(node):
            continue
        if isinstance(node, ast.JoinedStr | ast.FormattedValue):
            continue
        for operator, mutated in _variants(node):
            yield operator, node, mutated


def find_mutants(root: Path, path: str) -> list[Mutant]:
    """Every mutant of ``root / path``, in source order.

    Raises:
        SyntaxError: the file is not Python.
    """
    source = (root / path).read_text(encoding="utf-8")
    lines = source.splitlines(keepends=True)
    tree = ast.parse(source)
    # f-strings hold Constants whose positions are not their own: skip their insides.
    inside_fstrings = {
        id(inner) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for inner in ast.walk(n)
    }
    out: list[Mutant] = []
    for operator, node, mutated in _segments(tree):
        if id(node) in inside_fstrings:
            continue
        line = node.lineno  # type: ignore[attr-defined]
        col, end = node.col_offset, node.end_col_offset  # type: ignore[attr-defined]
        text = lines[line - 1].encode("utf-8")
        original = text[col:end].decode("utf-8")
        replacement = ast.unparse(mutated)
        if operator == "negate":
            replacement = f"not ({original})"
        elif operator in ("compare", "arith", "boolop"):
            replacement = f"({replacement})"
        if replacement.strip("()") == original.strip("()"):
            continue
        out.append(
            Mutant(
                path=path,
                line=line,
                col=col,
                end_col=end,
                operator=operator,
                original=original,
                replacement=replacement,
            )
        )
    out.sort(key=lambda m: (m.line, m.col, m.operator, m.replacement))
    return out


def sample_mutants(mutants: list[Mutant], count: int, seed: int) -> list[Mutant]:
    """A seeded sample of ``count`` mutants (all when there are fewer), in source order."""
    if count >= len(mutants):
        return list(mutants)
    rng = random.Random(seed)  # noqa: S311 - a reproducible sample, not a secret
    chosen = rng.sample(range(len(mutants)), count)
    return [mutants[i] for i in sorted(chosen)]


def apply_mutant(source: str, mutant: Mutant) -> str:
    """``source`` with the mutant's segment replaced (every line keeps its number)."""
    lines = source.splitlines(keepends=True)
    text = lines[mutant.line - 1].encode("utf-8")
    lines[mutant.line - 1] = (
        text[: mutant.col] + mutant.replacement.encode("utf-8") + text[mutant.end_col :]
    ).decode("utf-8")
    return "".join(lines)
