"""Write Hypothesis ghostwriter tests for a module's functions (runs inside a sandbox).

``python -m aqe.testgen._ghostwrite --module M --out DIR [--seed S] [--max N]`` imports
``M`` (so it runs the module under test: only ever inside a sandbox), and for each
public function defined in it, in an order shuffled by ``seed``, writes
``DIR/test_gw_<function>.py`` from :func:`hypothesis.extra.ghostwriter.magic`, at most
``N`` files. A function the ghostwriter cannot handle is listed in
``DIR/skipped.txt`` with the reason.

Unannotated code (most of PyPI) leaves the ghostwriter without a strategy for many
arguments (``st.nothing()``, a test that can never run). Those get :data:`GENERIC`, a
small mix of everyday values, and the test tolerates the exceptions wrong-typed input
raises (:data:`TOLERATED`): a smoke test that the function does nothing worse. Every
test runs without a deadline and with at most 50 examples, so a loaded machine does
not make it flaky and its N runs stay short.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import random
import sys
from pathlib import Path

GENERIC = (
    "st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.text(max_size=3), "
    "st.lists(st.integers(-3, 3), max_size=4), "
    "st.dictionaries(st.text(max_size=2), st.integers(-3, 3), max_size=3), "
    "st.sampled_from([len, str, bool, abs, sum]))"
)
TOLERATED = (TypeError, ValueError, KeyError, IndexError, AttributeError, StopIteration)
SETTINGS = "@settings(deadline=None, max_examples=50)\n@given("


def harden(code: str) -> str:
    """Fill the ghostwriter's ``st.nothing()`` holes and settle the test's settings."""
    code = code.replace("# TODO: replace st.nothing() with appropriate strategies\n", "")
    if "st.nothing()" in code:
        code = code.replace("st.nothing()", "_any_value")
        head, sep, rest = code.partition("strategies as st\n")
        code = f"{head}{sep}\n_any_value = {GENERIC}\n{rest}" if sep else code
    code = code.replace("@given(", SETTINGS)
    return code.replace(
        "from hypothesis import given,", "from hypothesis import given, settings,", 1
    )


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
            code = ghostwriter.magic(func, except_=TOLERATED)  # type: ignore[arg-type]
        except Exception as exc:
            skipped.append(f"{attr}: {type(exc).__name__}: {exc}")
            continue
        (out / f"test_gw_{attr}.py").write_text(harden(code), encoding="utf-8")
        written += 1
    (out / "skipped.txt").write_text("\n".join(skipped) + "\n", encoding="utf-8")
    print(f"wrote {written} test modules for {args.module}; skipped {len(skipped)}")
    return 0 if written else 1


if __name__ == "__main__":
    raise SystemExit(main())
