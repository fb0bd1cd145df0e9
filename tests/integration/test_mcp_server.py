"""`aqe mcp` over stdio, driven by the SDK's client, against a real nats-server.

The history is 24 simulated CI runs written as Surefire JUnit files and ingested by
the real `aqe ingest`; every tool is called through the MCP client and its answer is
compared with the `--json` answer of the matching `aqe` command for the same query.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from aqe.demo import FleetPlan, junit_report, simulate_fleet
from aqe.mcp_server.server import TOOLS

pytestmark = pytest.mark.nats

FLAKY = "tests.integration.test_auth.test_token_refresh[postgres]"


@pytest.fixture
def fleet_env(tmp_path: Path, nats_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AQE_")}
    env.update(AQE_NATS_URL=nats_url, AQE_DATA_DIR=str(tmp_path / "data"), COLUMNS="200")
    reports = tmp_path / "reports"
    reports.mkdir()
    _, runs = simulate_fleet(FleetPlan(runs=24, seed=7))
    for number, run in enumerate(runs):
        (reports / f"run-{number:02d}.xml").write_text(junit_report(run))
    _cli(env, "ingest", str(reports), "--run-per-file", "-q")
    return env


def _cli(env: dict[str, str], *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "aqe.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def _cli_json(env: dict[str, str], *args: str) -> Any:
    return json.loads(_cli(env, *args).stdout)


def _server(env: dict[str, str], cwd: Path) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable, args=["-m", "aqe.cli", "mcp"], env=env, cwd=str(cwd)
    )


async def _call(session: ClientSession, tool: str, args: dict[str, Any]) -> Any:
    result = await session.call_tool(tool, args)
    assert not result.is_error, result.content[0].text
    return json.loads(result.content[0].text)


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_every_tool_answers_like_the_cli(fleet_env: dict[str, str], tmp_path: Path) -> None:
    env = fleet_env
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_x.py").write_text("def test_ok():\n    assert True\n")
    async with (
        stdio_client(_server(env, tmp_path)) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert set(tools) == set(TOOLS)
        assert all(t.description and t.input_schema for t in tools.values())

        # The test history: the same questions, the same answers.
        same = [
            ("test_history", {}, ["history", "--json"]),
            ("test_history", {"status": "flaky", "sort": "flip-rate"}, ["history", "--status", "flaky", "--sort", "flip-rate", "--json"]),  # noqa: E501
            ("test_history", {"test": "test_token_refresh[postgres]"}, ["history", "test_token_refresh[postgres]", "--json"]),  # noqa: E501
            ("flaky_tests", {}, ["flaky", "--json"]),
            ("flaky_tests", {"flip_threshold": 0.05, "limit": 3}, ["flaky", "--flip-threshold", "0.05", "--limit", "3", "--json"]),  # noqa: E501
            ("broken_tests", {}, ["broken", "--json"]),
            ("test_runs", {"limit": 5}, ["runs", "--limit", "5", "--json"]),
            ("test_runs", {"sort": "failures"}, ["runs", "--sort", "failures", "--json"]),
            ("prioritize_tests", {}, ["prioritize", "--format", "json"]),
            ("prioritize_tests", {"algo": "recent-failure"}, ["prioritize", "--algo", "recent-failure", "--format", "json"]),  # noqa: E501
            ("subset_tests", {"budget": "30%"}, ["subset", "--budget", "30%", "--format", "json"]),
            ("subset_tests", {"target_confidence": 0.9}, ["subset", "--target-confidence", "0.9", "--format", "json"]),  # noqa: E501
        ]  # fmt: skip
        for tool, args, argv in same:
            assert await _call(session, tool, args) == _cli_json(env, *argv), (tool, args)
        flaky = await _call(session, "flaky_tests", {})
        assert FLAKY in [r["test_id"] for r in flaky]
        assert [r["status"] for r in await _call(session, "broken_tests", {})] == ["broken"]

        # Search: the starter pattern library and the skills, with the real model.
        _cli(env, "patterns", "import", "-q")
        wait, flaky = "wait for a condition without sleep", "flaky network call"
        for args, argv in [
            ({"query": wait}, [wait]),
            ({"query": flaky, "k": 3, "mode": "keyword"}, [flaky, "-k", "3", "--mode", "keyword"]),
        ]:
            mcp_hits = await _call(session, "search_patterns", args)
            cli_hits = _cli_json(env, "patterns", "search", *argv, "--json")
            assert mcp_hits["hits"] == cli_hits["hits"]
            assert len(mcp_hits["hits"]) >= 1
        skills = await _call(
            session,
            "search_skills",
            {"query": "quarantine a flaky test so its failures do not fail the build", "k": 3},
        )
        cli_skills = _cli_json(
            env,
            "skills",
            "search",
            "quarantine a flaky test so its failures do not fail the build",
            "-k",
            "3",
            "--json",
        )
        assert skills == cli_skills
        assert "quarantine-policy" in [s["name"] for s in skills]

        # Acting: an event the CLI then finds already stored, a workflow instance.
        payload = {"agent_id": "mcp-agent", "role": "analyzer"}
        stored = await _call(
            session, "publish_event", {"event_type": "agents.agent.registered.v1", "data": payload}
        )
        again = _cli_json(
            env, "publish", "agents.agent.registered.v1", "-d", json.dumps(payload), "--json"
        )
        assert (again["seq"], again["duplicate"]) == (stored["seq"], True)
        assert stored["duplicate"] is False
        started = await _call(
            session,
            "start_workflow",
            {"name": "rerun", "instance_id": "mcp-rerun-1", "params": {"test": "test_x.py::test_ok", "source": str(project)}},  # noqa: E501
        )  # fmt: skip
        shown = _cli_json(env, "workflows", "show", "mcp-rerun-1", "--json")
        assert started["instance_id"] == shown["instance_id"] == "mcp-rerun-1"
        assert shown["params"]["test"] == "test_x.py::test_ok"
        assert shown["events"][0]["seq"] == started["seq"]

        # Bad input is an MCP error result with the CLI's message; the server goes on.
        missing = await session.call_tool("test_history", {"test": "no-such-test"})
        cli_error = _cli(env, "history", "no-such-test", ok=False)
        assert missing.is_error
        assert cli_error.returncode == 2
        assert cli_error.stderr.strip().removeprefix("aqe: error: ") in missing.content[0].text
        for tool, args in [
            ("flaky_tests", {"limit": 0}),
            ("test_history", {"sort": "random"}),
            (
                "publish_event",
                {"event_type": "agents.agent.registered.v1", "data": {"agent_id": 5}},
            ),
            ("publish_event", {"event_type": "no.such.type.v1", "data": {}}),
            ("subset_tests", {}),
            ("subset_tests", {"budget": "lots"}),
            ("start_workflow", {"name": "nope", "params": {}}),
        ]:
            result = await session.call_tool(tool, args)
            assert result.is_error, (tool, args)
            assert (
                "Error executing tool" not in result.content[0].text
                or ":" in result.content[0].text
            )
        assert await _call(session, "test_runs", {"limit": 1}) == _cli_json(
            env, "runs", "-n", "1", "--json"
        )

        # Skills as resources, by level.
        templates = {
            t.uri_template for t in (await session.list_resource_templates()).resource_templates
        }
        assert templates == {"skill://{name}", "skill://{name}/level/{level}"}
        index = await session.read_resource("skill://index")
        assert json.loads(index.contents[0].text) == _cli_json(env, "skills", "list", "--json")
        for level in ("1", "2", "3"):
            text = (
                (await session.read_resource(f"skill://flaky-triage/level/{level}"))
                .contents[0]
                .text
            )
            shown_skill = _cli_json(
                env, "skills", "show", "flaky-triage", "--level", level, "--json"
            )
            assert text == shown_skill["text"]
        overview = (await session.read_resource("skill://flaky-triage")).contents[0].text
        assert "# Flaky test triage" in overview
        assert "Level 1" not in overview
        with pytest.raises(Exception, match="no skill named"):
            await session.read_resource("skill://no-such-skill")


@pytest.mark.timeout(240)
async def test_tools_errors_and_skill_levels_over_stdio(
    fleet_env: dict[str, str], tmp_path: Path
) -> None:
    """The default suite's share: the tool list, two answers, errors, resources."""
    env = fleet_env
    async with (
        stdio_client(_server(env, tmp_path)) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        assert {t.name for t in (await session.list_tools()).tools} == set(TOOLS)
        flaky = await _call(session, "flaky_tests", {})
        assert flaky == _cli_json(env, "flaky", "--json")
        assert FLAKY in [r["test_id"] for r in flaky]
        row = await _call(session, "test_history", {"test": FLAKY})
        assert row["test_id"] == FLAKY
        assert row["status"] == "flaky"
        missing = await session.call_tool("test_history", {"test": "no-such-test"})
        assert missing.is_error
        assert "no test matches 'no-such-test' (39 tests known)" in missing.content[0].text
        invalid = await session.call_tool("flaky_tests", {"limit": 0})
        assert invalid.is_error
        assert "greater than or equal to 1" in invalid.content[0].text
        level_2 = (await session.read_resource("skill://flaky-triage/level/2")).contents[0].text
        assert "## Level 2" in level_2
        assert "## Level 3" not in level_2
        runs = await _call(session, "test_runs", {"limit": 2})  # still serving after errors
        assert len(runs) == 2
