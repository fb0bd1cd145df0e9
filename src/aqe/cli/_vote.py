"""``aqe vote keygen|propose|cast|tally``: proposals and Ed25519-signed votes.

Parsing and rendering only; the rules live in :mod:`aqe.coordination.voting`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from aqe.app import AppContext, open_log, run
from aqe.cli._context import console, json_option, pass_app, print_json
from aqe.cli._table import emit_table, output_options

if TYPE_CHECKING:
    from aqe.coordination.voting import Verdict
    from aqe.events import Voter

_STATUS_STYLE = {
    "decided": "green",
    "open": "cyan",
    "no-decision": "yellow",
    "unsafe": "red",
    "invalid": "red",
    "unknown": "dim",
}


def _key_dir(app: AppContext, directory: Path | None) -> Path:
    return directory if directory is not None else app.settings.data_dir / "keys"


def _dir_option(func: Any) -> Any:
    return click.option(
        "--dir",
        "directory",
        type=click.Path(file_okay=False, path_type=Path),
        help="Key directory [default: DATA_DIR/keys].",
    )(func)


def _key_options(help_text: str) -> Callable[[Any], Any]:
    """``--key FILE`` (with ``help_text``) and ``--dir``: where an agent's private key is."""

    def decorate(func: Any) -> Any:
        option = click.option(
            "--key",
            "key_file",
            type=click.Path(dir_okay=False, path_type=Path),
            help=help_text,
        )
        return option(_dir_option(func))

    return decorate


@click.group()
def vote() -> None:
    """Proposals and signed votes: majority, quorum and Byzantine (BFT) modes.

    A proposal fixes its question, options, electorate (agents and their Ed25519
    public keys) and rule; each voter signs its vote. The first valid vote per voter in
    stream order counts, so every reader of the log derives the same verdict.
    Byzantine mode needs n >= 3f+1 voters, decides on 2f+1 matching votes (a strict
    majority when n > 3f+1) and reports `unsafe` once more than f voters are proven
    faulty by conflicting signed votes.

    \b
    aqe vote keygen a1                     # keys under DATA_DIR/keys, prints the public key
    aqe agents register a1 --role qe       # binds a1's key (signed with DATA_DIR/keys/a1.key)
    aqe vote propose ship-42 --by a1 --question "Ship build 42?" --option ship \\
        --option block --mode byzantine --voter a1 --voter a2=@.aqe/keys/a2.pub ...
    aqe vote cast ship-42 --as a1 --choice ship
    aqe vote tally ship-42 --json
    """


@vote.command()
@click.argument("agent")
@_dir_option
@click.option("--force", is_flag=True, help="Replace the agent's existing key files.")
@json_option
@pass_app
def keygen(app: AppContext, agent: str, directory: Path | None, force: bool, as_json: bool) -> None:
    """Create an Ed25519 key pair for AGENT: DIR/AGENT.key (mode 0600) and DIR/AGENT.pub."""
    from aqe.coordination.voting import write_keypair

    files = write_keypair(_key_dir(app, directory), agent, overwrite=force)
    if as_json:
        print_json(files)
        return
    out = console()
    out.print(f"private key: {files.private_path} (keep it secret)")
    out.print(f"public key:  {files.public_path}")
    out.print(f"--voter {agent}={files.public_key}")


def _parse_voters(values: tuple[str, ...]) -> tuple[list[tuple[str, str | None]], list[str]]:
    """``AGENT=PUBKEY`` / ``AGENT=@FILE`` / ``AGENT`` into (agent, key or None) pairs."""
    from aqe.coordination.voting import load_public_key

    parsed: list[tuple[str, str | None]] = []
    from_registry: list[str] = []
    for value in values:
        agent, sep, key = value.partition("=")
        agent = agent.strip()
        if not agent:
            raise click.BadParameter(f"{value!r}: no agent id before '='", param_hint="--voter")
        if not sep:
            parsed.append((agent, None))
            from_registry.append(agent)
            continue
        if key.startswith("@"):
            path = Path(key[1:])
            try:
                key = path.read_text(encoding="ascii").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise click.BadParameter(
                    f"{agent}: cannot read {path}: {exc}", param_hint="--voter"
                ) from None
        load_public_key(key, field=f"--voter {agent}")
        parsed.append((agent, key.strip()))
    return parsed, from_registry


