"""Coverage in the log: events from coverage.py, Cobertura and LCOV, the coverage
projection, its queries (per file, per test, gaps), test impact analysis and the
escape audit.

Light at import: coverage.py, git and the report parsers load only where used.
"""

from aqe.coverage.measured import MeasuredFile, coverage_events, measured_from_events
from aqe.coverage.projection import CoverageProjection, CoverageState

__all__ = [
    "CoverageProjection",
    "CoverageState",
    "MeasuredFile",
    "coverage_events",
    "measured_from_events",
]
