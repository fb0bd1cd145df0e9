"""``aqe audit keygen|seal|verify|prove|check-proof|explain|export|import``.

Parsing and rendering only; the work is in :mod:`aqe.audit`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from aqe.app import AppContext, open_log, run
from aqe.cli._context import ExistingPath, console, json_option, pass_app, print_json
from aqe.cli._table import Cell, emit_table

if TYPE_CHECKING:
    from aqe.audit.verify import StreamVerdict
    from aqe.log.jetstream import JetStreamEventLog

_SEALER = "audit-sealer"


def _keys_dir(app: AppContext) -> Path:
    return app.settings.data_dir / "keys"


def _trusted(app: AppContext, values: tuple[str, ...], *, required: bool = True) -> dict[str, str]:
    """``--key`` values (base64, ``@FILE`` or a ``.pub`` file) plus DATA_DIR's sealer key."""
    from aqe.audit.seal import trusted_keys

    keys: list[str] = []
    for value in values:
        path = Path(value[1:] if value.startswith("@") else value)
        if value.startswith("@") or path.suffix == ".pub" or path.is_file():
            try:
                keys.append(path.read_text(encoding="ascii").strip())
            except (OSError, UnicodeDecodeError) as exc:
                raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="--key") from None
        else:
            keys.append(value)
    default = _keys_dir(app) / f"{_SEALER}.pub"
    if not values and default.is_file():
        keys.append(default.read_text(encoding="ascii").strip())
    if required and not keys:
        raise click.UsageError(
            f"no trusted key: pass --key PUB (or create {default} with `aqe audit keygen`)"
        )
    return trusted_keys(keys)


def _key_option(func: Any) -> Any:
    return click.option(
        "--key",
        "keys",
        multiple=True,
        metavar="PUB",
        help="A trusted sealer public key: base64, @FILE or a .pub file (repeat) "
        f"[default: DATA_DIR/keys/{_SEALER}.pub].",
    )(func)


async def _streams(log: JetStreamEventLog, stream: tuple[str, ...]) -> list[str]:
    from aqe.audit.seal import sealable_streams

    return list(stream) if stream else sealable_streams(log.specs)


@click.group()
def audit() -> None:
    """Tamper-evident seals over the log, proofs of single events, verifiable exports.

    Each seal is a signed Merkle tree head (RFC 9162) over a stream's messages; verify
    recomputes the trees and names what changed, with sequence numbers.

    \b
    aqe audit keygen                          # DATA_DIR/keys/audit-sealer.key + .pub
    aqe audit seal                            # seal every stream (or --every 60s)
    aqe audit verify                          # exit 1 on any divergence
    aqe audit prove --stream AQE_TESTS --seq 42 > p.json
    aqe audit check-proof p.json --key DATA_DIR/keys/audit-sealer.pub
    aqe audit explain history TEST_ID         # the events behind a row, with proofs
    aqe audit export --stream AQE_TESTS --range 1..1000 --out exp/
    aqe audit verify --export exp/ --key PUB  # offline
    """


@audit.command()
@click.option("--force", is_flag=True, help="Replace an existing sealer key.")
@json_option
@pass_app
def keygen(app: AppContext, force: bool, as_json: bool) -> None:
    """Create the sealer's Ed25519 key pair under DATA_DIR/keys."""
    from aqe.coordination.voting import write_keypair

    files = write_keypair(_keys_dir(app), _SEALER, overwrite=force)
    if as_json:
        print_json(files)
        return
    out = console()
    out.print(f"private key: {files.private_path} (keep it secret; seals are signed with it)")
    out.print(f"public key:  {files.public_path} (give it to whoever verifies)")


