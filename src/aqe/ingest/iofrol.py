"""The ABB Robotics IOF/ROL CI history (RETECS, Spieker et al., ISSTA 2017) as events.

The file is ``;``-separated with the header ``Id;Name;Duration;CalcPrio;LastRun;
LastResults;Verdict;Cycle``: one row per execution of a test case, ``Verdict`` 1 =
failed, 0 = passed, and ``LastResults`` the test's earlier verdicts, newest first
(``[]``, ``[0]``, ``[1, 0, 0]``). Rows are in ``Cycle`` order, and within a cycle in
``LastRun`` order.

A test can run more than once in one cycle (2,864 of the 27,664 (cycle, test) pairs
of the published file; 94% of those repeats follow a failure: reruns). ``LastResults``
counts every execution, a repeat in the same cycle included: the third execution of
test 78082 in cycle 1 has ``LastResults == [1, 1]``. A projection that keeps one
verdict per run (``HistoryProjection``) can only reproduce that when each execution
of a test is in a run of its own, so by default (``reruns="runs"``) a cycle becomes
one run per *pass*: pass 1 holds every test's first execution in the cycle, pass
``k`` every test's ``k``-th (at most 18 in the file). ``reruns="attempts"`` instead
makes one run per cycle in which a repeat is attempt ``k`` of its test; the
projection then keeps the last attempt's verdict (``r`` when it passed after a
failure), which is the usual meaning of a rerun but not what ``LastResults`` counts.

Assumptions the dataset does not state:

* ``Duration`` is in milliseconds (``duration_s = Duration / 1000``). Durations run
  from 2,459 to 860,832 (median 57,046), and a test reruns as little as 60 s after
  its previous execution: 57,046 seconds (16 hours) cannot fit, 57 seconds can.
* ``LastRun`` (``2015-02-13 16:13:00``) has no zone; it is read as UTC, so folds
  that turn it into a timestamp do not depend on the machine's zone.

Event ids are the events' default (content) ids, so loading the file again appends
nothing new.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import msgspec

from aqe.datasets import dataset_path, open_text
from aqe.errors import ReportError
from aqe.events import Event, Outcome, TestCaseExecuted, TestRunFinished, TestRunStarted

__all__ = [
    "DURATION_UNITS_PER_S",
    "ENV_VAR",
    "HEADER",
    "SOURCE",
    "SUITE",
    "IofrolRow",
    "IofrolRun",
    "Reruns",
    "cycle_events",
    "find_iofrol",
    "iofrol_test_id",
    "read_iofrol",
    "run_events",
    "split_runs",
]

ENV_VAR = "AQE_IOFROL"
"""Environment variable naming the CSV file; wins over the default location."""
HEADER = ("Id", "Name", "Duration", "CalcPrio", "LastRun", "LastResults", "Verdict", "Cycle")
DURATION_UNITS_PER_S = 1000
"""``Duration`` units per second (assumed milliseconds; see the module docstring)."""
SUITE = "iofrol"
SOURCE = "iofrol"

Reruns = Literal["runs", "attempts"]
"""How repeats of a test inside one cycle become events (see the module docstring)."""


class IofrolRow(msgspec.Struct, frozen=True, kw_only=True):
    """One row of the file: one execution of one test case."""

    id: int
    name: str
    duration: int
    """As in the file (milliseconds, assumed)."""
    calc_prio: int
    last_run: datetime
    """When this execution ran (UTC, assumed)."""
    last_results: tuple[int, ...]
    """Earlier verdicts of the test, newest first (1 = failed)."""
    verdict: int
    """1 = failed, 0 = passed."""
    cycle: int
    line: int = 0
    """Line in the file (1 = header), for messages."""


class IofrolRun(msgspec.Struct, frozen=True, kw_only=True):
    """The rows that become one run: a pass of a cycle, or a whole cycle."""

    run_id: str
    cycle: int
    pass_no: int
    """1 for a cycle's first pass (and for a whole cycle); ``k`` for its ``k``-th."""
    rows: tuple[IofrolRow, ...]


def find_iofrol(start: Path | None = None) -> Path | None:
    """Where the IOF/ROL CSV is, or None when it is nowhere to be found.

    ``$AQE_IOFROL`` when set (None if it names no file); else the copy shipped in the
    repository's ``data/iofrol.csv.gz``; else ``../shared/data/iofrol.csv`` relative to
    the repository root, then relative to ``start`` (default: the working directory).
    See :mod:`aqe.datasets`.
    """
    return dataset_path("iofrol", start)


def iofrol_test_id(name: str) -> str:
    """The aqe test identity of an IOF/ROL test name."""
    return f"{SUITE}.{name}"


def read_iofrol(path: Path | str) -> list[IofrolRow]:
    """Parse the whole file, in file order.

    Raises:
        ReportError: the file cannot be read, has another header, or a row is
            malformed (the error names the line and the field).
    """
    where = str(path)
    try:
        with open_text(Path(path)) as fh:
            return _parse(fh, where)
    except (OSError, EOFError) as exc:
        raise ReportError(
            where, f"cannot read the file: {getattr(exc, 'strerror', None) or exc}"
        ) from exc
    except UnicodeDecodeError as exc:
        raise ReportError(where, f"not UTF-8 text: {exc.reason}") from exc


def _parse(lines: Iterable[str], where: str) -> list[IofrolRow]:
    reader = csv.reader(lines, delimiter=";")
    header = next(reader, None)
    if header is None:
        raise ReportError(where, "empty file")
    if tuple(h.strip() for h in header) != HEADER:
        raise ReportError(
            where, f"header is {';'.join(header)!r}, expected {';'.join(HEADER)!r}", 1
        )
    rows: list[IofrolRow] = []
    for fields in reader:
        line = reader.line_num
        if not fields:
            continue
        if len(fields) != len(HEADER):
            raise ReportError(where, f"{len(fields)} fields, expected {len(HEADER)}", line)
        rows.append(_row(fields, where, line))
    return rows


