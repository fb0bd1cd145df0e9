"""``aqe skills list|show|path|check|test|search|install``: the skill library."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from aqe.app import AppContext
from aqe.cli._context import console, json_option, pass_app, print_json
from aqe.cli._table import Column, emit_table, output_options, styled

if TYPE_CHECKING:
    from aqe.skills.examples import BlockResult
    from aqe.skills.library import Skill


def _library() -> list[Skill]:
    from aqe.skills.library import load_library

    return load_library()


@click.group(short_help="Agent skills: list, read by level, search, check, test.")
def skills() -> None:
    """Agent skills: list, read by level, search, check, run their examples, install."""


@skills.command("list")
@click.option("--category", help="Only skills of this category.")
@output_options
def list_(category: str | None, as_json: bool) -> None:
    """Every skill: name, category, version and what it is for."""
    found = [s for s in _library() if category is None or s.category == category]
    if category is not None and not found:
        raise click.BadParameter(f"no skill has category {category!r}", param_hint="--category")
    if as_json:
        print_json([s.summary() for s in found])
        return
    emit_table(
        [Column("name"), Column("category"), Column("version"), Column("description")],
        [[s.name, s.category, str(s.meta.get("version", "")), s.description] for s in found],
        title=f"skills: {len(found)}",
    )


@skills.command()
@click.argument("name")
@click.option(
    "--level",
    type=click.IntRange(1, 3),
    default=1,
    show_default=True,
    help="How deep to read: 1 quick start, 2 core concepts, 3 advanced (each level "
    "includes the ones before).",
)
@json_option
def show(name: str, level: int, as_json: bool) -> None:
    """Print skill NAME up to a level (progressive disclosure)."""
    from aqe.skills.library import find_skill

    skill = find_skill(name, _library())
    if as_json:
        print_json({**skill.summary(), "level": level, "text": skill.text(level)})
        return
    from rich.markdown import Markdown

    out = console()
    out.print(
        f"[dim]{skill.name} {skill.meta.get('version', '')} · {skill.category} · "
        f"level {level} of 3[/dim]"
    )
    out.print(Markdown(skill.text(level)))
    if level < 3:
        out.print(f"[dim]more: aqe skills show {skill.name} --level {level + 1}[/dim]")
    if skill.related:
        out.print(f"[dim]related: {', '.join(skill.related)}[/dim]")


@skills.command(short_help="Print a skill's folder (its scripts/ and references/).")
@click.argument("name", required=False)
def path(name: str | None) -> None:
    """Print the folder of skill NAME (or of the library), for its scripts and references."""
    from aqe.skills.library import find_skill, skills_root

    click.echo(str(find_skill(name, _library()).path if name else skills_root()))


@skills.command(short_help="Validate schema, levels, cross-references, links, index.")
@json_option
def check(as_json: bool) -> None:
    """Validate the library: frontmatter schema, levels, cross-references, links, index.

    Exits 1 when anything is wrong, listing each problem with its file and line.
    """
    from aqe.skills.check import check_library
    from aqe.skills.examples import extract_blocks

    found, problems = check_library()
    blocks = [b for s in found for b in extract_blocks(s)]
    marked = sum(b.skip is not None for b in blocks)
    if as_json:
        print_json(
            {
                "skills": len(found),
                "examples": len(blocks),
                "marked": marked,
                "problems": [str(p) for p in problems],
            }
        )
    else:
        for problem in problems:
            click.echo(f"aqe: {problem}", err=True)
        console().print(
            f"{len(found)} skills, {len(blocks)} examples ({marked} marked not runnable here): "
            + ("[green]ok[/green]" if not problems else f"[red]{len(problems)} problem(s)[/red]")
        )
    if problems:
        raise SystemExit(1)


@skills.command(short_help="Run every example of the skills (or of NAMES).")
@click.argument("names", nargs=-1)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run each skill in WORKDIR/<name> (kept) [default: a temporary folder, removed].",
)
@click.option("--timeout", default=300.0, show_default=True, help="Seconds one block may take.")
@json_option
def test(names: tuple[str, ...], workdir: Path | None, timeout: float, as_json: bool) -> None:
    """Run the examples of NAMES (default: every skill), each skill in a fresh folder.

    Every fenced bash and python block runs in order against an embedded server in that
    folder; blocks marked `<!-- aqe-skip: reason -->` are counted, not run. Exits 1 if
    any block fails.
    """
    from aqe.skills.examples import run_examples
    from aqe.skills.library import find_skill, skills_root

    library = _library()
    chosen = [find_skill(n, library) for n in names] if names else library
    err = console(stderr=True)

    def report(result: BlockResult) -> None:
        if not as_json and result.status in ("passed", "failed"):
            colour = "green" if result.status == "passed" else "red"
            err.print(
                f"  [{colour}]{result.status}[/{colour}] {result.block.where} "
                f"({result.block.lang}, {result.seconds:.1f} s)"
            )

    with tempfile.TemporaryDirectory(prefix="aqe-skills-") as scratch:
        base = workdir or Path(scratch)
        runs = []
        for skill in chosen:
            if not as_json:
                err.print(f"[bold]{skill.name}[/bold]")
            runs.append(
                run_examples(
                    skill,
                    base / skill.name,
                    library=skills_root(),
                    timeout_s=timeout,
                    on_block=report,
                )
            )
    summaries = [r.summary() for r in runs]
    totals = {
        key: sum(int(s[key]) for s in summaries)  # type: ignore[call-overload]
        for key in ("blocks", "executed", "passed", "failed", "marked", "not_run")
    }
    if as_json:
        print_json({"skills": summaries, "totals": totals})
    else:
        _render_runs(summaries, totals)
        err.print(
            f"{len(summaries)} skills: {totals['executed']} examples executed "
            f"({totals['passed']} passed, {totals['failed']} failed, {totals['not_run']} not run "
            f"after a failure), {totals['marked']} marked not runnable here"
        )
    if totals["failed"] or totals["not_run"]:
        raise SystemExit(1)


def _render_runs(summaries: list[dict[str, Any]], totals: dict[str, int]) -> None:
    for s in summaries:
        failure = s["failure"]
        if failure:
            click.echo(
                f"aqe: {failure['where']}: exit {failure['exit_code']}\n{failure['output']}",
                err=True,
            )
    emit_table(
        [
            Column("skill"),
            Column("executed", "right"),
            Column("passed", "right"),
            Column("failed", "right"),
            Column("marked", "right"),
            Column("seconds", "right"),
        ],
        [
            [
                s["skill"],
                s["executed"],
                s["passed"],
                styled(s["failed"], "red") if s["failed"] else 0,
                s["marked"],
                f"{s['seconds']:.1f}",
            ]
            for s in summaries
        ],
        title=(
            f"examples: {totals['executed']} executed ({totals['passed']} passed, "
            f"{totals['failed']} failed), {totals['marked']} marked not runnable here"
        ),
    )


@skills.command(short_help="Find skills for QUERY (hybrid MiniLM + BM25).")
@click.argument("query")
@click.option("-k", "limit", default=5, show_default=True, type=click.IntRange(1, 50))
@click.option(
    "--mode",
    type=click.Choice(["keyword", "semantic", "hybrid"]),
    default="hybrid",
    show_default=True,
)
@output_options
@pass_app
def search(app: AppContext, query: str, limit: int, mode: str, as_json: bool) -> None:
    """Find skills for QUERY with the pattern library's hybrid search (MiniLM + BM25)."""
    from aqe.app import projections_root
    from aqe.skills.search import search_skills

    hits = search_skills(
        query, _library(), k=limit, mode=mode, cache_dir=projections_root(app) / ".embeddings"
    )
    if as_json:
        print_json(hits)
        return
    emit_table(
        [
            Column("rank", "right"),
            Column("skill"),
            Column("category"),
            Column("score", "right"),
            Column("description"),
        ],
        [
            [i, h["name"], h["category"], f"{h['score']:.4f}", h["description"]]
            for i, h in enumerate(hits, 1)
        ],
        title=f"skills for {query!r}",
    )


@skills.command(short_help="Copy skills into a folder an agent runtime reads.")
@click.option(
    "--into",
    "target",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder an agent runtime reads skills from (e.g. .claude/skills); created if missing.",
)
@click.argument("names", nargs=-1)
@click.option("--force", is_flag=True, help="Replace skill folders that already exist there.")
@json_option
def install(target: Path, names: tuple[str, ...], force: bool, as_json: bool) -> None:
    """Copy skills NAMES (default: all) into DIR, one folder per skill with its SKILL.md."""
    from aqe.skills.install import install_skills
    from aqe.skills.library import find_skill

    library = _library()
    chosen = [find_skill(n, library) for n in names] if names else library
    written = install_skills(chosen, target, force=force)
    if as_json:
        print_json({"into": str(target), "installed": [p.name for p in written]})
        return
    console().print(f"installed {len(written)} skill(s) into {target}")
