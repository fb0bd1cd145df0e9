"""The fleet over the Model Context Protocol: tools, and skills as resources.

``build_server(app)`` returns an :class:`mcp.server.mcpserver.MCPServer` (the official
SDK) whose tools answer what the CLI's ``--json`` answers, by calling the same
functions the CLI commands call (the questions of :mod:`aqe.queries`, the pattern
engine, the log's ``append``, the workflow store). The MCP server is a second face
beside the CLI: both build on the composition root :mod:`aqe.app` and the query layer,
and neither imports the other.

Tools whose work is synchronous (folding the history, loading the ranking model) run
in a worker thread, so one slow call never blocks the transport. Inputs are validated
by the SDK from the signatures (types, ranges, enums); a domain error (an unknown
test, a payload that fails its schema, a lost conditional append) comes back as a
tool result with ``isError`` set and the one-line message the CLI prints, never as a
crash of the server.

Resources: ``skill://index`` (every skill's frontmatter), ``skill://{name}`` (its
frontmatter and overview) and ``skill://{name}/level/{level}`` (progressive
disclosure: the overview and levels 1..level, as ``aqe skills show --level``).
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from aqe import __version__
from aqe.errors import AqeError

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

    from aqe.app import AppContext

__all__ = ["TOOLS", "build_server"]

TOOLS = (
    "test_history",
    "flaky_tests",
    "broken_tests",
    "test_runs",
    "search_patterns",
    "prioritize_tests",
    "subset_tests",
    "publish_event",
    "start_workflow",
    "search_skills",
)
"""Every tool the server offers, in the order it lists them."""

Sort = Literal["flip-rate", "pass-rate", "runs", "failures", "duration", "last-seen", "name"]
Status = Literal["broken", "flaky", "new", "healthy"]
Limit = Annotated[int, Field(ge=1, le=100_000, description="At most this many rows.")]
Since = Annotated[
    str | None, Field(description="Only tests seen since: 7d, 12h, 30m, 2w, or an ISO date.")
]
FlipThreshold = Annotated[float | None, Field(ge=0, le=1, description="Flaky flip rate [0.2].")]
BrokenStreak = Annotated[int | None, Field(ge=1, description="Failing runs in a row [3].")]
Tests = Annotated[
    list[str] | None,
    Field(description="The pending run's tests (pytest node ids or test ids) [every known test]."),
]
INSTRUCTIONS = (
    "aqe is the event backbone of a quality-engineering fleet. Ask the test history "
    "(test_history, flaky_tests, broken_tests, test_runs), find remedies "
    "(search_patterns), choose what to run (prioritize_tests, subset_tests), act "
    "(publish_event, start_workflow) and read the skills (resources skill://index, "
    "skill://NAME, skill://NAME/level/N; search_skills) before using a capability."
)


def _error(exc: BaseException) -> Exception:
    """The message the CLI would print for ``exc``, as the tool's error (``isError``)."""
    from mcp.server.mcpserver.exceptions import ToolError

    return ToolError(str(exc))


def _json(value: Any) -> str:
    """``value`` as the CLI's ``--json`` prints it (msgspec's encoding, one document)."""
    import msgspec

    return msgspec.json.encode(value).decode()


async def _in_thread(func: Any, *args: Any) -> str:
    """Run a synchronous query (it may run its own event loop) off the loop; its answer
    as JSON text."""
    import anyio

    try:
        return _json(await anyio.to_thread.run_sync(func, *args))
    except (AqeError, ValueError, LookupError) as exc:
        raise _error(exc) from exc


