"""Write Hypothesis ghostwriter tests for a module's functions (runs inside a sandbox).

``python -m aqe.testgen._ghostwrite --module M --out DIR [--seed S] [--max N]`` imports
``M`` (so it runs the module under test: only ever inside a sandbox), and for each
public function defined in it, in an order shuffled by ``seed``, writes
``DIR/test_gw_<function>.py`` from :func:`hypothesis.extra.ghostwriter.magic`, at most
``N`` files. A function the ghostwriter cannot handle is listed in
``DIR/skipped.txt`` with the reason.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import random
import sys
from pathlib import Path


def public_functions(module: object) -> list[tuple[str, object]]:
    """Public functions and classes defined in ``module`` itself, by name."""
    name = getattr(module, "__name__", "")
    found: list[tuple[str, object]] = []
    for attr, value in sorted(vars(module).items()):
        if attr.startswith("_"):
            continue
        if not (inspect.isfunction(value) or inspect.isclass(value)):
            continue
        if getattr(value, "__module__", None) != name:
            continue
        found.append((attr, value))
    return found


def main(argv: list[str] | None = None) -> int:
    """Write the tests; exit 0 when at least one was written."""
    parser = argparse.ArgumentParser(prog="aqe.testgen._ghostwrite")
    parser.add_argument("--module", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max", type=int, default=20)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    from hypothesis.extra import ghostwriter

    module = importlib.import_module(args.module)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    funcs = [f for f in public_functions(module) if inspect.isfunction(f[1])]
    random.Random(args.seed).shuffle(funcs)  # noqa: S311 - an order, not a secret
    written = 0
    skipped = []
    for attr, func in funcs:
        if written >= args.max:
            break
        try:
            code = ghostwriter.magic(func)  # type: ignore[arg-type]
        except Exception as exc:
            skipped.append(f"{attr}: {type(exc).__name__}: {exc}")
            continue
        (out / f"test_gw_{attr}.py").write_text(code, encoding="utf-8")
        written += 1
    (out / "skipped.txt").write_text("\n".join(skipped) + "\n", encoding="utf-8")
    print(f"wrote {written} test modules for {args.module}; skipped {len(skipped)}")
    return 0 if written else 1


if __name__ == "__main__":
    raise SystemExit(main())
