"""``aqe publish`` and ``aqe events tail|get|types``."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import msgspec

from aqe.app import AppContext, open_log, run
from aqe.cli._context import console, json_option, pass_app, print_json
from aqe.cli._table import emit_table, output_options
from aqe.errors import EventDecodeError, EventValidationError

if TYPE_CHECKING:
    from aqe.events import Envelope
    from aqe.log.jetstream import JetStreamEventLog


def _load_payload(event_type: str, data: str) -> dict[str, Any]:
    """Parse ``--data`` (inline JSON or ``@FILE``) into a JSON object."""
    source = "--data"
    text = data
    if data.startswith("@"):
        path = Path(data[1:])
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise click.BadParameter(f"cannot read {path}: {exc.strerror}") from exc
    try:
        payload = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise EventValidationError(event_type, f"{source} is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise EventValidationError(event_type, f"{source} must be a JSON object")
    return payload


@click.command()
@click.argument("event_type", metavar="TYPE")
@click.option(
    "--data",
    "-d",
    required=True,
    metavar="JSON|@FILE",
    help="The event's fields as a JSON object, inline or @path/to/file.json.",
)
@click.option(
    "--id",
    "event_id",
    metavar="ID",
    help="Event id (Nats-Msg-Id) [default: "
    "derived from the payload, so the same fact is stored once].",
)
@click.option(
    "--expect-seq",
    type=click.IntRange(min=0),
    metavar="N",
    help="Append only if the aggregate's last stream sequence is N (0 = new).",
)
@json_option
@pass_app
def publish(
    app: AppContext,
    event_type: str,
    data: str,
    event_id: str | None,
    expect_seq: int | None,
    as_json: bool,
) -> None:
    """Validate an event of TYPE against its schema and append it; print its sequence.

    TYPE is a tag such as tests.case.executed.v1 (see `aqe events types`).

    \b
    Example:
      aqe publish agents.agent.registered.v1 -d '{"agent_id": "a1", "role": "runner"}'
    """
    from aqe.events import REGISTRY

    event = REGISTRY.build(event_type, _load_payload(event_type, data))

    async def go() -> Any:
        async with open_log(app) as log:
            return await log.append(event, event_id=event_id, expected_last_seq=expect_seq)

    result = run(go())
    if as_json:
        print_json(result)
        return
    note = " (duplicate: already stored, nothing appended)" if result.duplicate else ""
    console().print(f"{result.stream} seq {result.seq} {result.subject}{note}")


@click.group()
def events() -> None:
    """Read the log: tail streams, fetch one event, list event types."""


def _dead_letter_line(env: Envelope) -> str | None:
    """Where a dead letter's original is and why it was parked (None for other messages)."""
    from aqe.events import Headers

    h = env.headers
    if Headers.DLQ_STREAM not in h:
        return None
    copy = h.get(Headers.DLQ_COPY, "full")
    return (
        f"[yellow]dead letter of {h[Headers.DLQ_STREAM]}#{h.get(Headers.DLQ_SEQ, '?')} "
        f"{h.get(Headers.DLQ_SUBJECT, '')} ({h.get(Headers.DLQ_PROJECTION, '?')}; "
        f"{copy} copy of {h.get(Headers.DLQ_SIZE, '?')} bytes): "
        f"{h.get(Headers.DLQ_REASON, '')[:120]}[/yellow]"
    )


def _summary(env: Envelope) -> tuple[str, dict[str, Any] | None]:
    parked = _dead_letter_line(env)
    if parked is not None:
        return parked, None
    try:
        event = env.decode()
    except EventDecodeError as exc:
        return f"[red]undecodable: {exc.detail}[/red]", None
    fields = msgspec.to_builtins(event)
    shown = ", ".join(
        f"{k}={v}" for k, v in fields.items() if k != "event" and v not in (None, "", [], 0)
    )
    return (shown if len(shown) <= 120 else shown[:117] + "..."), fields


def _as_record(env: Envelope) -> dict[str, Any]:
    summary, fields = _summary(env)
    record: dict[str, Any] = {
        "stream": env.stream,
        "seq": env.seq,
        "subject": env.subject,
        "event_id": env.event_id,
        "event_type": env.event_type,
        "recorded_at": datetime.fromtimestamp(env.recorded_at_ns / 1e9, UTC).isoformat(),
        "headers": dict(env.headers),
    }
    if _dead_letter_line(env) is not None:
        prefix = "Aqe-Dlq-"
        record["dead_letter"] = {
            k[len(prefix) :].lower().replace("-", "_"): v
            for k, v in env.headers.items()
            if k.startswith(prefix)
        }
        record["data"] = env.data.decode("utf-8", errors="replace")
    elif fields is None:
        record["error"] = summary
        record["data"] = env.data.decode("utf-8", errors="replace")
    else:
        record["event"] = fields
    return record


