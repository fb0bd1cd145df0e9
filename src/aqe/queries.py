"""The questions both faces ask: test history, runs, and a pending run's ranking.

The CLI (``aqe history``, ``flaky``, ``broken``, ``runs``, ``prioritize``, ``subset``)
and the MCP server (``test_history``, ``flaky_tests``, ``broken_tests``, ``test_runs``,
``prioritize_tests``, ``subset_tests``) answer with these functions: the CLI renders
tables or ``--json``, the MCP server returns the JSON. Nothing here imports click or
prints; a face decides how a warning or an error looks (the CLI turns a bad
``--since`` into a usage error naming the option, for one).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aqe.app import AppContext, ProgressBar, catch_up, open_log, projections_root, run
from aqe.errors import AqeError, ConfigError, NoHistoryError

if TYPE_CHECKING:
    from aqe.learning.features import Cycle
    from aqe.learning.selection import Pending, TestNames
    from aqe.learning.training import Ranked
    from aqe.log.jetstream import JetStreamEventLog
    from aqe.projections.history import HistoryPolicy

__all__ = [
    "RUN_SORTS",
    "TEST_SORTS",
    "RankingPlan",
    "algorithm_names",
    "changed_tests",
    "find_tests",
    "fold_history",
    "history_policy",
    "learning_history",
    "load_history",
    "parse_since",
    "select_runs",
    "select_tests",
]

Row = dict[str, Any]

_DURATION_RE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

TEST_SORTS: dict[str, Callable[[Row], Any]] = {
    "flip-rate": lambda r: (-(r["flip_rate"] or 0.0), r["test_id"]),
    "pass-rate": lambda r: (r["pass_rate"] if r["pass_rate"] is not None else 2.0, r["test_id"]),
    "runs": lambda r: (-r["runs"], r["test_id"]),
    "failures": lambda r: (-(r["failures"] + r["errors"]), r["test_id"]),
    "duration": lambda r: (-r["duration_p95_s"], r["test_id"]),
    "last-seen": lambda r: (-r["last_seen_ns"], r["test_id"]),
    "name": lambda r: r["test_id"],
}
"""The orders of test rows, by name."""

RUN_SORTS = ("newest", "oldest", "failures")
"""The orders of run rows."""


# -- the test history ---------------------------------------------------------------------


def parse_since(value: str | None) -> int | None:
    """``7d``/``12h``/``30m``/``2w`` ago, or an ISO date/time; as epoch ns (None: no limit).

    Raises:
        ConfigError: Neither a duration nor an ISO date.
    """
    if not value:
        return None
    match = _DURATION_RE.match(value.strip())
    if match:
        seconds = int(match[1]) * _UNIT_S[match[2]]
        return int((time.time() - seconds) * 1e9)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"{value!r}: use a duration like 7d, 12h, 30m or an ISO date like 2026-11-01"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1e9)


def history_policy(flip_threshold: float | None, broken_streak: int | None) -> HistoryPolicy | None:
    """The default policy with these two overridden; None when neither is given."""
    from aqe.projections.history import DEFAULT_POLICY, HistoryPolicy

    if flip_threshold is None and broken_streak is None:
        return None
    return HistoryPolicy(
        window=DEFAULT_POLICY.window,
        min_runs=DEFAULT_POLICY.min_runs,
        flip_min_runs=DEFAULT_POLICY.flip_min_runs,
        flip_threshold=DEFAULT_POLICY.flip_threshold if flip_threshold is None else flip_threshold,
        broken_streak=DEFAULT_POLICY.broken_streak if broken_streak is None else broken_streak,
    )


async def fold_history(
    log: JetStreamEventLog, app: AppContext, *, bar: ProgressBar | None = None
) -> str | None:
    """Fold new events into the history projection; None, or why it was skipped.

    Only the snapshot is saved: every question reads it, and the LanceDB tables (for
    other readers) cost LanceDB's import and writer, about 220 MB at 200k tests, in
    every ingest. ``aqe consume history`` writes them.
    """
    from aqe.projections.history import HistoryProjection

    return await catch_up(log, app, HistoryProjection(), bar=bar, materialize=False)


def load_history(
    app: AppContext, policy: HistoryPolicy | None = None, *, refresh: bool = True
) -> tuple[list[Row], list[Row], str | None]:
    """``(tests, runs, why not refreshed)``: the history rows, after folding what the log
    has that the projection lacks (unless ``refresh`` is off)."""
    from aqe.projections.history import load_rows

    skipped = None
    if refresh:

        async def go() -> str | None:
            async with open_log(app) as log:
                return await fold_history(log, app)

        skipped = run(go())
    tests, runs, _ = load_rows(projections_root(app) / "history", policy)
    return tests, runs, skipped


def find_tests(tests: list[Row], test: str) -> list[Row]:
    """The rows whose id is ``test``, else those whose id contains it.

    Raises:
        AqeError: No test matches.
    """
    exact = [r for r in tests if r["test_id"] == test]
    matches = exact or [r for r in tests if test in r["test_id"]]
    if not matches:
        raise AqeError(f"no test matches {test!r} ({len(tests)} tests known)")
    return matches


def select_tests(rows: list[Row], since_ns: int | None, sort: str, limit: int | None) -> list[Row]:
    """Test rows seen since ``since_ns``, in the order ``sort`` names, at most ``limit``."""
    if since_ns is not None:
        rows = [r for r in rows if r["last_seen_ns"] >= since_ns]
    rows = sorted(rows, key=TEST_SORTS[sort])
    return rows[:limit] if limit else rows


def select_runs(rows: list[Row], since_ns: int | None, sort: str, limit: int | None) -> list[Row]:
    """Run rows started since ``since_ns``, in the order ``sort`` names, at most ``limit``."""
    if since_ns is not None:
        rows = [r for r in rows if r["started_ns"] >= since_ns]
    if sort == "newest":
        rows = rows[::-1]
    elif sort == "failures":
        rows = sorted(rows, key=lambda r: (-(r["failed"] + r["errors"]), -r["first_seq"]))
    return rows[:limit] if limit else rows


# -- a pending run's ranking --------------------------------------------------------------

_NO_RUNS = "the log holds no test runs yet: `aqe ingest` reports first, or pass --dataset iofrol"


def learning_history(app: AppContext, dataset: Path | None) -> tuple[list[Cycle], str, int]:
    """``(cycles, source, last AQE_TESTS sequence)`` to learn from: a data set or the log.

    Raises:
        NoHistoryError: The log holds no test runs (and no ``dataset`` was given).
    """
    from aqe.learning.training import history_from_log, load_cycles

    if dataset is not None:
        return load_cycles(dataset), str(dataset), 0

    async def go() -> tuple[list[Cycle], int]:
        async with open_log(app) as log:
            return await history_from_log(log)

    cycles, last = run(go())
    if not cycles:
        raise NoHistoryError(_NO_RUNS)
    return cycles, "log", last


def algorithm_names(algo: str) -> list[str]:
    """The algorithms ``algo`` names: one, a comma-separated list, or ``all``.

    Raises:
        ConfigError: A name no algorithm has.
    """
    from aqe.learning.registry import ALGORITHMS, BASELINES, LEARNERS, ORACLES

    if algo == "all":
        return [*BASELINES, *LEARNERS, *ORACLES]
    names = [n.strip() for n in algo.split(",") if n.strip()]
    for name in names or [algo]:
        if name not in ALGORITHMS:
            raise ConfigError(
                f"{name!r}: one of {', '.join(sorted(ALGORITHMS))}, a comma-separated list, or all"
            )
    return names


def changed_tests(
    changed: Iterable[str], pending: Pending, names: dict[str, TestNames]
) -> set[str]:
    """Pending tests whose file is among the ``changed`` paths (one per line)."""
    paths = {line.strip().removeprefix("./") for line in changed if line.strip()}
    found = set()
    for test_id in pending.test_ids:
        known = names.get(test_id)
        nodeid = pending.nodeids.get(test_id) or (known.nodeid if known else None) or ""
        file = nodeid.partition("::")[0] or (known.file if known else None)
        if file and file.removeprefix("./") in paths:
            found.add(test_id)
    return found


def _stored_policy(app: AppContext, policy_id: str) -> Any:
    """A policy the log names, from the local cache or else fetched from the object
    store (a cached copy whose digest the log does not name is fetched again)."""
    from aqe.learning.policies import load_policy, policies_root
    from aqe.learning.registry import check_policy_id
    from aqe.learning.store import fetch_policy, pack_policy, read_policies

    root = policies_root(app.settings.data_dir)
    check_policy_id(policy_id)

    async def go() -> None:
        async with open_log(app) as log:
            known = await read_policies(log)
            trained = known.get(policy_id)
            if trained is None:
                names = ", ".join(sorted(known)) or "none"
                raise ConfigError(f"the log names no policy {policy_id!r} (known: {names})")
            cached = root / policy_id
            if cached.is_dir() and trained.digest:
                import hashlib

                if hashlib.sha256(pack_policy(cached)).hexdigest() == trained.digest:
                    return
            await fetch_policy(log, trained, root)

    run(go())
    policy, _ = load_policy(root, policy_id)
    return policy


class RankingPlan:
    """A pending run ranked from the history, with what is needed to print it.

    Args:
        app: Where the log and the policies are.
        policy_id: A saved policy to rank with; else ``algo`` replays the history.
        algo: An algorithm name (see :func:`algorithm_names`).
        tests: The pending run's tests, one per line (node ids or test ids); None:
            every test the history knows.
        changed: Changed paths, one per line: tests in them go first.
        fmt: How :meth:`lines` names tests; None: pytest node ids where the history
            has them, else test ids.
        dataset: Rank from this IOF/ROL data set instead of the log.
        warn: Told what a reader should know (tests not in the history, names missing).

    Raises:
        NoHistoryError: The log holds no test runs (and no ``dataset`` was given).
        ConfigError: No such algorithm, or no such stored policy.
    """

    def __init__(
        self,
        app: AppContext,
        *,
        policy_id: str | None,
        algo: str,
        tests: Iterable[str] | None,
        changed: Iterable[str] | None,
        fmt: str | None,
        dataset: Path | None,
        warn: Callable[[str], None],
    ) -> None:
        from aqe.learning.features import from_events
        from aqe.learning.selection import (
            history_order,
            prioritise,
            resolve_pending,
            resolve_policy,
            runner_names,
        )
        from aqe.learning.training import load_cycles, read_test_events

        self._warn = warn
        if dataset is not None:
            events: list[Any] = []
            self.cycles = load_cycles(dataset)
        else:

            async def go() -> list[Any]:
                async with open_log(app) as log:
                    return (await read_test_events(log))[0]

            events = run(go())
            self.cycles = from_events(events)
            if not self.cycles:
                raise NoHistoryError(_NO_RUNS)
        self.names = runner_names(events)
        known = history_order(self.cycles, self.names)
        entries = list(tests) if tests is not None else list(known)
        self.pending = resolve_pending(entries, known, self.names)
        if self.pending.unknown:
            shown = ", ".join(self.pending.unknown[:3])
            warn(
                f"aqe: {len(self.pending.unknown)} of {len(self.pending.test_ids)} tests are "
                f"not in the history (new: run first, always selected): {shown}"
                + (" ..." if len(self.pending.unknown) > 3 else "")
            )
        in_changed = set() if changed is None else changed_tests(changed, self.pending, self.names)
        if policy_id:
            policy = _stored_policy(app, policy_id)
            replay, self.label = False, f"policy {policy_id}"
        else:
            (name,) = algorithm_names(algo)
            policy, replay, self.label = resolve_policy(name, app.settings.data_dir)
        self.order = prioritise(
            policy, self.cycles, self.pending, replay=replay, changed=in_changed, also=self.names
        )
        self.always = {r.test_id for r in self.order if r.test_id not in known} | in_changed
        if fmt is None:
            has_nodeids = any(n.nodeid for n in self.names.values()) or self.pending.nodeids
            fmt = "pytest" if has_nodeids else "ids"
        self.fmt = fmt

    def lines(self, items: Sequence[Ranked]) -> list[str]:
        """``items`` named in :attr:`fmt`, one line each."""
        from aqe.learning.selection import render

        lines, missing = render(items, self.fmt, self.names, self.pending.nodeids)
        if missing:
            self._warn(
                f"aqe: {missing} tests have no {self.fmt} name in the history (no plugin, "
                "pytest-json or pytest JUnit result recorded one): printed as test ids"
            )
        return lines
