"""Choosing a pending run's tests from the history: which ids, what order, which subset.

Pure functions shared by ``aqe prioritize`` / ``aqe subset`` and the pytest plugin's
``--aqe-subset`` / ``--aqe-order``, so both make the same choice from the same log.

* **Identity.** Test ids (``pkg.tests.test_x.test_y``) stay the internal identity. What a
  runner takes is kept beside them (:func:`runner_names`): the newest pytest node id,
  class name and name any event recorded for the test. Pending tests may be given as
  either; node ids are mapped back (:func:`resolve_pending`) and ids the history does
  not know are *new*.
* **Order.** Priority first; ties go by :func:`history_order` (the newest run's own
  order), never alphabetically. New tests, and tests whose file changed, come first
  and are always selected.
* **Subset** (:func:`select`): the ordered tests are taken until the next would overrun
  the time budget, or until the selection reaches the target confidence: the share of
  the expected failures it covers, each known test weighing its smoothed failure rate
  ``(failures + 0.5) / (runs + 1)``. The rest is everything else, in order.
* **Split** (:func:`split_bins`): a subset dealt into ``N`` bins balanced by expected
  duration (longest first to the least loaded bin), each bin kept in priority order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import msgspec

from aqe.events import Event, TestCaseExecuted, TestCaseQuarantined, TestCaseUnquarantined
from aqe.ingest.identity import split_pytest_nodeid, test_identity
from aqe.learning.base import Policy
from aqe.learning.features import Cycle
from aqe.learning.training import Ranked, rank_pending

__all__ = [
    "FORMATS",
    "Pending",
    "Selection",
    "TestNames",
    "failure_weights",
    "history_order",
    "parse_budget",
    "prioritise",
    "quarantined_tests",
    "render",
    "resolve_pending",
    "resolve_policy",
    "runner_names",
    "select",
    "split_bins",
]

Format = Literal["pytest", "junit-classnames", "ids", "json"]
FORMATS: tuple[str, ...] = ("pytest", "junit-classnames", "ids", "json")

_BUDGET_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%|s|m|h)?\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600}

# The closing lines of `pytest --collect-only -q`, which a user pipes in as they are.
_PYTEST_NOISE = re.compile(r"^(\d+ tests? collected|no tests (ran|collected)|=+ )")


class TestNames(msgspec.Struct, frozen=True, kw_only=True):
    """What a runner calls one test: the newest values the events gave."""

    __test__ = False

    nodeid: str | None = None
    classname: str | None = None
    name: str | None = None
    file: str | None = None


_BUDGET_RTOL = 1e-9
"""Relative slack of the budget comparison: rounding, not a test's worth of seconds."""


def parse_budget(value: str, total_s: float) -> float:
    """Seconds: ``30%`` of ``total_s``, or a duration (``300``/``300s``, ``5m``, ``1.5h``).

    Raises:
        ValueError: anything else, or a share outside (0, 100]%.
    """
    match = _BUDGET_RE.match(value)
    if not match:
        raise ValueError(f"{value!r}: a share like 50% or a duration like 300s, 5m, 1h")
    number, unit = float(match[1]), match[2] or "s"
    if unit == "%":
        if not 0 < number <= 100:
            raise ValueError(f"{value!r}: a share must be in (0, 100]%")
        # Scale by the share, not by the number then 100: ``total_s * 100 / 100`` can land
        # one float step below ``total_s``; ``total_s * 1.0`` is exact, so 100% is all.
        return total_s * (number / 100)
    return number * _UNIT_S[unit]


def runner_names(events: Iterable[Event]) -> dict[str, TestNames]:
    """Per test id, the newest node id, class name, name and file recorded."""
    names: dict[str, TestNames] = {}
    for event in events:
        if not isinstance(event, TestCaseExecuted):
            continue
        old = names.get(event.test_id) or TestNames()
        names[event.test_id] = TestNames(
            nodeid=event.nodeid or old.nodeid,
            classname=event.classname or old.classname,
            name=event.name or old.name,
            file=event.file or old.file,
        )
    return names


def quarantined_tests(events: Iterable[Event]) -> set[str]:
    """Test ids in quarantine after ``events`` (in log order)."""
    held: set[str] = set()
    for event in events:
        if isinstance(event, TestCaseQuarantined):
            held.add(event.test_id)
        elif isinstance(event, TestCaseUnquarantined):
            held.discard(event.test_id)
    return held