def _int(value: str, field: str, where: str, line: int, low: int | None = 0) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ReportError(where, f"{field}: not an integer: {value!r}", line) from None
    if low is not None and number < low:
        raise ReportError(where, f"{field}: {number} is below {low}", line)
    return number


def _verdict(value: str, field: str, where: str, line: int) -> int:
    if value.strip() not in ("0", "1"):
        raise ReportError(where, f"{field}: expected 0 or 1, got {value!r}", line)
    return int(value)


def _row(fields: list[str], where: str, line: int) -> IofrolRow:
    id_, name, duration, prio, last_run, last_results, verdict, cycle = fields
    name = name.strip()
    if not name:
        raise ReportError(where, "Name: empty", line)
    try:
        when = datetime.fromisoformat(last_run.strip())
    except ValueError:
        raise ReportError(where, f"LastRun: not a date and time: {last_run!r}", line) from None
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    results = last_results.strip()
    if not (results.startswith("[") and results.endswith("]")):
        raise ReportError(where, f"LastResults: expected [v, ...], got {last_results!r}", line)
    inner = results[1:-1].strip()
    earlier = (
        tuple(_verdict(v, "LastResults", where, line) for v in inner.split(",")) if inner else ()
    )
    return IofrolRow(
        id=_int(id_, "Id", where, line),
        name=name,
        duration=_int(duration, "Duration", where, line),
        calc_prio=_int(prio, "CalcPrio", where, line, low=None),
        last_run=when,
        last_results=earlier,
        verdict=_verdict(verdict, "Verdict", where, line),
        cycle=_int(cycle, "Cycle", where, line),
        line=line,
    )


def _run_id(cycle: int, pass_no: int) -> str:
    base = f"iofrol-{cycle:04d}"
    return base if pass_no == 1 else f"{base}-rerun{pass_no - 1}"


def _by_cycle(rows: Iterable[IofrolRow]) -> dict[int, list[IofrolRow]]:
    cycles: dict[int, list[IofrolRow]] = {}
    for row in rows:
        cycles.setdefault(row.cycle, []).append(row)
    return dict(sorted(cycles.items()))


def split_runs(rows: Iterable[IofrolRow], *, reruns: Reruns = "runs") -> list[IofrolRun]:
    """The runs the rows become, in log order (cycle, then pass); rows keep file order.

    With ``reruns="runs"`` a cycle's pass ``k`` (run id ``iofrol-CCCC`` for the first,
    ``iofrol-CCCC-rerunK-1`` after it) holds each test's ``k``-th execution in the
    cycle; with ``"attempts"`` the whole cycle is one run ``iofrol-CCCC``.
    """
    out: list[IofrolRun] = []
    for cycle, members in _by_cycle(rows).items():
        if reruns == "attempts":
            out.append(
                IofrolRun(run_id=_run_id(cycle, 1), cycle=cycle, pass_no=1, rows=tuple(members))
            )
            continue
        passes: list[list[IofrolRow]] = []
        seen: dict[str, int] = {}
        for row in members:
            k = seen.get(row.name, 0)
            seen[row.name] = k + 1
            if k == len(passes):
                passes.append([])
            passes[k].append(row)
        out.extend(
            IofrolRun(run_id=_run_id(cycle, k), cycle=cycle, pass_no=k, rows=tuple(p))
            for k, p in enumerate(passes, start=1)
        )
    return out


def _outcome(verdict: int) -> Outcome:
    return "failed" if verdict else "passed"


def run_events(run: IofrolRun) -> list[Event]:
    """``TestRunStarted``, one ``TestCaseExecuted`` per row, ``TestRunFinished``.

    A test's repeats in the run become attempts 2, 3, ... placed right after its
    first execution (the projections expect one test's attempts together). Totals
    count each test once, by its last attempt; ``flaky`` counts tests that passed
    after a failed attempt.
    """
    order: dict[str, list[IofrolRow]] = {}
    for row in run.rows:
        order.setdefault(row.name, []).append(row)
    cases: list[Event] = []
    for name, executions in order.items():
        cases.extend(
            TestCaseExecuted(
                test_id=iofrol_test_id(name),
                run_id=run.run_id,
                outcome=_outcome(row.verdict),
                duration_s=row.duration / DURATION_UNITS_PER_S,
                attempt=attempt,
                suite=SUITE,
                name=name,
                started_at=row.last_run,
            )
            for attempt, row in enumerate(executions, start=1)
        )
    finals = [executions[-1].verdict for executions in order.values()]
    flaky = sum(
        1
        for executions in order.values()
        if executions[-1].verdict == 0 and any(r.verdict for r in executions[:-1])
    )
    started = TestRunStarted(
        run_id=run.run_id,
        suite=SUITE,
        source=SOURCE,
        started_at=min((r.last_run for r in run.rows), default=None),
    )
    finished = TestRunFinished(
        run_id=run.run_id,
        total=len(finals),
        passed=finals.count(0),
        failed=finals.count(1),
        flaky=flaky,
    )
    return [started, *cases, finished]


def cycle_events(
    rows: Sequence[IofrolRow], *, reruns: Reruns = "runs"
) -> list[tuple[int, list[Event]]]:
    """Per cycle, ascending: the events of its runs (see :func:`split_runs`)."""
    out: list[tuple[int, list[Event]]] = []
    for run in split_runs(rows, reruns=reruns):
        if not out or out[-1][0] != run.cycle:
            out.append((run.cycle, []))
        out[-1][1].extend(run_events(run))
    return out