@audit.command()
@click.option("--stream", "stream", multiple=True, help="Seal this stream (repeat; default: all).")
@click.option(
    "--every",
    metavar="DURATION",
    help="Keep sealing every DURATION (30s, 5m, 1h) until interrupted.",
)
@click.option(
    "--key-file",
    type=ExistingPath(dir_okay=False, path_type=Path),
    help=f"The sealer's private key [default: DATA_DIR/keys/{_SEALER}.key].",
)
@json_option
@pass_app
def seal(
    app: AppContext,
    stream: tuple[str, ...],
    every: str | None,
    key_file: Path | None,
    as_json: bool,
) -> None:
    """Append a signed seal over what each stream gained since its last seal."""
    from aqe.audit.seal import seal_stream
    from aqe.coordination.voting import load_private_key

    interval = _duration(every) if every else None
    path = key_file or _keys_dir(app) / f"{_SEALER}.key"
    if not path.exists():
        raise click.UsageError(f"no sealer key at {path}: run `aqe audit keygen` first")
    private_key = load_private_key(path)

    async def once(log: JetStreamEventLog) -> list[dict[str, Any]]:
        rows = []
        for name in await _streams(log, stream):
            for s in await seal_stream(log, name, private_key):
                rows.append(
                    {
                        "stream": s.stream,
                        "tree_size": s.tree_size,
                        "last_seq": s.last_seq,
                        "root": s.root,
                        "signer": s.signer,
                    }
                )
        return rows

    def render(rows: list[dict[str, Any]]) -> None:
        if as_json:
            if rows or interval is None:
                print_json(rows)
        elif not rows:
            if interval is None:
                console().print("nothing new to seal")
        else:
            for r in rows:
                console().print(
                    f"{r['stream']}: sealed {r['tree_size']} messages up to seq {r['last_seq']}, "
                    f"root {r['root'][:16]}…, signer {r['signer']}"
                )

    async def go() -> None:
        async with open_log(app) as log:
            if interval is None:
                render(await once(log))
                return
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            while not stop.is_set():
                render(await once(log))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)

    run(go())


def _duration(text: str) -> float:
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    try:
        value = float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except (ValueError, IndexError):
        raise click.BadParameter(f"{text!r}: not a duration like 30s, 5m, 1h") from None
    if value <= 0:
        raise click.BadParameter(f"{text!r}: must be positive")
    return value


