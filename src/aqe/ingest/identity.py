"""One stable identity for a test case, whatever report format it came from.

The rule (also in README, "Test identity"):

* A case is a *container* (JUnit ``classname``, a file path, a pytest node id up to
  the test's name, a Go package) and a *name* (the function or case name, including
  any parametrisation in brackets).
* The container is normalised: leading ``./`` dropped, ``\\`` and ``/`` become ``.``,
  a ``.py`` suffix on a path segment is dropped, ``::`` becomes ``.``.
* The name keeps its parametrisation verbatim; runs of whitespace collapse to one
  space and ends are trimmed.
* The identity is ``<container>.<name>``, or the name alone without a container.

So the pytest node id ``tests/unit/test_mod.py::TestX::test_a[1-2]``, the pytest JUnit
case ``classname="tests.unit.test_mod.TestX" name="test_a[1-2]"`` and the
pytest-json-report entry for the same node all become
``tests.unit.test_mod.TestX.test_a[1-2]``; a Surefire case is
``com.acme.FooTest.testBar``.
"""

from __future__ import annotations

import re

__all__ = ["normalise_container", "split_pytest_nodeid", "test_identity"]

_SPACES = re.compile(r"\s+")
_PY_SEGMENT = re.compile(r"\.py(?=::|$)")


def normalise_container(container: str) -> str:
    """The container part of an identity (see the module docstring)."""
    text = container.strip()
    while text.startswith("./"):
        text = text[2:]
    text = _PY_SEGMENT.sub("", text)
    text = text.replace("\\", "/").replace("::", ".").replace("/", ".")
    return text.strip(".")


def _normalise_name(name: str) -> str:
    return _SPACES.sub(" ", name.strip())


def test_identity(container: str | None, name: str) -> str:
    """The identity of the case ``name`` in ``container``.

    Raises:
        ValueError: an empty name.
    """
    clean = _normalise_name(name)
    if not clean:
        raise ValueError("a test case needs a name")
    prefix = normalise_container(container) if container else ""
    return f"{prefix}.{clean}" if prefix else clean


test_identity.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def split_pytest_nodeid(nodeid: str) -> tuple[str, str]:
    """``(container, name)`` of a pytest node id; parametrisation stays in the name.

    ``tests/a.py::TestX::test_y[p::q]`` gives ``("tests/a.py::TestX", "test_y[p::q]")``.
    """
    bracket = nodeid.find("[")
    base, params = (nodeid, "") if bracket < 0 else (nodeid[:bracket], nodeid[bracket:])
    container, sep, name = base.rpartition("::")
    if not sep:
        return "", base + params
    return container, name + params
