"""The projection runtime over the in-memory log: resume, idempotence, dead letters."""

from __future__ import annotations

from pathlib import Path

import pytest

from aqe.errors import ProjectionError
from aqe.events import AgentHeartbeat, AgentRegistered, Envelope, Event, TestCaseExecuted
from aqe.log import InMemoryEventLog, NewEvent, load_stream_specs
from aqe.projections import (
    CatalogProjection,
    CatalogState,
    MemoryDeadLetters,
    ProjectionRunner,
    SnapshotStore,
    projection_lock,
    rebuild,
    verify,
)


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