def _load(
    app: AppContext, flip_threshold: float | None = None, broken_streak: int | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(tests, runs) of the history, folded up to the log's end first."""
    from aqe.queries import history_policy, load_history

    tests, runs, skipped = load_history(app, history_policy(flip_threshold, broken_streak))
    if skipped:
        _warn(f"not refreshed: {skipped}")
    return tests, runs


def _warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_server(app: AppContext) -> MCPServer:
    """The MCP server over ``app``'s settings (data directory, NATS URL, credentials)."""
    from mcp.server.mcpserver import MCPServer

    server = MCPServer(
        "aqe",
        title="aqe quality-engineering fleet",
        version=__version__,
        instructions=INSTRUCTIONS,
        log_level="WARNING",
    )

    @server.tool()
    async def test_history(
        test: Annotated[
            str | None, Field(description="A test id or a substring of one: that test in detail.")
        ] = None,
        status: Status | None = None,
        since: Since = None,
        sort: Sort = "name",
        limit: Limit | None = None,
        flip_threshold: FlipThreshold = None,
        broken_streak: BrokenStreak = None,
    ) -> str:
        """Per-test history (verdicts, pass and flip rates, durations); as `aqe history --json`."""
        from aqe.queries import find_tests, parse_since, select_tests

        def go() -> Any:
            tests, _ = _load(app, flip_threshold, broken_streak)
            if test:
                matches = find_tests(tests, test)
                if len(matches) == 1:
                    return matches[0]
                tests = matches
            if status:
                tests = [r for r in tests if r["status"] == status]
            return select_tests(tests, parse_since(since), sort, limit)

        return await _in_thread(go)

    def status_tool(status: str, default_sort: str) -> Any:
        async def tool(
            sort: Sort | None = None,
            since: Since = None,
            limit: Limit | None = None,
            flip_threshold: FlipThreshold = None,
            broken_streak: BrokenStreak = None,
        ) -> str:
            from aqe.queries import parse_since, select_tests

            def go() -> Any:
                tests, _ = _load(app, flip_threshold, broken_streak)
                rows = [r for r in tests if r["status"] == status]
                return select_tests(rows, parse_since(since), sort or default_sort, limit)

            return await _in_thread(go)

        return tool

    server.add_tool(
        status_tool("flaky", "flip-rate"),
        name="flaky_tests",
        description="Tests that pass and fail without a change (retries, same-commit flips, "
        "high flip rate), with why; as `aqe flaky --json`.",
    )
    server.add_tool(
        status_tool("broken", "runs"),
        name="broken_tests",
        description="Tests failing consistently, with the run their failures began in; as "
        "`aqe broken --json`.",
    )

    @server.tool()
    async def test_runs(
        sort: Literal["newest", "oldest", "failures"] = "newest",
        since: Since = None,
        limit: Limit | None = None,
    ) -> str:
        """Runs with their totals, newest first; as `aqe runs --json`."""
        from aqe.queries import parse_since, select_runs

        def go() -> Any:
            _, rows = _load(app)
            return select_runs(rows, parse_since(since), sort, limit)

        return await _in_thread(go)

    @server.tool()
    async def search_patterns(
        query: Annotated[str, Field(min_length=1, description="What the test needs.")],
        k: Annotated[int, Field(ge=1, le=1000)] = 5,
        mode: Literal["keyword", "semantic", "hybrid"] = "hybrid",
        category: str | None = None,
        framework: str | None = None,
        language: str | None = None,
    ) -> str:
        """Test patterns for a query (MiniLM + BM25, RRF); as `aqe patterns search --json`."""

        def go() -> Any:
            import msgspec

            from aqe.app import catch_up, projections_root, run
            from aqe.search.engine import PatternSearch
            from aqe.search.projection import PatternsProjection

            async def refresh() -> str | None:
                from aqe.app import open_log

                async with open_log(app) as log:
                    return await catch_up(log, app, PatternsProjection())

            run(refresh())
            searcher = PatternSearch.open(projections_root(app) / "patterns")
            result = searcher.search(
                query, mode=mode, k=k, category=category, framework=framework, language=language
            )
            data = msgspec.to_builtins(result)
            data["timings"]["total_ms"] = round(result.timings.total_ms, 3)
            return data

        return await _in_thread(go)

    def plan(tests: list[str] | None, algo: str, policy: str | None) -> Any:
        from aqe.queries import RankingPlan

        return RankingPlan(
            app,
            policy_id=policy,
            algo=algo,
            tests="".join(t + "\n" for t in tests).splitlines() if tests else None,
            changed=None,
            fmt="json",
            dataset=None,
            warn=_warn,
        )

    @server.tool()
    async def prioritize_tests(
        tests: Tests = None,
        algo: str = "failure-count",
        policy: Annotated[str | None, Field(description="A saved policy id.")] = None,
    ) -> str:
        """A pending run's tests, most likely to fail first; as `aqe prioritize --format json`."""

        def go() -> Any:
            chosen = plan(tests, algo, policy)
            return json.loads(chosen.lines(chosen.order)[0])

        return await _in_thread(go)

    @server.tool()
    async def subset_tests(
        budget: Annotated[
            str | None, Field(description="A share of the expected time (30%) or 300s, 5m.")
        ] = None,
        target_confidence: Annotated[float | None, Field(gt=0, le=1)] = None,
        tests: Tests = None,
        algo: str = "failure-count",
        policy: str | None = None,
    ) -> str:
        """The prioritised tests that fit a budget or reach a confidence target; as
        `aqe subset --format json` (the chosen tests)."""
        if budget is None and target_confidence is None:
            raise _error(ValueError("give budget, target_confidence, or both"))

        def go() -> Any:
            from aqe.learning.selection import failure_weights, parse_budget, select

            chosen_plan = plan(tests, algo, policy)
            total = sum(r.expected_duration_s for r in chosen_plan.order)
            budget_s = None if budget is None else parse_budget(budget, total)
            chosen = select(
                chosen_plan.order,
                budget_s=budget_s,
                target_confidence=target_confidence,
                weights=failure_weights(chosen_plan.cycles),
                always=chosen_plan.always,
            )
            return json.loads(chosen_plan.lines(list(chosen.chosen))[0])

        return await _in_thread(go)

    @server.tool()
    async def publish_event(
        event_type: Annotated[
            str, Field(description="An event type tag, e.g. agents.agent.registered.v1.")
        ],
        data: Annotated[dict[str, Any], Field(description="The event's fields.")],
        event_id: str | None = None,
        expect_seq: Annotated[int | None, Field(ge=0)] = None,
    ) -> str:
        """Validate an event against its schema and append it; as `aqe publish --json`."""
        from aqe.app import open_log
        from aqe.events import REGISTRY

        try:
            event = REGISTRY.build(event_type, data)
            async with open_log(app) as log:
                result = await log.append(event, event_id=event_id, expected_last_seq=expect_seq)
        except AqeError as exc:
            raise _error(exc) from exc
        return _json(result)

    @server.tool()
    async def start_workflow(
        name: Annotated[str, Field(description="The workflow: rerun or flaky.")],
        params: Annotated[dict[str, str], Field(description="Its parameters (strings).")],
        instance_id: str | None = None,
    ) -> str:
        """Start a durable workflow instance (runner agents run its steps); as
        `aqe workflow start --json`."""
        from aqe.app import open_log, workflow_registry
        from aqe.workflows._store import start_instance

        known = workflow_registry()
        if name not in known:
            raise _error(ValueError(f"no workflow {name!r}; known: {', '.join(sorted(known))}"))
        values = dict(params)
        if name == "rerun":
            values.setdefault("python", sys.executable)
        try:
            async with open_log(app) as log:
                started, stored = await start_instance(
                    log,
                    name,
                    values,
                    instance_id=instance_id,
                    started_by="mcp",
                    reasons=("by an agent",),
                )
        except AqeError as exc:
            raise _error(exc) from exc
        return _json(
            {"instance_id": started, "workflow": name, "params": values, "seq": stored.seq}
        )

    @server.tool()
    async def search_skills(
        query: Annotated[str, Field(min_length=1)],
        k: Annotated[int, Field(ge=1, le=50)] = 5,
    ) -> str:
        """Skills for a task (hybrid search over their Level 1); as `aqe skills search --json`."""

        def go() -> Any:
            from aqe.app import projections_root
            from aqe.skills.library import load_library
            from aqe.skills.search import search_skills as find

            return find(query, load_library(), k=k, cache_dir=projections_root(app) / ".embeddings")

        return await _in_thread(go)

    _add_skill_resources(server)
    return server


def _add_skill_resources(server: MCPServer) -> None:
    from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError

    from aqe.errors import SkillError
    from aqe.skills.library import Skill, load_library

    def find_skill(name: str) -> Skill:
        from aqe.skills.library import find_skill as find

        try:
            return find(name, load_library())
        except SkillError as exc:
            raise ResourceNotFoundError(str(exc)) from exc

    @server.resource(
        "skill://index",
        name="skills",
        description="Every aqe skill's frontmatter: read this first, then skill://NAME.",
        mime_type="application/json",
    )
    def index() -> str:
        return json.dumps([s.summary() for s in load_library()])

    @server.resource(
        "skill://{name}",
        name="skill",
        description="A skill's frontmatter and overview (what it is for, before any level).",
        mime_type="text/markdown",
    )
    def skill(name: str) -> str:
        found = find_skill(name)
        meta = json.dumps({k: v for k, v in found.summary().items() if k != "path"})
        return f"<!-- {meta} -->\n{found.overview.strip()}\n"

    @server.resource(
        "skill://{name}/level/{level}",
        name="skill-level",
        description="A skill up to level 1 (quick start), 2 (core concepts) or 3 (advanced).",
        mime_type="text/markdown",
    )
    def skill_level(name: str, level: str) -> str:
        if level not in ("1", "2", "3"):
            raise ResourceError(f"no level {level!r}: levels are 1, 2 and 3")
        return find_skill(name).text(int(level))
