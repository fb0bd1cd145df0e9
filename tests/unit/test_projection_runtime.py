"""The projection runtime over the in-memory log: resume, idempotence, dead letters."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from aqe.errors import PayloadTooLargeError, ProjectionError
from aqe.events import AgentHeartbeat, AgentRegistered, Envelope, Event, TestCaseExecuted
from aqe.log import InMemoryEventLog, NewEvent, load_stream_specs
from aqe.projections import (
    CatalogProjection,
    CatalogState,
    DeadLetter,
    MemoryDeadLetters,
    ProjectionRunner,
    SnapshotStore,
    projection_lock,
    rebuild,
    verify,
)
from aqe.projections.deadletter import bounded_letter
from aqe.projections.history import (
    HistoryProjection,
    HistoryState,
    PendingExecution,
    RunHistory,
    TestHistory,
)
from aqe.projections.store import Snapshot
from support.waiting import until as wait_until


async def seeded_log(n_tests: int = 30, runs: int = 4) -> InMemoryEventLog:
    log = InMemoryEventLog(load_stream_specs())
    for r in range(runs):
        await log.append_batch(
            [
                NewEvent(
                    event=TestCaseExecuted(
                        test_id=f"tests/test_m.py::test_{i}",
                        run_id=f"run-{r}",
                        outcome="failed" if (i * r) % 7 == 3 else "passed",
                        duration_s=0.01 * i,
                    )
                )
                for i in range(n_tests)
            ]
        )
    await log.append(AgentRegistered(agent_id="a1", role="runner"))
    for beat in range(1, 6):
        await log.append(AgentHeartbeat(agent_id="a1", beat=beat))
    return log


def runner(
    log: InMemoryEventLog, directory: Path, dlq: MemoryDeadLetters | None = None, **kw: object
) -> ProjectionRunner[CatalogState]:
    proj = CatalogProjection()
    return ProjectionRunner(
        proj,
        log,
        SnapshotStore(proj, directory),
        dlq or MemoryDeadLetters(),
        **kw,  # type: ignore[arg-type]
    )


async def test_catalog_counts_types_streams_and_aggregates(tmp_path: Path) -> None:
    log = await seeded_log()
    stats = await runner(log, tmp_path / "catalog").run()
    assert stats.applied == 30 * 4 + 6
    state = SnapshotStore(CatalogProjection(), tmp_path / "catalog").load().state
    assert state.events == 126
    assert state.by_type == {
        "tests.case.executed.v1": 120,
        "agents.agent.registered.v1": 1,
        "agents.agent.heartbeat.v1": 5,
    }
    assert state.by_stream == {"AQE_TESTS": 120, "AQE_AGENTS": 6}
    assert len(state.aggregates["tests.case"]) == 30
    entry = state.aggregates["agents.agent"]["a1"]
    assert (entry.events, entry.first_seq, entry.last_seq) == (6, 1, 6)
    assert entry.last_type == "agents.agent.heartbeat.v1"


async def test_resume_applies_only_new_events(tmp_path: Path) -> None:
    log = await seeded_log()
    await runner(log, tmp_path / "c").run()
    await log.append(AgentHeartbeat(agent_id="a1", beat=6))
    second = await runner(log, tmp_path / "c").run()
    assert second.applied == 1
    assert second.resumed_from == {
        "AQE_AGENTS": 6,
        "AQE_LEARNING": 0,
        "AQE_PATTERNS": 0,
        "AQE_TESTS": 120,
    }
    again = await runner(log, tmp_path / "c").run()
    assert again.applied == 0


async def test_incremental_equals_rebuild_from_zero(tmp_path: Path) -> None:
    log = await seeded_log()
    # Fold in small steps, as a consumer that keeps being restarted would.
    for until in (7, 50, 51, 119, 200):
        await runner(log, tmp_path / "inc").run(
            until={"AQE_TESTS": until, "AQE_AGENTS": min(until, 6), "AQE_PATTERNS": 0}
        )
    await runner(log, tmp_path / "full").run()
    proj = CatalogProjection()
    inc = SnapshotStore(proj, tmp_path / "inc").load().state
    full = SnapshotStore(proj, tmp_path / "full").load().state
    assert proj.encode(inc) == proj.encode(full)


async def test_corrupt_and_unknown_messages_are_parked_and_the_run_goes_on(
    tmp_path: Path,
) -> None:
    log = await seeded_log(n_tests=3, runs=1)
    await log.append_raw("aqe.tests.case.broken.executed", b"\x00not json")
    await log.append_raw("aqe.tests.case.alien.executed", b'{"event":"tests.case.mutated.v9"}')
    await log.append(TestCaseExecuted(test_id="after", run_id="r", outcome="passed"))
    dlq = MemoryDeadLetters()
    stats = await runner(log, tmp_path / "c", dlq).run()
    assert stats.dead_letters == 2
    assert stats.applied == 3 + 6 + 1
    assert [(d.stream, d.seq) for d in dlq.parked] == [("AQE_TESTS", 4), ("AQE_TESTS", 5)]
    assert "not JSON" in dlq.parked[0].reason
    assert "tests.case.mutated.v9" in dlq.parked[1].reason
    assert dlq.parked[0].data == b"\x00not json"
    snap = SnapshotStore(CatalogProjection(), tmp_path / "c").load()
    assert snap.checkpoints["AQE_TESTS"] == 6
    assert snap.dead_letters == 2


class ExplodingCatalog(CatalogProjection):
    def apply(self, state: CatalogState, envelope: Envelope, event: Event) -> CatalogState:
        if isinstance(event, AgentHeartbeat) and event.beat == 3:
            raise RuntimeError("cannot fold beat 3")
        return super().apply(state, envelope, event)


async def test_apply_failure_is_parked(tmp_path: Path) -> None:
    log = await seeded_log(n_tests=2, runs=1)
    dlq = MemoryDeadLetters()
    proj = ExplodingCatalog()
    stats = await ProjectionRunner(proj, log, SnapshotStore(proj, tmp_path), dlq).run()
    assert stats.dead_letters == 1
    assert "cannot fold beat 3" in dlq.parked[0].reason
    assert stats.applied == 2 + 5


async def test_rebuild_swaps_in_and_verify_compares(tmp_path: Path) -> None:
    log = await seeded_log()
    await runner(log, tmp_path / "catalog").run()
    proj = CatalogProjection()
    report = await verify(proj, log, tmp_path)
    assert report.equal
    assert report.differences == []
    # Tamper with the live state: verify must name the difference.
    store = SnapshotStore(proj, tmp_path / "catalog")
    snap = store.load()
    snap.state.by_type["tests.case.executed.v1"] += 1
    store.save(snap)
    report = await verify(proj, log, tmp_path)
    assert not report.equal
    assert any("tests.case.executed.v1" in d for d in report.differences)
    stats = await rebuild(proj, log, tmp_path, MemoryDeadLetters())
    assert stats.applied == 126
    assert (await verify(proj, log, tmp_path)).equal
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["catalog"]


async def test_verify_needs_a_live_projection(tmp_path: Path) -> None:
    log = await seeded_log(1, 1)
    with pytest.raises(ProjectionError, match="no live state"):
        await verify(CatalogProjection(), log, tmp_path)


def test_lock_refuses_a_second_holder(tmp_path: Path) -> None:
    # flock locks are per open file description: a second open is refused.
    with (
        projection_lock(tmp_path / "catalog"),
        pytest.raises(ProjectionError, match="in use"),
        projection_lock(tmp_path / "catalog"),
    ):
        pass


def test_snapshot_of_another_projection_is_refused(tmp_path: Path) -> None:
    store = SnapshotStore(CatalogProjection(), tmp_path)
    store.save(store.load())
    other = CatalogProjection()
    other.name = "other"
    with pytest.raises(ProjectionError, match="belongs to projection catalog"):
        SnapshotStore(other, tmp_path).load()


async def test_verify_reports_lag_behind_the_streams_end(tmp_path: Path) -> None:
    log = await seeded_log(n_tests=3, runs=1)
    await runner(log, tmp_path / "catalog").run()
    assert (await verify(CatalogProjection(), log, tmp_path)).equal
    await log.append(AgentHeartbeat(agent_id="a1", beat=6))
    await log.append(AgentHeartbeat(agent_id="a1", beat=7))
    report = await verify(CatalogProjection(), log, tmp_path)
    assert not report.equal
    assert report.lag == 2
    assert report.checkpoints["AQE_AGENTS"] == 6
    assert report.stream_ends["AQE_AGENTS"] == 8
    # What was folded is still compared, and is right: the only difference is the lag.
    assert report.differences == [
        "AQE_AGENTS: live checkpoint 6 lags the stream's end 8 by 2 events "
        "(run `aqe consume catalog`)"
    ]
    await runner(log, tmp_path / "catalog").run()
    assert (await verify(CatalogProjection(), log, tmp_path)).equal


def _wire_size(headers: dict[str, str], data: bytes) -> int:
    """Bytes the server counts against max_payload: the header block plus the payload."""
    block = b"NATS/1.0\r\n" + b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items())
    return len(block) + len(b"\r\n") + len(data)


def _envelope(data: bytes, headers: dict[str, str] | None = None) -> Envelope:
    return Envelope(
        stream="AQE_TESTS",
        seq=7,
        subject="aqe.tests.case.x.executed",
        event_id="",
        event_type="",
        recorded_at_ns=0,
        data=data,
        headers=headers or {},
    )


@pytest.mark.parametrize("limit", [1024, 64 * 1024, 1024 * 1024])
@pytest.mark.parametrize("extra", [0, 1, 500, 10_000])
def test_a_dead_letter_always_fits_the_servers_max_payload(limit: int, extra: int) -> None:
    headers = {"Aqe-Event-Type": "tests.case.executed.v1", "X-Big": "b" * 3000}
    for size in (0, 10, limit // 2, limit - extra, limit):
        env = _envelope(b"z" * max(0, size), headers)
        sent_headers, data, letter = bounded_letter("history", env, "r" * extra, limit)
        assert _wire_size(sent_headers, data) <= limit
        assert data == env.data[: len(data)]
        assert letter.copy == sent_headers["Aqe-Dlq-Copy"]
        assert letter.size == len(env.data)
        if letter.copy == "full":
            assert data == env.data
        elif letter.copy == "truncated":
            assert 0 < len(data) < len(env.data)
        else:
            assert data == b""
        assert sent_headers["Aqe-Dlq-Seq"] == "7"


def test_a_dead_letter_keeps_small_payloads_whole_and_drops_server_instructions() -> None:
    env = _envelope(
        b"{}",
        {
            "Nats-Msg-Id": "orig-1",
            "Nats-Expected-Stream": "AQE_TESTS",
            "Nats-Rollup": "sub",
            "Aqe-Event-Type": "tests.case.executed.v1",
            "bad name": "dropped",
        },
    )
    headers, data, letter = bounded_letter("catalog", env, "why\nnot", 1024 * 1024)
    assert (data, letter.copy) == (b"{}", "full")
    assert headers["Nats-Msg-Id"] == "dlq:catalog:AQE_TESTS:7"
    assert headers["Aqe-Dlq-Msg-Id"] == "orig-1"
    assert headers["Aqe-Event-Type"] == "tests.case.executed.v1"
    assert headers["Aqe-Dlq-Reason"] == "why not"
    assert not {"Nats-Expected-Stream", "Nats-Rollup", "bad name"} & set(headers)
    reference = bounded_letter("catalog", env, "why", 1024 * 1024, reference_only=True)
    assert (reference[1], reference[2].copy) == (b"", "reference")
    assert "Aqe-Event-Type" not in reference[0]
    with pytest.raises(PayloadTooLargeError):  # not even a reference fits
        bounded_letter("catalog", env, "why", 200)


class KeepsNothing:
    """A sink that can keep nothing (a DLQ that is gone), for the runner's side."""

    async def park(self, projection: str, envelope: Envelope, reason: str) -> DeadLetter:
        letter = await MemoryDeadLetters().park(projection, envelope, reason)
        return DeadLetter(**{**msgspec.structs.asdict(letter), "copy": "none", "data": b""})


