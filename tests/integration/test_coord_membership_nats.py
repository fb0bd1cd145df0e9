"""Membership on a real nats-server: agents beat, one crashes, a coordinator notices.

Times are relative to the heartbeat interval and measured on the server's timestamps
(``recorded_at_ns`` of the last beat) where they can be; the bounds are generous
because the test machine is shared.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from aqe.app import AppContext
from aqe.cli._agents import agents
from aqe.coordination.agent import AgentRuntime
from aqe.coordination.membership import FailureDetector, MembershipMonitor
from aqe.errors import ConfigError
from aqe.events import AgentHeartbeat, AgentSuspected
from aqe.log import load_stream_specs, subject_for
from aqe.log.jetstream import JetStreamEventLog

pytestmark = pytest.mark.nats

INTERVAL_S = 0.5
S = 1_000_000_000


@pytest.fixture
async def log(nats_url: str) -> AsyncIterator[JetStreamEventLog]:
    import nats

    from aqe.log.admin import apply_streams

    nc = await nats.connect(nats_url)
    specs = load_stream_specs()
    await apply_streams(nc, specs)
    js_log = JetStreamEventLog(nc, specs)
    yield js_log
    await js_log.close()


@pytest.fixture
def app(tmp_path: Path, nats_url: str) -> AppContext:
    return AppContext(str(tmp_path / "data"), nats_url)


async def aqe_agents(app: AppContext, *args: str) -> Result:
    """``aqe agents ARGS`` in a thread (the command runs its own event loop)."""
    runner = CliRunner(env={"COLUMNS": "200"})
    return await asyncio.to_thread(runner.invoke, agents, list(args), obj=app)


def listing(result: Result) -> dict[str, dict[str, Any]]:
    assert result.exit_code == 0, (result.output, result.exception)
    return {row["agent_id"]: row for row in json.loads(result.output)}


async def last_beat_ns(log: JetStreamEventLog, agent_id: str) -> int:
    env = await log.last(subject_for(AgentHeartbeat(agent_id=agent_id, beat=0)))
    assert env is not None
    return env.recorded_at_ns


async def test_crashed_agent_is_suspected_then_dead_and_the_other_stays_alive(
    log: JetStreamEventLog, app: AppContext
) -> None:
    detector = FailureDetector(interval_s=INTERVAL_S, suspect_after=3, dead_after=6)
    gen = AgentRuntime(log, "gen-1", "generator", ["python", "pytest"], interval_s=INTERVAL_S)
    hunter = AgentRuntime(log, "hunter-1", "flaky-hunter", interval_s=INTERVAL_S)
    monitor = MembershipMonitor(log, "coord-1", detector, check_interval_s=INTERVAL_S / 4)
    async with monitor:
        await gen.start()
        await hunter.start()
        await monitor.wait_for("gen-1", "alive", timeout_s=10)
        await monitor.wait_for("hunter-1", "alive", timeout_s=10)
        await asyncio.sleep(2 * INTERVAL_S)
        gen.kill()  # a crash: no retirement
        await asyncio.sleep(0)
        last = await last_beat_ns(log, "gen-1")
        suspect = await monitor.wait_for("gen-1", "suspect", timeout_s=30)
        dead = await monitor.wait_for("gen-1", "dead", timeout_s=30)
        # Never before the detector's thresholds, and within a few intervals after.
        interval = detector.interval_ns
        assert 3 * interval <= suspect.at_ns - last <= 3 * interval + 8 * interval
        assert 6 * interval <= dead.at_ns - last <= 6 * interval + 8 * interval
        hunter_status = monitor.status("hunter-1")
        assert hunter_status is not None
        assert hunter_status.status == "alive"
        assert [t.new for t in monitor.transitions if t.agent_id == "hunter-1"] == ["alive"]

        # The suspicion was gossiped through the log, for gen-1's last beat.
        gossip = await log.last("aqe.agents.agent.gen-1.suspected")
        assert gossip is not None
        event = gossip.decode()
        assert isinstance(event, AgentSuspected)
        assert (event.by, event.last_beat) == ("coord-1", gen.beat)

        # The CLI folds the membership projection and agrees.
        rows = listing(await aqe_agents(app, "--json", "--interval", str(INTERVAL_S)))
        assert rows["gen-1"]["status"] == "dead"
        assert rows["gen-1"]["capabilities"] == ["python", "pytest"]
        assert rows["gen-1"]["suspected_by"] == ["coord-1"]
        assert rows["hunter-1"]["status"] == "alive"
        assert rows["hunter-1"]["beat"] >= 3
        table = await aqe_agents(app, "--interval", str(INTERVAL_S))
        assert table.exit_code == 0, table.output
        assert "gen-1" in table.output
        assert "dead" in table.output
        assert "flaky-hunter" in table.output

        # A clean stop retires: hidden from the listing unless --all.
        await hunter.stop(reason="scaled down")
        await monitor.wait_for("hunter-1", "retired", timeout_s=10)
        rows = listing(await aqe_agents(app, "--json", "--interval", str(INTERVAL_S)))
        assert sorted(rows) == ["gen-1"]
        rows = listing(await aqe_agents(app, "--json", "--all"))
        assert rows["hunter-1"]["status"] == "retired"
        assert rows["hunter-1"]["retired_reason"] == "scaled down"


async def test_agents_driven_from_the_shell(app: AppContext) -> None:
    registered = await aqe_agents(
        app, "register", "sh-1", "--role", "runner", "--capability", "go", "--json"
    )
    assert registered.exit_code == 0, registered.output
    assert json.loads(registered.output)["seq"] == 1
    beats = []
    for _ in range(2):
        result = await aqe_agents(app, "heartbeat", "sh-1", "--status", "busy", "--json")
        assert result.exit_code == 0, result.output
        beats.append(json.loads(result.output))
    assert [(b["beat"], b["session"]) for b in beats] == [(1, "cli"), (2, "cli")]
    restarted = await aqe_agents(app, "heartbeat", "sh-1", "--session", "s2", "--load", "0.5")
    assert restarted.exit_code == 0, restarted.output
    assert "beat 1 session s2" in restarted.output
    rows = listing(await aqe_agents(app, "--json"))
    assert rows["sh-1"]["status"] == "alive"
    assert (rows["sh-1"]["beat"], rows["sh-1"]["load"], rows["sh-1"]["role"]) == (1, 0.5, "runner")

    # Registering again and retiring twice are each new facts, not duplicates.
    again = await aqe_agents(app, "register", "sh-1", "--role", "runner", "--json")
    assert not json.loads(again.output)["duplicate"]
    for _ in range(2):
        retired = await aqe_agents(app, "retire", "sh-1", "--reason", "done", "--json")
        assert retired.exit_code == 0, retired.output
        assert not json.loads(retired.output)["duplicate"]
    assert listing(await aqe_agents(app, "--json")) == {}
    rows = listing(await aqe_agents(app, "--json", "--all"))
    assert rows["sh-1"]["status"] == "retired"

    bad = await aqe_agents(app, "--suspect-after", "4", "--dead-after", "3")
    assert isinstance(bad.exception, ConfigError)
    assert "dead_after (3) must be greater than suspect_after (4)" in str(bad.exception)
