"""The aqe command end to end: demo, publish, read, consume, replay, streams."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Runner = Callable[..., Any]  # the `aqe` fixture in conftest.py

pytestmark = pytest.mark.nats


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("aqe: error: ")
    return lines[0]


def test_help_lists_every_command(aqe: Runner) -> None:
    result = aqe("--help")
    assert result.code == 0
    for command in ("demo", "publish", "events", "consume", "replay", "streams", "server"):
        assert command in result.out
    for sub in (("events", "tail"), ("streams", "apply"), ("server", "start"), ("replay",)):
        assert aqe(*sub, "--help").code == 0


def test_demo_runs_end_to_end_and_is_idempotent(aqe: Runner) -> None:
    first = aqe("demo", "--runs", "6", "-q")
    assert first.code == 0, first.err
    assert "identical" in first.out
    assert "0 already stored" in first.out
    assert "tests.case.executed.v1" in first.out
    second = aqe("demo", "--runs", "6", "-q")
    assert second.code == 0, second.err
    assert " 0 appended" in second.out
    assert "applied 0 new events" in second.out
    listing = aqe("projections", "list", "--json").json()
    assert listing[0]["name"] == "catalog"
    assert listing[0]["lag"] == 0


def test_publish_prints_sequence_and_deduplicates(aqe: Runner) -> None:
    data = json.dumps({"agent_id": "a1", "role": "runner"})
    first = aqe("publish", "agents.agent.registered.v1", "--data", data, "--json")
    assert first.code == 0, first.err
    ack = first.json()
    assert ack["seq"] == 1
    assert ack["stream"] == "AQE_AGENTS"
    assert not ack["duplicate"]
    again = aqe("publish", "agents.agent.registered.v1", "--data", data, "--json").json()
    assert again["duplicate"]
    assert again["seq"] == 1
    got = aqe("events", "get", "1", "--stream", "AQE_AGENTS", "--json").json()
    assert got["event"]["agent_id"] == "a1"
    assert got["headers"]["Nats-Msg-Id"] == ack["event_id"]


def test_publish_from_file_with_explicit_id(aqe: Runner, tmp_path: Path) -> None:
    payload = tmp_path / "hb.json"
    payload.write_text(json.dumps({"agent_id": "a1", "beat": 1}))
    result = aqe("publish", "agents.agent.heartbeat.v1", "-d", f"@{payload}", "--id", "hb-1")
    assert result.code == 0, result.err
    assert "AQE_AGENTS seq 1" in result.out
    assert (
        aqe("events", "get", "1", "--stream", "AQE_AGENTS", "--json").json()["event_id"] == "hb-1"
    )


def test_bad_input_prints_one_line_and_exits_2(aqe: Runner, tmp_path: Path) -> None:
    unknown = aqe("publish", "tests.case.exploded.v1", "-d", "{}")
    assert unknown.code == 2
    assert "unknown event type 'tests.case.exploded.v1'" in one_error_line(unknown.err)

    invalid = aqe(
        "publish",
        "tests.case.executed.v1",
        "-d",
        json.dumps({"test_id": "t", "run_id": "r", "outcome": "sideways"}),
    )
    assert invalid.code == 2
    assert "$.outcome" in one_error_line(invalid.err)

    missing = aqe("publish", "tests.case.executed.v1", "-d", json.dumps({"test_id": "t"}))
    assert missing.code == 2
    assert "run_id" in one_error_line(missing.err)

    not_json = aqe("publish", "tests.case.executed.v1", "-d", "{oops")
    assert not_json.code == 2
    assert "not valid JSON" in one_error_line(not_json.err)

    big = tmp_path / "big.json"
    big.write_text(json.dumps({"pattern_id": "p", "name": "n", "code": "x" * 1_100_000}))
    oversized = aqe("publish", "patterns.pattern.added.v1", "-d", f"@{big}")
    assert oversized.code == 2
    assert "max_payload" in one_error_line(oversized.err)

    # Nothing of the above was stored.
    streams = {s["name"]: s for s in aqe("streams", "list", "--json").json()}
    assert streams["AQE_TESTS"]["messages"] == 0
    assert streams["AQE_PATTERNS"]["messages"] == 0


def test_expect_seq_conflict_exits_2(aqe: Runner) -> None:
    body = json.dumps({"agent_id": "solo", "role": "runner"})
    assert aqe("publish", "agents.agent.registered.v1", "-d", body, "--expect-seq", "0").code == 0
    other = json.dumps({"agent_id": "solo", "role": "analyzer"})
    clash = aqe("publish", "agents.agent.registered.v1", "-d", other, "--expect-seq", "0")
    assert clash.code == 2
    line = one_error_line(clash.err)
    assert "expected last sequence 0, found 1" in line


def test_tail_shows_latest_events(aqe: Runner) -> None:
    assert aqe("demo", "--runs", "2", "-q").code == 0
    lines = aqe("events", "tail", "-n", "3", "--stream", "AQE_TESTS", "--json").json_lines()
    assert len(lines) == 3
    assert lines[-1]["event"]["event"] == "tests.run.finished.v1"
    seqs = [line["seq"] for line in lines]
    assert seqs == sorted(seqs)
    agents = aqe("events", "tail", "-n", "2", "--subject", "aqe.agents.>", "--json").json_lines()
    assert {line["stream"] for line in agents} == {"AQE_AGENTS"}
    human = aqe("events", "tail", "-n", "1", "--stream", "AQE_TESTS")
    assert "tests.run.finished.v1" in human.out


def test_corrupt_message_is_dead_lettered_and_projection_goes_on(
    aqe: Runner, nats_url: str
) -> None:
    assert aqe("demo", "--runs", "2", "-q").code == 0

    async def inject() -> None:
        import nats

        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        await js.publish("aqe.tests.case.garbled.executed", b"\xff\xfe not an event")
        await js.publish(
            "aqe.tests.case.t1.executed",
            json.dumps(
                {
                    "event": "tests.case.executed.v1",
                    "test_id": "t1",
                    "run_id": "r",
                    "outcome": "passed",
                }
            ).encode(),
        )
        await nc.close()

    asyncio.run(inject())
    result = aqe("consume", "catalog", "--json")
    assert result.code == 0, result.err
    stats = result.json()
    assert stats["dead_letters"] == 1
    assert stats["applied"] == 1
    parked = aqe("events", "tail", "--stream", "AQE_DLQ", "--json").json_lines()
    assert len(parked) == 1
    assert parked[0]["headers"]["Aqe-Dlq-Projection"] == "catalog"
    assert parked[0]["headers"]["Aqe-Dlq-Subject"] == "aqe.tests.case.garbled.executed"
    assert "not JSON" in parked[0]["headers"]["Aqe-Dlq-Reason"]
    verify = aqe("replay", "catalog", "--verify", "--json")
    assert verify.code == 0, verify.out + verify.err
    assert verify.json()["equal"]


def test_replay_rebuilds_and_verify_reports_tampering(aqe: Runner, aqe_env: dict[str, str]) -> None:
    assert aqe("demo", "--runs", "3", "-q").code == 0
    state = Path(aqe_env["AQE_DATA_DIR"]) / "projections" / "catalog" / "state.json"
    header, body = state.read_bytes().split(b"\n", 1)
    tampered = json.loads(body)
    # The demo's 3 CI runs, plus one run per rerun its flaky workflow step made.
    true_runs = tampered["by_type"]["tests.run.started.v1"]
    assert true_runs >= 3
    tampered["by_type"]["tests.run.started.v1"] = 999
    state.write_bytes(header + b"\n" + json.dumps(tampered, sort_keys=True).encode())
    verify = aqe("replay", "catalog", "--verify")
    assert verify.code == 1
    assert "tests.run.started.v1" in verify.out
    assert "live=999" in verify.out
    rebuilt = aqe("replay", "catalog", "-q")
    assert rebuilt.code == 0, rebuilt.err
    assert "swapped in" in rebuilt.out
    assert aqe("replay", "catalog", "--verify").code == 0
    shown = aqe("projections", "show", "catalog", "--json").json()
    assert shown["state"]["by_type"]["tests.run.started.v1"] == true_runs
    partial = aqe("replay", "catalog", "--until-seq", "10", "-q")
    assert partial.code == 0
    cps = aqe("projections", "show", "catalog", "--json").json()["checkpoints"]
    assert cps["AQE_TESTS"] == 10


def test_streams_apply_shows_changes(aqe: Runner, tmp_path: Path) -> None:
    repo_streams = Path(__file__).resolve().parents[2] / "streams"
    dry = aqe("streams", "apply", "--dry-run", "--json")
    assert {c["action"] for c in dry.json()} == {"create"}
    applied = aqe("streams", "apply", "--json").json()
    assert {c["action"] for c in applied} == {"create"}
    assert {c["action"] for c in aqe("streams", "apply", "--json").json()} == {"unchanged"}
    changed = tmp_path / "streams"
    changed.mkdir()
    for f in repo_streams.glob("*.json"):
        spec = json.loads(f.read_text())
        if spec["name"] == "AQE_AGENTS":
            spec["max_age_s"] = 86400
        (changed / f.name).write_text(json.dumps(spec))
    update = aqe("streams", "apply", "--dir", str(changed))
    assert update.code == 0, update.err
    assert "AQE_AGENTS: update" in update.out
    assert "max_age_s: 0.0 -> 86400" in update.out
    info = aqe("streams", "info", "AQE_AGENTS", "--json").json()
    assert info["config"]["max_age_s"] == 86400
    assert info["drift"]  # differs from the repo's file now
    missing = aqe("streams", "info", "NOPE")
    assert missing.code == 2


def test_event_types_are_listed(aqe: Runner) -> None:
    rows = aqe("events", "types", "--json").json()
    tags = {r["type"] for r in rows}
    assert "tests.case.executed.v1" in tags
    case = next(r for r in rows if r["type"] == "tests.case.executed.v1")
    assert case["subject"] == "aqe.tests.case.<test_id>.executed"
