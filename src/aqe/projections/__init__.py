"""Projections: deterministic folds of the log, checkpointed and rebuildable.

The runtime (:mod:`~aqe.projections.runner`) resumes at checkpoint + 1, parks what
it cannot fold on a dead-letter subject, and saves state with checkpoints
atomically. Each projection module defines one fold; :data:`PROJECTIONS` names them.
"""

from collections.abc import Callable
from typing import Any

from aqe.errors import UnknownProjectionError
from aqe.projections.base import Projection
from aqe.projections.catalog import CatalogProjection, CatalogState
from aqe.projections.deadletter import DeadLetter, DeadLetterSink, MemoryDeadLetters
from aqe.projections.history import HistoryProjection
from aqe.projections.replay import VerifyReport, rebuild, sequence_at, verify
from aqe.projections.runner import Progress, ProjectionRunner, RunStats, projection_lock
from aqe.projections.store import Snapshot, SnapshotStore

__all__ = [
    "PROJECTIONS",
    "CatalogProjection",
    "CatalogState",
    "DeadLetter",
    "DeadLetterSink",
    "HistoryProjection",
    "MemoryDeadLetters",
    "Progress",
    "Projection",
    "ProjectionRunner",
    "RunStats",
    "Snapshot",
    "SnapshotStore",
    "VerifyReport",
    "get_projection",
    "projection_lock",
    "rebuild",
    "sequence_at",
    "verify",
]


# The projections of other packages are imported when asked for: the package is on
# every query command's path, and numpy (learning) and cryptography (membership) would
# add a fifth of a second to each.
def _membership() -> Projection[Any]:
    from aqe.coordination.membership import MembershipProjection

    return MembershipProjection()


def _experience() -> Projection[Any]:
    from aqe.learning.experience import ExperienceProjection

    return ExperienceProjection()


def _patterns() -> Projection[Any]:
    from aqe.search.projection import PatternsProjection

    return PatternsProjection()


def _coverage() -> Projection[Any]:
    from aqe.coverage.projection import CoverageProjection

    return CoverageProjection()


def _perf() -> Projection[Any]:
    from aqe.perf.series import PerfProjection

    return PerfProjection()


def _perf_confirms() -> Projection[Any]:
    from aqe.perf.confirms import ConfirmsProjection

    return ConfirmsProjection()


def _flaky_predictions() -> Projection[Any]:
    from aqe.flakemodel.projection import PredictionsProjection

    return PredictionsProjection()


PROJECTIONS: dict[str, Callable[[], Projection[Any]]] = {
    "catalog": CatalogProjection,
    "history": HistoryProjection,
    "patterns": _patterns,
    "experience": _experience,
    "membership": _membership,
    "perf": _perf,
    "perf-confirms": _perf_confirms,
    "coverage": _coverage,
    "flaky-predictions": _flaky_predictions,
}
"""Every projection aqe ships, by name; later capabilities add theirs."""


def get_projection(name: str) -> Projection[Any]:
    """A fresh instance of the named projection.

    Raises:
        UnknownProjectionError: no projection has that name.
    """
    try:
        factory = PROJECTIONS[name]
    except KeyError:
        raise UnknownProjectionError(name, tuple(sorted(PROJECTIONS))) from None
    return factory()