def history_order(cycles: Sequence[Cycle], also: Iterable[str] = ()) -> dict[str, int]:
    """A rank per known test for breaking priority ties: the newest run's order first.

    Tests of the newest cycle keep the order they ran in; tests last seen in older
    cycles follow, newest cycle first; then ``also`` (tests recorded without a verdict
    in any cycle: only ever skipped), in its order.
    """
    order: dict[str, int] = {}
    for cycle in reversed(cycles):
        for test_id in cycle.test_ids:
            order.setdefault(test_id, len(order))
    for test_id in also:
        order.setdefault(test_id, len(order))
    return order


class Pending(msgspec.Struct, frozen=True, kw_only=True):
    """The tests of a pending run as test ids, and which of them the history lacks."""

    test_ids: tuple[str, ...]
    unknown: tuple[str, ...]
    """The given entries (as written) whose test the history does not know: new tests."""
    nodeids: dict[str, str] = msgspec.field(default_factory=dict)
    """Test id -> the node id it was given as, where it was given as one."""


def _is_nodeid(entry: str) -> bool:
    return "::" in entry or entry.endswith(".py")


def resolve_pending(
    entries: Iterable[str], known: Iterable[str], names: Mapping[str, TestNames]
) -> Pending:
    """Map the entries (pytest node ids or test ids, one each) to test ids.

    Blank lines and the summary lines of ``pytest --collect-only -q`` are ignored. A
    node id the history recorded maps to its test; another node id maps by the identity
    rule (:mod:`aqe.ingest.identity`). Repeats are dropped, the first kept.
    """
    known_set = set(known)
    by_nodeid = {n.nodeid: t for t, n in names.items() if n.nodeid}
    test_ids: dict[str, None] = {}
    unknown: list[str] = []
    nodeids: dict[str, str] = {}
    for raw in entries:
        entry = raw.strip()
        if not entry or _PYTEST_NOISE.match(entry):
            continue
        if _is_nodeid(entry):
            test_id = by_nodeid.get(entry) or test_identity(*split_pytest_nodeid(entry))
            nodeids.setdefault(test_id, entry)
        else:
            test_id = entry
        if test_id in test_ids:
            continue
        test_ids[test_id] = None
        if test_id not in known_set:
            unknown.append(entry)
    return Pending(test_ids=tuple(test_ids), unknown=tuple(unknown), nodeids=nodeids)


DEFAULT_ALGORITHM = "failure-count"
"""What ranks a pending run when no algorithm or policy is named."""


def resolve_policy(spec: str | None, data_dir: Path) -> tuple[Policy, bool, str]:
    """``(policy, replay, label)`` for an algorithm name or a saved policy id.

    An algorithm (default :data:`DEFAULT_ALGORITHM`) learns by replaying the history
    (``replay`` True); a saved policy is loaded from ``<data_dir>/policies``.

    Raises:
        ConfigError: neither an algorithm nor a saved policy (from the loader).
    """
    from aqe.learning.registry import ALGORITHMS, make_policy

    name = spec or DEFAULT_ALGORITHM
    if name in ALGORITHMS:
        return make_policy(name), True, name
    from aqe.learning.policies import load_policy, policies_root

    policy, _ = load_policy(policies_root(data_dir), name)
    return policy, False, f"policy {name}"


def prioritise(
    policy: Policy,
    cycles: Sequence[Cycle],
    pending: Pending,
    *,
    replay: bool,
    changed: Iterable[str] = (),
    also: Iterable[str] = (),
) -> list[Ranked]:
    """The pending tests in run order: new and ``changed`` ones first, then by priority.

    Equal priorities keep :func:`history_order` (``also`` as there); tests it does not
    know are new and keep the order given.
    """
    known = history_order(cycles, also)
    ids = sorted(pending.test_ids, key=lambda t: known.get(t, len(known)))
    order = rank_pending(policy, cycles, ids, replay=replay)
    return _first(order, {t for t in ids if t not in known} | set(changed))


def failure_weights(cycles: Sequence[Cycle]) -> dict[str, float]:
    """Per known test, its smoothed failure rate ``(failures + 0.5) / (runs + 1)``."""
    runs: dict[str, int] = {}
    fails: dict[str, int] = {}
    for cycle in cycles:
        for test_id, verdict in zip(cycle.test_ids, cycle.verdicts, strict=True):
            runs[test_id] = runs.get(test_id, 0) + 1
            fails[test_id] = fails.get(test_id, 0) + verdict
    return {t: (fails[t] + 0.5) / (n + 1) for t, n in runs.items()}


class Selection(msgspec.Struct, frozen=True, kw_only=True):
    """A subset, the rest, and what the choice was measured against."""

    chosen: tuple[Ranked, ...]
    rest: tuple[Ranked, ...]
    always: int
    """Chosen because they are new or changed, whatever the budget."""
    used_s: float
    total_s: float
    confidence: float | None
    """The share of the known tests' expected failures the subset covers."""