async def test_a_letter_no_sink_keeps_is_kept_in_the_snapshot(tmp_path: Path) -> None:
    log = await seeded_log(n_tests=1, runs=1)
    await log.append_raw("aqe.tests.case.broken.executed", b"\x00not json")
    await log.append(TestCaseExecuted(test_id="after", run_id="r", outcome="passed"))
    proj = CatalogProjection()
    store = SnapshotStore(proj, tmp_path)
    stats = await ProjectionRunner(proj, log, store, KeepsNothing()).run()
    assert (stats.applied, stats.dead_letters, stats.unparked) == (1 + 6 + 1, 1, 1)
    snap = store.load()
    assert snap.checkpoints["AQE_TESTS"] == 3
    assert [(u.stream, u.seq, u.copy) for u in snap.unparked] == [("AQE_TESTS", 2, "none")]
    assert store.describe()["unparked_total"] == 1


def _history_with_awkward_keys() -> HistoryState:
    state = HistoryState()
    keys = ["b", "a", "", "\u00e9", "\uffff", "\U0001f600", 'q"uote', "z\\", *map(str, range(2500))]
    for n, key in enumerate(keys):
        state.tests[key] = TestHistory(recent="pf"[: n % 3], runs=n, durations=[0.5] * (n % 2))
    state.runs["r1"] = RunHistory(run_id="r1", started=True)
    state.waiting["a"] = [
        PendingExecution(run_id="r1", attempt=1, outcome="failed", duration_s=1.0, recorded_at_ns=7)
    ]
    state.waiting_by_run["r1"] = ["a"]
    return state