def _print_line(env: Envelope) -> None:
    when = datetime.fromtimestamp(env.recorded_at_ns / 1e9, UTC).strftime("%H:%M:%S.%f")[:-3]
    summary, _ = _summary(env)
    console().print(
        f"[dim]{when}[/dim] {env.stream}#{env.seq} [bold]{env.event_type or '?'}[/bold] {summary}"
    )


def _streams_for(log: JetStreamEventLog, stream: str | None, subject: str | None) -> list[str]:
    from aqe.errors import ConfigError
    from aqe.log.subjects import subject_matches

    names = [s.name for s in log.specs]
    if stream:
        if stream not in names:
            raise ConfigError(f"unknown stream {stream}; declared: {', '.join(names)}")
        return [stream]
    if subject:
        hits = [
            s.name
            for s in log.specs
            if any(subject_matches(p, subject) or subject_matches(subject, p) for p in s.subjects)
        ]
        if not hits:
            raise ConfigError(f"no stream holds subjects matching {subject}")
        return hits
    return [s.name for s in log.specs if not s.audit]


@events.command()
@click.option("--stream", metavar="NAME", help="Only this stream [default: every event stream].")
@click.option(
    "--subject",
    "-s",
    metavar="SUBJECT",
    help="Only subjects matching this filter, e.g. 'aqe.tests.case.*.executed'.",
)
@click.option(
    "-n",
    "--lines",
    default=20,
    show_default=True,
    type=click.IntRange(min=0),
    help="How many of the latest events to show first.",
)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events as they arrive.")
@json_option
@pass_app
def tail(
    app: AppContext,
    stream: str | None,
    subject: str | None,
    lines: int,
    follow: bool,
    as_json: bool,
) -> None:
    """Show the latest events, oldest first; with --follow keep going (Ctrl-C stops)."""

    def emit(env: Envelope) -> None:
        if as_json:
            print_json(_as_record(env))
        else:
            _print_line(env)

    async def go() -> None:
        async with open_log(app) as log:
            names = _streams_for(log, stream, subject)
            starts: dict[str, int] = {}
            latest: list[Envelope] = []
            for name in names:
                last = await log.last_seq(name)
                starts[name] = last
                after = max(0, last - lines) if subject is None else 0
                if lines and last:
                    batch = [
                        e
                        async for e in log.read(
                            name, after_seq=after, until_seq=last, subjects=subject
                        )
                    ]
                    latest.extend(batch[-lines:])
            latest.sort(key=lambda e: (e.recorded_at_ns, e.stream, e.seq))
            for env in latest[-lines:] if lines else []:
                emit(env)
            if not follow:
                return

            async def follow_one(name: str) -> None:
                async for env in log.read(
                    name, after_seq=starts[name], subjects=subject, follow=True
                ):
                    emit(env)

            await asyncio.gather(*(follow_one(n) for n in names))

    with contextlib.suppress(KeyboardInterrupt):
        run(go())


@events.command()
@click.argument("seq", type=click.IntRange(min=1))
@click.option(
    "--stream",
    default="AQE_TESTS",
    show_default=True,
    metavar="NAME",
    help="The stream the sequence number belongs to.",
)
@json_option
@pass_app
def get(app: AppContext, seq: int, stream: str, as_json: bool) -> None:
    """Show the event stored at stream sequence SEQ, with its headers."""

    async def go() -> Envelope:
        async with open_log(app) as log:
            return await log.get(stream, seq)

    env = run(go())
    record = _as_record(env)
    if as_json:
        print_json(record)
        return
    out = console()
    out.print(f"[bold]{env.stream}#{env.seq}[/bold] {env.subject}")
    out.print(f"  recorded_at: {record['recorded_at']}")
    out.print(f"  event_id:    {env.event_id}")
    for key, value in sorted(env.headers.items()):
        out.print(f"  [dim]{key}: {value}[/dim]")
    if "event" in record:
        for key, value in record["event"].items():
            out.print(f"  {key}: {value!r}")
    else:
        out.print(f"  {record['error']}")
        out.print(f"  data: {record['data'][:500]!r}")


@events.command()
@output_options
def types(as_json: bool) -> None:
    """List every event type with its subject template and fields."""
    from aqe.events import REGISTRY

    rows: list[dict[str, Any]] = []
    for tag, cls in sorted(REGISTRY.types.items()):
        parts = cls.tag_parts()
        fields = [f.name + ("" if f.required else "?") for f in msgspec.structs.fields(cls)]
        rows.append(
            {
                "type": tag,
                "subject": f"aqe.{parts.domain}.{parts.aggregate}.<{cls.id_field}>.{parts.action}",
                "fields": fields,
                "doc": (cls.__doc__ or "").strip().splitlines()[0],
            }
        )
    if as_json:
        print_json(rows)
        return
    emit_table(
        ["type", "subject", "fields (? = optional)", "meaning"],
        [[str(r["type"]), str(r["subject"]), " ".join(r["fields"]), str(r["doc"])] for r in rows],
    )