def _first(order: Sequence[Ranked], always: set[str]) -> list[Ranked]:
    """``order`` with the ``always`` tests moved to the front, positions renumbered."""
    front = [r for r in order if r.test_id in always]
    back = [r for r in order if r.test_id not in always]
    return [msgspec.structs.replace(r, position=i) for i, r in enumerate(front + back, start=1)]


def select(
    order: Sequence[Ranked],
    *,
    budget_s: float | None = None,
    target_confidence: float | None = None,
    weights: Mapping[str, float] | None = None,
    always: Iterable[str] = (),
) -> Selection:
    """Choose a subset of ``order`` (see the module docstring).

    Args:
        order: the pending tests, highest priority first.
        budget_s: stop before the first test that would overrun this many seconds.
        target_confidence: stop once the chosen tests cover this share of the expected
            failures (``weights``).
        weights: per test, its expected failure rate (:func:`failure_weights`); tests
            without one count as known never to fail.
        always: test ids chosen first and regardless of the budget (new, changed).

    Raises:
        ValueError: neither a budget nor a target confidence.
    """
    if budget_s is None and target_confidence is None:
        raise ValueError("a subset needs a time budget or a target confidence")
    weights = weights or {}
    always_set = set(always)
    ordered = _first(order, always_set)
    expected = sum(weights.get(r.test_id, 0.0) for r in ordered if r.test_id not in always_set)
    chosen: list[Ranked] = []
    used = covered = 0.0
    forced = 0
    for item in ordered:
        if item.test_id in always_set:
            forced += 1
        else:
            if (
                target_confidence is not None
                and expected > 0
                and covered >= (target_confidence * expected - 1e-12)
            ):
                break
            # A sum in another order than the caller's total can differ in the last bits.
            if budget_s is not None and used + item.expected_duration_s > budget_s * (
                1 + _BUDGET_RTOL
            ):
                break
            covered += weights.get(item.test_id, 0.0)
        chosen.append(item)
        used += item.expected_duration_s
    return Selection(
        chosen=tuple(chosen),
        rest=tuple(ordered[len(chosen) :]),
        always=forced,
        used_s=used,
        total_s=sum(r.expected_duration_s for r in ordered),
        confidence=covered / expected if expected > 0 else None,
    )


def split_bins(chosen: Sequence[Ranked], index: int, count: int) -> list[Ranked]:
    """Bin ``index`` (1-based) of ``count`` bins balanced by expected duration.

    Deterministic: the longest test goes to the least loaded bin (the lowest-numbered
    among equals); each bin keeps priority order.

    Raises:
        ValueError: ``index`` outside ``1..count``.
    """
    if not 1 <= index <= count:
        raise ValueError(f"bin {index} of {count}: must be in 1..{count}")
    loads = [0.0] * count
    members: list[set[int]] = [set() for _ in range(count)]
    by_length = sorted(range(len(chosen)), key=lambda i: (-chosen[i].expected_duration_s, i))
    for i in by_length:
        target = min(range(count), key=lambda b: (loads[b], len(members[b]), b))
        loads[target] += chosen[i].expected_duration_s
        members[target].add(i)
    return [chosen[i] for i in sorted(members[index - 1])]


def _nodeid(test_id: str, names: Mapping[str, TestNames], given: Mapping[str, str]) -> str | None:
    if test_id in given:
        return given[test_id]
    known = names.get(test_id)
    return known.nodeid if known is not None else None


def render(
    items: Sequence[Ranked],
    fmt: str,
    names: Mapping[str, TestNames],
    given: Mapping[str, str] | None = None,
) -> tuple[list[str], int]:
    """The lines a runner takes, and how many tests had no runner name (printed as ids).

    ``pytest``: node ids; ``junit-classnames``: each class name once, in order (what
    Maven's and Gradle's test filters take); ``ids``: test ids; ``json``: one JSON
    array with every field and the node id.
    """
    given = given or {}
    missing = 0
    if fmt == "json":
        rows = [
            {**msgspec.to_builtins(r), "nodeid": _nodeid(r.test_id, names, given)} for r in items
        ]
        return [msgspec.json.encode(rows).decode()], 0
    lines: list[str] = []
    if fmt == "junit-classnames":
        seen: set[str] = set()
        for r in items:
            known = names.get(r.test_id)
            classname = known.classname if known is not None else None
            if classname is None:
                missing += 1
                classname = r.test_id.rpartition(".")[0] or r.test_id
            if classname not in seen:
                seen.add(classname)
                lines.append(classname)
        return lines, missing
    for r in items:
        line = _nodeid(r.test_id, names, given) if fmt == "pytest" else r.test_id
        if line is None:
            missing += 1
            line = r.test_id
        lines.append(line)
    return lines, missing