@audit.command()
@click.option(
    "--stream", "stream", multiple=True, help="Verify this stream (repeat; default: all)."
)
@click.option(
    "--from",
    "from_seq",
    type=click.IntRange(min=0),
    default=0,
    help="Start at the seal covering SEQ.",
)
@_key_option
@click.option(
    "--origin",
    "origins",
    multiple=True,
    metavar="CLUSTER",
    help="A cluster whose bridged copies are trusted (repeat); copies from others are "
    "reported as forged origins.",
)
@click.option(
    "--export",
    "export_dir",
    type=ExistingPath(file_okay=False, path_type=Path),
    help="Check an export directory offline instead of the server.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option
@pass_app
def verify(
    app: AppContext,
    stream: tuple[str, ...],
    from_seq: int,
    keys: tuple[str, ...],
    origins: tuple[str, ...],
    export_dir: Path | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Recompute each stream's tree; report per seal intact or the first divergence.

    The exit status is 1 when anything diverges (with the sequence numbers).
    """
    from aqe.audit.verify import verify_stream

    trusted = _trusted(app, keys)
    if export_dir is not None:
        from aqe.audit.export import verify_export

        report = verify_export(export_dir, trusted)
        if as_json:
            print_json(report)
        else:
            for line in report.lines():
                console().print(line)
        if not report.intact:
            raise SystemExit(1)
        return

    async def go() -> list[StreamVerdict]:
        async with open_log(app) as log:
            return [
                await verify_stream(
                    log,
                    name,
                    trusted,
                    trusted_origins=set(origins) if origins else None,
                    from_seq=from_seq,
                )
                for name in await _streams(log, stream)
            ]

    verdicts = run(go())
    if as_json:
        import msgspec

        print_json([{**msgspec.to_builtins(v), "intact": v.intact} for v in verdicts])
    else:
        _render_verdicts(verdicts)
    if not all(v.intact for v in verdicts):
        raise SystemExit(1)


def _render_verdicts(verdicts: list[StreamVerdict]) -> None:
    rows: list[list[Cell]] = []
    for v in verdicts:
        for check in v.seals:
            first = check.divergences[0] if check.divergences else None
            rows.append(
                [
                    v.stream,
                    check.seal_seq,
                    f"{check.first_seq}..{check.last_seq}",
                    check.tree_size,
                    "intact" if check.intact else f"{first.kind if first else '?'}",
                    "" if first is None else first.detail,
                ]
            )
        if not v.seals:
            rows.append([v.stream, "-", "-", 0, "no seal", ""])
    emit_table(["stream", "seal", "seqs", "size", "verdict", "first divergence"], rows)
    out = console()
    for v in verdicts:
        more = sum(len(c.divergences) for c in v.seals) + len(v.origin)
        for d in v.origin:
            out.print(f"[red]{v.stream} seq {d.seq}: forged origin: {d.detail}[/red]")
        status = "[green]intact[/green]" if v.intact else f"[red]{more} divergences[/red]"
        out.print(f"{v.stream}: {status}; {v.messages} messages read, {v.unsealed} not sealed yet")
        for check in v.seals:
            for d in check.divergences:
                where = f"seq {d.seq}" if d.seq is not None else f"seal at seq {d.seal_seq}"
                out.print(f"  {d.kind}: {where}: {d.detail}")


@audit.command()
@click.option("--stream", required=True, help="The stream the event is in.")
@click.option(
    "--seq",
    "seqs",
    required=True,
    multiple=True,
    type=click.IntRange(min=1),
    help="The event's sequence (repeat for several; one JSON document each line).",
)
@click.option(
    "--seal",
    "seal_seq",
    type=click.IntRange(min=1),
    help="Prove against the seal at this AQE_AUDIT sequence [default: the newest].",
)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the proof to FILE instead of stdout.",
)
@pass_app
def prove(
    app: AppContext, stream: str, seqs: tuple[int, ...], seal_seq: int | None, out: Path | None
) -> None:
    """Print an inclusion proof (JSON) of events against a signed seal."""
    from aqe.audit.proof import Prover, encode_proof

    async def go() -> list[bytes]:
        async with open_log(app) as log:
            prover = await Prover.load(log, stream, covering=max(seqs), seal_seq=seal_seq)
            return [encode_proof(await prover.prove(log, s)) for s in seqs]

    docs = run(go())
    text = b"\n".join(docs) + b"\n"
    if out is not None:
        out.write_bytes(text)
        console(stderr=True).print(f"wrote {len(docs)} proof(s) to {out}")
    else:
        click.echo(text.decode(), nl=False)


@audit.command(name="check-proof")
@click.argument("file", type=ExistingPath(dir_okay=False, path_type=Path))
@_key_option
@json_option
@pass_app
def check_proof_cmd(app: AppContext, file: Path, keys: tuple[str, ...], as_json: bool) -> None:
    """Check proofs in FILE (one JSON document a line) with no server; exit 1 if one fails."""
    from aqe.audit.proof import check_proof, decode_proof

    trusted = _trusted(app, keys)
    results: list[dict[str, Any]] = []
    for n, line in enumerate(file.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        proof = decode_proof(line, source=f"{file}:{n}")
        problems = check_proof(proof, trusted)
        results.append(
            {
                "stream": proof.leaf.stream,
                "seq": proof.leaf.seq,
                "tree_size": proof.tree_size,
                "seal_seq": proof.seal_seq,
                "ok": not problems,
                "problems": problems,
            }
        )
    if as_json:
        print_json(results)
    else:
        out = console()
        for r in results:
            if r["ok"]:
                out.print(
                    f"[green]ok[/green] {r['stream']} seq {r['seq']} is in the tree of "
                    f"{r['tree_size']} sealed at AQE_AUDIT seq {r['seal_seq']}"
                )
            else:
                out.print(
                    f"[red]FAILED[/red] {r['stream']} seq {r['seq']}: " + "; ".join(r["problems"])
                )
    if not results or not all(r["ok"] for r in results):
        raise SystemExit(1)


def _parse_range(text: str) -> tuple[int, int | None]:
    first, sep, last = text.partition("..")
    try:
        a = int(first) if first else 1
        b = int(last) if last else None
    except ValueError:
        raise click.BadParameter(f"{text!r}: not a range like 1..500 or 100..") from None
    if not sep or a < 1 or (b is not None and b < a):
        raise click.BadParameter(f"{text!r}: not a range like 1..500 or 100..")
    return a, b


@audit.command()
@click.option("--stream", required=True, help="The stream to export.")
@click.option(
    "--range",
    "seq_range",
    default="1..",
    show_default=True,
    metavar="A..B",
    help="Sequences to export (B empty: up to the newest seal).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="An empty or new directory.",
)
@json_option
@pass_app
def export(app: AppContext, stream: str, seq_range: str, out: Path, as_json: bool) -> None:
    """Write events (Parquet), their seals and an inclusion proof per event to a directory."""
    from aqe.audit.export import export_range

    first, last = _parse_range(seq_range)

    async def go() -> Any:
        async with open_log(app) as log:
            return await export_range(log, stream, out, first=first, last=last)

    summary = run(go())
    if as_json:
        print_json(summary)
        return
    console().print(
        f"{summary.stream} {summary.first_seq}..{summary.last_seq}: {summary.events} events, "
        f"{summary.seals} seals, proofs against the tree of {summary.tree_size} sealed at "
        f"AQE_AUDIT seq {summary.seal_seq} -> {summary.directory}"
    )


@audit.command(name="import")
@click.argument("directory", type=ExistingPath(file_okay=False, path_type=Path))
@_key_option
@click.option("--stream", help="Append to this stream [default: the exported one].")
@json_option
@pass_app
def import_(
    app: AppContext, directory: Path, keys: tuple[str, ...], stream: str | None, as_json: bool
) -> None:
    """Verify an export, then append its events to this server's stream in order.

    Each copy keeps its headers and gets Aqe-Import-Stream / Aqe-Import-Seq, the
    original stream and sequence (its original leaf can be recomputed from them).
    """
    from aqe.audit.export import import_export, verify_export

    report = verify_export(directory, _trusted(app, keys))
    if not report.intact:
        for line in report.lines():
            console(stderr=True).print(line)
        raise SystemExit(1)

    async def go() -> int:
        async with open_log(app) as log:
            return await import_export(directory, log, stream=stream)

    count = run(go())
    if as_json:
        print_json({"imported": count, "stream": stream or report.stream})
    else:
        console().print(f"imported {count} events into {stream or report.stream} (export verified)")


@audit.command()
@click.argument("projection")
@click.argument("key")
@click.option(
    "--proofs",
    "proofs_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the events' inclusion proofs to FILE (one JSON document a line).",
)
@json_option
@pass_app
def explain(
    app: AppContext, projection: str, key: str, proofs_out: Path | None, as_json: bool
) -> None:
    """List the events behind row KEY of PROJECTION, with sequences and inclusion proofs.

    KEY is the row's aggregate id: a test id for `history` (its executions, the runs
    they were in, its quarantine), an agent id for `membership`, and so on. PROJECTION
    may also be a stream: `explain AQE_COORD ship-42` lists a proposal and its votes.
    """
    from aqe.audit.explain import explain as explain_row
    from aqe.audit.proof import encode_proof
    from aqe.projections import get_projection

    async def go() -> Any:
        async with open_log(app) as log:
            names = {s.name for s in log.specs}
            # A stream name stands for itself: `explain AQE_COORD PROPOSAL` lists a
            # proposal and its votes, which no projection keeps.
            streams = (projection,) if projection in names else get_projection(projection).streams
            return await explain_row(log, projection, streams, log.specs, key)

    result = run(go())
    if proofs_out is not None:
        proofs_out.write_bytes(
            b"".join(encode_proof(e.proof) + b"\n" for e in result.events if e.proof)
        )
    if as_json:
        print_json(result)
        return
    from datetime import UTC, datetime

    rows: list[list[Cell]] = []
    for e in result.events:
        when = datetime.fromtimestamp(e.recorded_at_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")
        proof = (
            f"in tree of {e.proof.tree_size} (seal {e.proof.seal_seq})" if e.proof else "not sealed"
        )
        rows.append([e.stream, e.seq, e.event_type, when, proof])
    emit_table(["stream", "seq", "event", "stored (UTC)", "proof"], rows)
    if result.unsealed:
        console(stderr=True).print(
            f"{result.unsealed} events are not sealed yet: run `aqe audit seal` for their proofs"
        )