@pytest.mark.parametrize("empty", [True, False])
def test_history_pieces_join_to_the_canonical_encoding(empty: bool) -> None:
    projection = HistoryProjection()
    state = HistoryState() if empty else _history_with_awkward_keys()
    pieces = list(projection.encode_chunks(state))
    assert b"".join(pieces) == projection.encode(state)
    if not empty:  # written as it is encoded: no piece holds the whole state
        assert max(map(len, pieces)) < len(projection.encode(state)) / 2


def test_a_snapshot_written_in_pieces_loads_back(tmp_path: Path) -> None:
    projection = HistoryProjection()
    store = SnapshotStore(projection, tmp_path / "history")
    state = _history_with_awkward_keys()
    store.save(Snapshot(state=state, checkpoints={"AQE_TESTS": 9}), materialize=False)
    loaded = store.load()
    assert loaded.checkpoints == {"AQE_TESTS": 9}
    assert projection.encode(loaded.state) == projection.encode(state)
    assert not (tmp_path / "history" / "tables").exists()  # materialize=False


class FailsHalfway(HistoryProjection):
    def encode_chunks(self, state: HistoryState) -> Iterator[bytes]:
        pieces = super().encode_chunks(state)
        yield next(pieces)
        raise OSError("disk full")


def test_a_save_that_fails_midway_leaves_the_previous_snapshot(tmp_path: Path) -> None:
    directory = tmp_path / "history"
    first = _history_with_awkward_keys()
    SnapshotStore(HistoryProjection(), directory).save(
        Snapshot(state=first, checkpoints={"AQE_TESTS": 1}), materialize=False
    )
    with pytest.raises(OSError, match="disk full"):
        SnapshotStore(FailsHalfway(), directory).save(
            Snapshot(state=HistoryState(), checkpoints={"AQE_TESTS": 2}), materialize=False
        )
    assert sorted(p.name for p in directory.iterdir()) == ["state.json"]  # no temp file
    loaded = SnapshotStore(HistoryProjection(), directory).load()
    assert loaded.checkpoints == {"AQE_TESTS": 1}
    assert HistoryProjection().encode(loaded.state) == HistoryProjection().encode(first)


