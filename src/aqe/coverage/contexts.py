"""The pytest side of per-test coverage: one coverage.py context per test.

``pytest --aqe-coverage-contexts`` (aqe's plugin) registers :class:`CoverageContexts`,
which switches the running coverage.py measurement (``coverage run``) to the test's
node id for the test's setup, call and teardown, and back to the empty context after
it. Lines run between tests (collection, imports) stay in the empty context.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

__all__ = ["PLUGIN_NAME", "CoverageContexts", "register_contexts"]

PLUGIN_NAME = "aqe-coverage-contexts"


class CoverageContexts:
    """Switches coverage.py's dynamic context around each test."""

    def __init__(self, cov: Any) -> None:
        self._cov = cov

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> Generator[None, object, object]:
        """Measure the test under its node id."""
        self._cov.switch_context(item.nodeid)
        try:
            return (yield)
        finally:
            self._cov.switch_context("")


def register_contexts(config: pytest.Config) -> None:
    """Register :class:`CoverageContexts` for the running coverage.py measurement.

    Raises:
        pytest.UsageError: no coverage.py measurement is running in this process.
    """
    import coverage

    cov = coverage.Coverage.current()
    if cov is None:
        raise pytest.UsageError(
            "--aqe-coverage-contexts needs pytest to run under coverage.py: "
            "`coverage run --branch -m pytest ...` (aqe coverage collect does this)"
        )
    config.pluginmanager.register(CoverageContexts(cov), PLUGIN_NAME)