@vote.command()
@click.argument("proposal_id", metavar="ID")
@click.option("--question", "-q", required=True, help="What the voters decide.")
@click.option(
    "--option", "options", multiple=True, required=True, help="One choice (repeat, at least 2)."
)
@click.option(
    "--mode",
    type=click.Choice(["majority", "quorum", "byzantine"]),
    default="majority",
    show_default=True,
    help="majority: > n/2 voters; quorum: most votes once N voted; byzantine: 2f+1 of n>=3f+1.",
)
@click.option("--quorum", type=click.IntRange(min=1), help="Voters needed (mode quorum).")
@click.option(
    "--faulty",
    type=click.IntRange(min=0),
    help="f, Byzantine voters tolerated (mode byzantine) [default: (n-1)//3].",
)
@click.option(
    "--voter",
    "voter_specs",
    multiple=True,
    metavar="AGENT[=PUBKEY|=@FILE]",
    help="An eligible voter and its base64 Ed25519 public key, or a .pub file; a bare AGENT "
    "takes the key from its AgentRegistered event. Repeat for each voter.",
)
@click.option(
    "--voters-from-agents",
    is_flag=True,
    help="Every registered, not retired agent with a public key is a voter.",
)
@click.option("--role", help="With --voters-from-agents: only agents of this role.")
@click.option(
    "--by",
    "opened_by",
    required=True,
    metavar="AGENT",
    help="The proposing agent: it signs the proposal with its registered key.",
)
@_key_options("The proposer's private key file [default: DIR/AGENT.key].")
@json_option
@pass_app
def propose(
    app: AppContext,
    proposal_id: str,
    question: str,
    options: tuple[str, ...],
    mode: str,
    quorum: int | None,
    faulty: int | None,
    voter_specs: tuple[str, ...],
    voters_from_agents: bool,
    role: str | None,
    opened_by: str,
    key_file: Path | None,
    directory: Path | None,
    as_json: bool,
) -> None:
    """Open proposal ID: a question, its options, the electorate and the deciding rule.

    The proposal is signed with the key of --by, which must be the key registered for
    that agent (`aqe agents register AGENT --role R`); each voter's key must be the one
    registered for it. Readers refuse proposals that are not.
    """
    from aqe.coordination.voting import (
        electorate_from_agents,
        key_file_stem,
        load_private_key,
        open_proposal,
    )
    from aqe.events import Voter

    if voters_from_agents and voter_specs:
        raise click.UsageError("give --voter or --voters-from-agents, not both")
    if not voters_from_agents and not voter_specs:
        raise click.UsageError(
            "name the electorate: --voter AGENT=PUBKEY ... or --voters-from-agents"
        )
    if role and not voters_from_agents:
        raise click.UsageError("--role only applies with --voters-from-agents")
    parsed, from_registry = _parse_voters(voter_specs)
    path = key_file or _key_dir(app, directory) / f"{key_file_stem(opened_by)}.key"
    private_key = load_private_key(path)

    async def go() -> tuple[Any, tuple[Voter, ...]]:
        async with open_log(app) as log:
            if voters_from_agents:
                voters = await electorate_from_agents(log, role=role)
                if not voters:
                    raise click.UsageError("no registered agent has a public key")
            else:
                registry = {}
                if from_registry:
                    found = await electorate_from_agents(log, from_registry)
                    registry = {v.agent_id: v.public_key for v in found}
                voters = tuple(
                    Voter(agent_id=agent, public_key=key or registry[agent])
                    for agent, key in parsed
                )
            result = await open_proposal(
                log,
                proposal_id,
                question=question,
                options=options,
                mode=mode,  # type: ignore[arg-type]
                voters=voters,
                quorum=quorum,
                faulty=faulty,
                opened_by=opened_by,
                private_key=private_key,
            )
            return result, voters

    result, voters = run(go())
    if as_json:
        print_json(
            {
                "proposal_id": proposal_id,
                "seq": result.seq,
                "duplicate": result.duplicate,
                "voters": [v.agent_id for v in voters],
            }
        )
        return
    again = " (already open: nothing appended)" if result.duplicate else ""
    from rich.markup import escape

    console().print(
        f"opened proposal [bold]{escape(proposal_id)}[/bold] at seq {result.seq}{again}: "
        f"{len(voters)} voters, mode {mode}"
    )