def test_a_snapshot_without_a_header_line_is_refused(tmp_path: Path) -> None:
    store = SnapshotStore(HistoryProjection(), tmp_path)
    store.path.write_bytes(b'{"format": 1}')
    with pytest.raises(ProjectionError, match="not a snapshot"):
        store.load()


async def test_a_run_without_materialize_writes_no_tables(tmp_path: Path) -> None:
    log = await seeded_log(n_tests=5, runs=2)
    projection = HistoryProjection()
    directory = tmp_path / "history"
    stats = await ProjectionRunner(
        projection,
        log,
        SnapshotStore(projection, directory),
        MemoryDeadLetters(),
        materialize=False,
    ).run()
    assert stats.applied > 0
    assert SnapshotStore(projection, directory).load().checkpoints == stats.checkpoints
    assert not (directory / "tables").exists()


async def test_a_cancelled_follow_run_saves_its_checkpoints_but_not_the_tables(
    tmp_path: Path,
) -> None:
    # Ctrl-C of `aqe consume --follow`: the tables (LanceDB, seconds) are left stale for
    # readers to rebuild and the next run to write; what was folded is saved at once.
    log = await seeded_log(n_tests=5, runs=2)
    last = await log.last_seq("AQE_TESTS")
    projection = HistoryProjection()
    directory = tmp_path / "history"
    seen: list[int] = []
    follow = ProjectionRunner(
        projection,
        log,
        SnapshotStore(projection, directory),
        MemoryDeadLetters(),
        flush_interval_s=3600,
        progress_every=1,
        on_progress=lambda p: seen.append(p.seq),
    )
    task = asyncio.ensure_future(follow.run(follow=True))
    await wait_until(lambda: last in seen, "the follow run to fold every event", timeout_s=10)
    assert not SnapshotStore(projection, directory).exists()  # no periodic flush yet
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert SnapshotStore(projection, directory).load().checkpoints == {"AQE_TESTS": last}
    assert not (directory / "tables").exists()
