"""The IOF/ROL loader on a few inline rows: parsing, errors, runs, events."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aqe.errors import ReportError
from aqe.events import Envelope, Event, TestCaseExecuted, TestRunFinished, TestRunStarted
from aqe.ingest.iofrol import (
    ENV_VAR,
    IofrolRow,
    cycle_events,
    find_iofrol,
    iofrol_test_id,
    read_iofrol,
    run_events,
    split_runs,
)
from aqe.log.subjects import subject_for
from aqe.projections.history import HistoryProjection, HistoryState

HEADER = "Id;Name;Duration;CalcPrio;LastRun;LastResults;Verdict;Cycle"
# Test 10 fails, is rerun twice in cycle 1 (passing the second time) and passes in
# cycle 2; 11 runs once a cycle. The file's own rows, shape for shape.
ROWS = """\
1;10;57262;0;2015-02-13 16:13:00;[];1;1
2;11;2459;0;2015-02-13 16:13:00;[];0;1
3;10;57262;0;2015-02-13 16:17:00;[1];1;1
4;10;57262;0;2015-02-13 16:19:00;[1, 1];0;1
5;11;2459;0;2015-02-19 16:18:00;[0];1;2
6;10;57262;0;2015-02-19 16:18:00;[0, 1, 1];0;2
"""


def write(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    path = tmp_path / "iofrol.csv"
    path.write_text(f"{header}\n{body}", encoding="utf-8")
    return path


@pytest.fixture
def rows(tmp_path: Path) -> list[IofrolRow]:
    return read_iofrol(write(tmp_path, ROWS))


def fold(events: list[Event]) -> HistoryState:
    projection = HistoryProjection()
    state = projection.initial()
    for seq, event in enumerate(events, start=1):
        env = Envelope(
            stream="AQE_TESTS",
            seq=seq,
            subject=subject_for(event),
            event_id=event.default_id(),
            event_type=event.type_tag(),
            recorded_at_ns=seq,
            data=event.to_json(),
        )
        state = projection.apply(state, env, event)
    return state


def test_rows_are_parsed_with_their_lines(rows: list[IofrolRow]) -> None:
    assert len(rows) == 6
    first, _, _, fourth, *_ = rows
    assert first == IofrolRow(
        id=1,
        name="10",
        duration=57262,
        calc_prio=0,
        last_run=datetime(2015, 2, 13, 16, 13, tzinfo=UTC),
        last_results=(),
        verdict=1,
        cycle=1,
        line=2,
    )
    assert fourth.last_results == (1, 1)
    assert fourth.line == 5


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ("7;12;100;0;2015-02-13 16:13:00;[];2;3", "Verdict"),
        ("7;12;100;0;2015-02-13 16:13:00;[0, x];0;3", "LastResults"),
        ("7;12;100;0;2015-02-13 16:13:00;0, 1;0;3", "LastResults"),
        ("7;12;1.5;0;2015-02-13 16:13:00;[];0;3", "Duration"),
        ("7;12;-1;0;2015-02-13 16:13:00;[];0;3", "Duration"),
        ("7;12;100;0;yesterday;[];0;3", "LastRun"),
        ("7;12;100;0;2015-02-13 16:13:00;[];0;three", "Cycle"),
        ("7;;100;0;2015-02-13 16:13:00;[];0;3", "Name"),
        ("x;12;100;0;2015-02-13 16:13:00;[];0;3", "Id"),
        ("7;12;100;0;2015-02-13 16:13:00;[];0", "7 fields"),
    ],
)
def test_a_malformed_row_names_its_line_and_field(tmp_path: Path, row: str, field: str) -> None:
    path = write(tmp_path, ROWS + row + "\n")
    with pytest.raises(ReportError, match=field) as info:
        read_iofrol(path)
    assert info.value.line == 8
    assert info.value.path == str(path)


def test_another_header_or_no_file_is_a_report_error(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="header") as info:
        read_iofrol(write(tmp_path, ROWS, header="Id,Name,Duration"))
    assert info.value.line == 1
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(ReportError, match="empty file"):
        read_iofrol(empty)
    with pytest.raises(ReportError, match="cannot read"):
        read_iofrol(tmp_path / "absent.csv")


def test_each_execution_in_a_cycle_is_a_run_of_its_own(rows: list[IofrolRow]) -> None:
    runs = split_runs(rows)
    assert [(r.run_id, r.cycle, r.pass_no, [x.id for x in r.rows]) for r in runs] == [
        ("iofrol-0001", 1, 1, [1, 2]),
        ("iofrol-0001-rerun1", 1, 2, [3]),
        ("iofrol-0001-rerun2", 1, 3, [4]),
        ("iofrol-0002", 2, 1, [5, 6]),
    ]


def test_attempts_mode_makes_one_run_per_cycle(rows: list[IofrolRow]) -> None:
    runs = split_runs(rows, reruns="attempts")
    assert [r.run_id for r in runs] == ["iofrol-0001", "iofrol-0002"]
    events = run_events(runs[0])
    cases = [e for e in events if isinstance(e, TestCaseExecuted)]
    # A test's attempts follow each other, in file order.
    assert [(c.name, c.attempt, c.outcome) for c in cases] == [
        ("10", 1, "failed"),
        ("10", 2, "failed"),
        ("10", 3, "passed"),
        ("11", 1, "passed"),
    ]
    finished = events[-1]
    assert isinstance(finished, TestRunFinished)
    assert (finished.total, finished.passed, finished.failed, finished.flaky) == (2, 2, 0, 1)
    assert fold(events).tests["iofrol.10"].recent == "r"


def test_a_run_is_started_cases_finished(rows: list[IofrolRow]) -> None:
    events = run_events(split_runs(rows)[0])
    started, first, second, finished = events
    assert started == TestRunStarted(
        run_id="iofrol-0001",
        suite="iofrol",
        source="iofrol",
        started_at=datetime(2015, 2, 13, 16, 13, tzinfo=UTC),
    )
    assert first == TestCaseExecuted(
        test_id="iofrol.10",
        run_id="iofrol-0001",
        outcome="failed",
        duration_s=57.262,  # Duration is taken as milliseconds
        attempt=1,
        suite="iofrol",
        name="10",
        started_at=datetime(2015, 2, 13, 16, 13, tzinfo=UTC),
    )
    assert (second.test_id, second.outcome) == ("iofrol.11", "passed")  # type: ignore[attr-defined]
    assert finished == TestRunFinished(run_id="iofrol-0001", total=2, passed=1, failed=1)
    assert iofrol_test_id("10") == "iofrol.10"


def test_cycles_ascend_and_rows_keep_file_order(rows: list[IofrolRow]) -> None:
    shuffled = rows[4:] + rows[:4]  # cycle 2 first
    cycles = cycle_events(shuffled)
    assert [c for c, _ in cycles] == [1, 2]
    assert [(e.run_id, e.test_id) for e in cycles[0][1] if isinstance(e, TestCaseExecuted)] == [
        ("iofrol-0001", "iofrol.10"),
        ("iofrol-0001", "iofrol.11"),
        ("iofrol-0001-rerun1", "iofrol.10"),
        ("iofrol-0001-rerun2", "iofrol.10"),
    ]
    assert len(cycles[0][1]) == 2 + 2 + 3 + 3


def test_loading_twice_gives_the_same_event_ids(rows: list[IofrolRow]) -> None:
    def ids() -> list[str]:
        return [e.default_id() for _, events in cycle_events(rows) for e in events]

    first = ids()
    assert first == ids()
    assert len(set(first)) == len(first)


def test_folding_the_runs_reproduces_last_results(rows: list[IofrolRow]) -> None:
    events = [e for _, cycle in cycle_events(rows) for e in cycle]
    state = fold(events)
    assert state.tests["iofrol.10"].recent == "ppff"  # newest first
    assert state.tests["iofrol.11"].recent == "fp"
    # The latest row of each test: its LastResults are everything after its verdict.
    for row in (rows[4], rows[5]):
        recent = state.tests[iofrol_test_id(row.name)].recent
        assert tuple(0 if v in "pr" else 1 for v in recent[1:]) == row.last_results


def test_find_iofrol_prefers_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, ROWS)
    monkeypatch.setenv(ENV_VAR, str(path))
    assert find_iofrol() == path
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "absent.csv"))
    assert find_iofrol() is None


def test_find_iofrol_looks_in_the_shipped_copy_then_beside_the_repository_then_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aqe.datasets as datasets

    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setattr(datasets, "_SHIPPED", tmp_path / "nowhere" / "data")
    monkeypatch.setattr(datasets, "_REPO_ROOT", tmp_path / "nowhere")
    (tmp_path / "repo").mkdir()
    assert find_iofrol(tmp_path / "repo") is None
    data = tmp_path / "shared" / "data"
    data.mkdir(parents=True)
    (data / "iofrol.csv").write_text(HEADER + "\n", encoding="utf-8")
    assert find_iofrol(tmp_path / "repo") == (data / "iofrol.csv").resolve()
    monkeypatch.setattr(datasets, "_REPO_ROOT", tmp_path / "repo")
    assert find_iofrol(tmp_path / "nowhere") == (data / "iofrol.csv").resolve()
    shipped = tmp_path / "repo" / "data"
    shipped.mkdir()
    with gzip.open(shipped / "iofrol.csv.gz", "wt", encoding="utf-8") as fh:
        fh.write(HEADER + "\n" + ROWS)
    monkeypatch.setattr(datasets, "_SHIPPED", shipped)
    assert find_iofrol(tmp_path / "nowhere") == (shipped / "iofrol.csv.gz").resolve()
    assert read_iofrol(shipped / "iofrol.csv.gz") == read_iofrol(write(tmp_path, ROWS))


def test_the_repository_ships_the_published_iofrol_file(monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    from aqe.datasets import open_text

    monkeypatch.delenv(ENV_VAR, raising=False)
    path = find_iofrol()
    assert path is not None
    assert path.name == "iofrol.csv.gz"
    with open_text(path) as fh:
        text = fh.read()
    assert hashlib.sha256(text.encode()).hexdigest() == (
        "70e18e1525445f2b1193a9e2ec793365c13e61e7e44a67ce54d8fa03ea3d7022"
    )