@vote.command()
@click.argument("proposal_id", metavar="ID")
@click.option("--as", "agent", required=True, help="The voting agent.")
@click.option("--choice", required=True, help="One of the proposal's options.")
@_key_options("Private key file [default: DIR/AGENT.key].")
@json_option
@pass_app
def cast(
    app: AppContext,
    proposal_id: str,
    agent: str,
    choice: str,
    key_file: Path | None,
    directory: Path | None,
    as_json: bool,
) -> None:
    """Sign and cast AGENT's vote on proposal ID; repeating the same vote is a no-op."""
    from aqe.coordination.voting import cast_vote, key_file_stem, load_private_key, tally

    path = key_file or _key_dir(app, directory) / f"{key_file_stem(agent)}.key"
    private_key = load_private_key(path)

    async def go() -> tuple[Any, Verdict]:
        async with open_log(app) as log:
            result = await cast_vote(log, proposal_id, agent, choice, private_key)
            return result, await tally(log, proposal_id)

    result, verdict = run(go())
    if as_json:
        print_json(
            {
                "proposal_id": proposal_id,
                "voter": agent,
                "choice": choice,
                "seq": result.seq,
                "duplicate": result.duplicate,
                "verdict": verdict,
            }
        )
        return
    from rich.markup import escape

    again = " (already cast: nothing appended)" if result.duplicate else ""
    out = console()
    what = f"{agent} voted {choice!r} on {proposal_id} at seq {result.seq}{again}"
    out.print(escape(what))
    out.print(f"proposal is now {_status(verdict)}")


@vote.command(name="tally")
@click.argument("proposal_id", metavar="ID")
@click.option("--until-seq", type=click.IntRange(min=1), help="Tally the log only up to here.")
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Follow the votes until the proposal is decided (or settled) or SECONDS pass.",
)
@output_options
@pass_app
def tally_(
    app: AppContext, proposal_id: str, until_seq: int | None, wait: float | None, as_json: bool
) -> None:
    """Fold proposal ID's events into its verdict: status, choice, counts, rejects."""
    from aqe.coordination.voting import await_verdict, tally
    from aqe.errors import CommandRejectedError

    if wait is not None and until_seq is not None:
        raise click.UsageError("--wait follows new votes; it cannot be combined with --until-seq")

    async def go() -> Verdict:
        async with open_log(app) as log:
            if wait is not None:
                return await await_verdict(log, proposal_id, timeout_s=wait)
            return await tally(log, proposal_id, until_seq=until_seq)

    verdict = run(go())
    if verdict.status == "unknown":
        seen = f" ({len(verdict.rejected)} stray votes)" if verdict.rejected else ""
        raise CommandRejectedError(f"proposal {proposal_id!r} has not been opened{seen}")
    if as_json:
        print_json(verdict)
        return
    _render(verdict)


def _status(verdict: Verdict) -> str:
    from rich.markup import escape

    style = _STATUS_STYLE.get(verdict.status, "")
    text: str = verdict.status
    if verdict.choice is not None:
        text += f": {escape(verdict.choice)}"
    return f"[{style}]{text}[/{style}]" if style else text


def _render(v: Verdict) -> None:
    from rich.markup import escape

    out = console()
    out.print(f"[bold]{escape(v.proposal_id)}[/bold]: {escape(v.question)}")
    rule = f"mode {v.mode}, {v.electorate} voters, threshold {v.threshold}"
    if v.faulty_tolerated is not None:
        rule += f", f={v.faulty_tolerated}"
    out.print(rule)
    where = f" at seq {v.decided_at_seq}" if v.decided_at_seq is not None else ""
    out.print(f"{_status(v)}{where} - {escape(v.reason)} (as of seq {v.as_of_seq})")
    emit_table(
        ["option", "votes"],
        [
            [option + (" *" if option == v.choice else ""), v.counts.get(option, 0)]
            for option in v.options
        ],
    )
    voted = len(v.voters_voted)
    names = f" ({escape(', '.join(v.voters_voted))})" if voted else ""
    out.print(f"voted: {voted} of {v.electorate}{names}")
    if v.faulty:
        out.print(f"[red]proven faulty: {escape(', '.join(v.faulty))}[/red]")
    if v.rejected:
        emit_table(
            ["seq", "reason", "voter", "choice", "detail"],
            [[r.seq, r.reason, r.voter, r.choice, r.detail] for r in v.rejected],
            title="not counted",
        )
