"""Options of the fault suite."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--seed",
        action="append",
        type=int,
        default=None,
        help="fault-suite schedule seed (repeatable; default: env AQE_FAULT_SEED, else 1,2,3)",
    )
