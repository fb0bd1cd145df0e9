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

The identity is aqe's; the runner's own id is kept beside it where a report gives it
(the plugin, pytest-json-report) or allows mapping it back (:func:`pytest_nodeid` for
pytest's JUnit XML), so ``aqe subset --format pytest`` prints what pytest takes.
"""

from __future__ import annotations

import re

__all__ = ["normalise_container", "pytest_nodeid", "split_pytest_nodeid", "test_identity"]

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


def pytest_nodeid(classname: str | None, name: str, file: str | None = None) -> str | None:
    """The node id a pytest JUnit case (``classname``, ``name``, xunit1's ``file``) came from.

    pytest writes ``classname`` as the node id's path with ``/`` turned to ``.`` and
    ``.py`` dropped, then its classes. With ``file`` the path is known exactly; without
    it (xunit2, pytest's default) the trailing segments that start with a capital
    letter are taken as the classes (pytest collects ``Test*`` classes), the rest as
    the path. ``None`` without a class name.

    ``pytest_nodeid("tests.test_x.TestY", "test_z[1]")`` is
    ``"tests/test_x.py::TestY::test_z[1]"``.
    """
    if not classname:
        return None
    parts = classname.split(".")
    if file:
        module = normalise_container(file).split(".")
        if parts[: len(module)] == module:
            return "::".join([file.replace("\\", "/"), *parts[len(module) :], name])
    cut = len(parts)
    while cut > 1 and parts[cut - 1][:1].isupper():
        cut -= 1
    return "::".join(["/".join(parts[:cut]) + ".py", *parts[cut:], name])
