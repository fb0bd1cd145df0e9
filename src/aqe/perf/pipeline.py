"""The perf pipeline against the log: results in, changes found, checked, alerted.

Each function is one stage and may run again at any time without repeating itself:

* :func:`measured_events` / :func:`append_measurements`: benchmark results become
  :class:`~aqe.events.perf.BenchmarkMeasured` events (ids derived from series and run);
* :func:`read_state`: the fold of ``AQE_PERF`` (:class:`~aqe.perf.series.PerfProjection`);
* :func:`record_changes`: detection over every series; a change is new unless the
  series has one the same way within ``min_size`` points (ids derived from series and
  commits, so two watchers append it once);
* :func:`start_confirmations`: a ``perf-confirm`` workflow per suspected change whose
  series knows its command and repository (instance id ``perf-confirm-<change id>``);
* :func:`carry_out_verdicts`: the workflows' verdicts become ``PerfChangeVerified``
  (confirm instances and verdicts are the perf-confirms projection,
  :mod:`aqe.perf.confirms`);
* :func:`raise_alerts` and :func:`deliver`: alerts due, and each sink told once;
* :func:`watch_once`: all of them in order; :func:`confirm_here` drives the
  confirmations in this process (a driver and ``bench`` runners), as ``aqe perf watch
  --runners N`` does; a fleet runs those as ``aqe workflows run`` and
  ``aqe agent run --capability bench``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import msgspec

from aqe.errors import CommandRejectedError, EventDecodeError
from aqe.events.perf import (
    BenchmarkMeasured,
    MachineFingerprint,
    PerfAlertDelivered,
    PerfChangeDetected,
    PerfChangeVerified,
)
from aqe.log.port import EventLog, NewEvent
from aqe.log.retry import append_new, while_unavailable
from aqe.perf._fingerprint import series_id
from aqe.perf.alerts import alert_events, alert_summary
from aqe.perf.confirms import ConfirmsState, confirm_instance_id, read_confirms
from aqe.perf.detect import DetectConfig, detect_changes, direction_of
from aqe.perf.formats import BenchFile
from aqe.perf.harness import clock_of
from aqe.perf.series import PERF_STREAM, PerfProjection, PerfState
from aqe.perf.sinks import AlertMessage, AlertSink, DeliveryError
from aqe.workflows._store import start_instance
from aqe.workflows.perf import PERF_CONFIRM

if TYPE_CHECKING:
    from aqe.coordination.bus import Bus

__all__ = [
    "ConfirmOptions",
    "Delivery",
    "WatchReport",
    "append_measurements",
    "carry_out_verdicts",
    "confirm_here",
    "deliver",
    "measured_events",
    "raise_alerts",
    "read_state",
    "record_changes",
    "start_confirmations",
    "watch_once",
]

_log = logging.getLogger("aqe.perf")


def measured_events(
    bench: BenchFile,
    *,
    machine: MachineFingerprint,
    commit: str = "",
    repo: str = "",
    command: Sequence[str] = (),
    run_id: str = "",
) -> list[BenchmarkMeasured]:
    """One event per benchmark in ``bench``, measured on ``machine`` (the file's commit
    when ``commit`` is not given)."""
    fingerprint = machine
    run = run_id or bench.digest[:24]
    out = []
    for result in bench.results:
        sid = series_id(result.benchmark, result.metric, fingerprint.machine_class)
        out.append(
            BenchmarkMeasured(
                series_id=sid,
                benchmark=result.benchmark,
                metric=result.metric,
                unit=result.unit,
                samples=result.samples,
                machine=fingerprint,
                commit=commit or bench.commit,
                commit_time=bench.commit_time,
                run_id=run,
                source_format=bench.format,
                higher_is_better=result.higher_is_better,
                command=tuple(command),
                repo=repo,
            )
        )
    return out


async def append_measurements(log: EventLog, events: Sequence[BenchmarkMeasured]) -> int:
    """Append measurements (each with an id from its series and run); returns how many
    were new."""
    items = [NewEvent(event=e, event_id=f"measured-{e.series_id}-{e.run_id}") for e in events]
    return await append_new(log, items)


async def read_state(log: EventLog) -> PerfState:
    """Fold ``AQE_PERF`` from the start (undecodable events are skipped here; the
    projection runner parks them)."""
    projection = PerfProjection()
    state = projection.initial()
    async for env in log.read(PERF_STREAM, subjects="aqe.perf.>"):
        try:
            event = env.decode()
        except EventDecodeError:
            continue
        try:
            state = projection.apply(state, env, event)
        except ValueError as exc:
            _log.warning("perf: event %s not folded: %s", env.seq, exc)
    return state


def _change_id(sid: str, before: str, after: str, index: int) -> str:
    digest = hashlib.sha256(f"{sid}|{before}|{after}|{index}".encode()).hexdigest()
    return f"c-{digest[:20]}"


def new_changes(state: PerfState, config: DetectConfig | None = None) -> list[PerfChangeDetected]:
    """The changes detection finds that the state does not hold yet (pure)."""
    cfg = config or DetectConfig()
    known: dict[str, list[tuple[int, str]]] = {}
    for entry in state.changes.values():
        d = entry.detected
        known.setdefault(d.series_id, []).append((d.index, d.direction))
    out: list[PerfChangeDetected] = []
    for sid, series in sorted(state.series.items()):
        values = [p.median for p in series.points]
        for change in detect_changes(values, cfg):
            direction = direction_of(change.magnitude, higher_is_better=series.higher_is_better)
            if any(
                abs(i - change.index) <= cfg.min_size and d == direction
                for i, d in known.get(sid, [])
            ):
                continue
            before = series.points[change.index - 1].commit
            after = series.points[change.index].commit
            out.append(
                PerfChangeDetected(
                    change_id=_change_id(sid, before, after, change.index),
                    series_id=sid,
                    benchmark=series.benchmark,
                    metric=series.metric,
                    machine_class=series.machine_class,
                    direction=direction,
                    magnitude=round(change.magnitude, 6),
                    confidence=round(change.confidence, 9),
                    p_value=change.p_value,
                    commit_before=before,
                    commit_after=after,
                    index=change.index,
                    before_median=change.before_median,
                    after_median=change.after_median,
                    points_before=change.points_before,
                    points_after=change.points_after,
                    method=f"kernelcpd-linear+mannwhitney(alpha={cfg.alpha:g},min_effect={cfg.min_effect:g})",
                )
            )
            known.setdefault(sid, []).append((change.index, direction))
    return out


async def record_changes(
    log: EventLog, state: PerfState, config: DetectConfig | None = None
) -> list[PerfChangeDetected]:
    """Detect and append the new changes; returns them."""
    found = new_changes(state, config)
    if found:
        items = [NewEvent(event=c, event_id=f"detected-{c.change_id}") for c in found]
        await while_unavailable(lambda: log.append_many(items))
    return found


class ConfirmOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How confirmations re-run benchmarks."""

    rounds: int = 5
    repeat: int = 3
    warmup: int = 1
    min_effect: float = 0.05
    alpha: float = 0.01
    python: str = "python3"
    backend: str = "process"


async def start_confirmations(
    log: EventLog,
    state: PerfState,
    options: ConfirmOptions | None = None,
    confirms: ConfirmsState | None = None,
) -> list[str]:
    """Start a confirm workflow for each suspected change that can be re-run; returns
    the instances started now (``confirms``: the confirm instances as the log holds
    them, read from the start when not given)."""
    opts = options or ConfirmOptions()
    existing = (confirms if confirms is not None else await read_confirms(log)).instances
    started: list[str] = []
    for change_id, entry in sorted(state.changes.items()):
        d = entry.detected
        series = state.series.get(d.series_id)
        instance_id = confirm_instance_id(change_id)
        if entry.verdict != "suspected" or instance_id in existing or series is None:
            continue
        if not series.command or not series.repo or not d.commit_before or not d.commit_after:
            continue  # nothing to re-run it with: it stays suspected
        params = {
            "change_id": change_id,
            "repo": series.repo,
            "before": d.commit_before,
            "after": d.commit_after,
            "command": json.dumps(list(series.command)),
            "expected": f"{d.magnitude:.6g}",
            "rounds": str(opts.rounds),
            "repeat": str(opts.repeat),
            "warmup": str(opts.warmup),
            "min_effect": str(opts.min_effect),
            "alpha": str(opts.alpha),
            "python": opts.python,
            "backend": opts.backend,
            "clock": clock_of(series.metric),
        }
        try:
            await start_instance(
                log,
                PERF_CONFIRM,
                params,
                instance_id=instance_id,
                started_by="perf",
                reasons=(alert_summary(entry),),
            )
        except CommandRejectedError:
            continue
        started.append(instance_id)
    return started


async def carry_out_verdicts(
    log: EventLog, state: PerfState, confirms: ConfirmsState | None = None
) -> int:
    """Append a ``PerfChangeVerified`` for each confirm verdict not recorded yet
    (``confirms``: as the log holds them, read from the start when not given)."""
    items: list[NewEvent] = []
    verdicts = (confirms if confirms is not None else await read_confirms(log)).verdicts
    for change_id, verdict in sorted(verdicts.items()):
        entry = state.changes.get(change_id)
        if entry is None or entry.verified is not None:
            continue
        data = verdict.data
        verified = PerfChangeVerified(
            change_id=change_id,
            verdict="confirmed" if verdict.decision == "confirmed" else "dismissed",
            magnitude=float(data.get("magnitude", "1")),
            p_value=float(data.get("p_value", "1")),
            samples_before=int(data.get("samples_before", "0")),
            samples_after=int(data.get("samples_after", "0")),
            instance_id=verdict.instance_id,
            reasons=verdict.reasons,
        )
        items.append(NewEvent(event=verified, event_id=f"verified-{change_id}"))
    if items:
        await while_unavailable(lambda: log.append_many(items))
    return len(items)


async def raise_alerts(log: EventLog, state: PerfState, *, settle: int = 5) -> int:
    """Append the alert events due; returns how many were new."""
    return await append_new(log, alert_events(state, settle=settle))


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """One hand-over to a sink."""

    change_id: str
    sink: str
    state: str
    status: str
    ok: bool


def _messages(state: PerfState) -> list[AlertMessage]:
    out = []
    for change_id, entry in sorted(state.changes.items()):
        if not entry.alert:
            continue
        d = entry.detected
        v = entry.verified
        resolved = entry.resolved
        base = AlertMessage(
            change_id=change_id,
            state="firing",
            summary=alert_summary(entry),
            benchmark=d.benchmark,
            metric=d.metric,
            machine_class=d.machine_class,
            direction=d.direction,
            magnitude=v.magnitude if v is not None else d.magnitude,
            confidence=d.confidence,
            commit_before=d.commit_before,
            commit_after=d.commit_after,
            started_at_ns=entry.detected_at_ns,
        )
        out.append(base)
        if entry.alert == "resolved" and resolved is not None:
            out.append(
                msgspec.structs.replace(
                    base,
                    state="resolved",
                    resolved_commit=resolved.commit,
                    resolved_at_ns=time.time_ns(),
                )
            )
    return out


async def deliver(log: EventLog, state: PerfState, sinks: Sequence[AlertSink]) -> list[Delivery]:
    """Hand each alert (firing, then resolved) to each sink that has not had it."""
    done: list[Delivery] = []
    for message in _messages(state):
        entry = state.changes[message.change_id]
        for sink in sinks:
            if f"{sink.name}:{message.state}" in entry.delivered:
                continue
            try:
                status = await sink.send(message)
            except DeliveryError as exc:
                _log.warning("perf: %s did not take %s: %s", sink.name, message.change_id, exc)
                done.append(
                    Delivery(
                        change_id=message.change_id,
                        sink=sink.name,
                        state=message.state,
                        status=str(exc),
                        ok=False,
                    )
                )
                continue
            record = PerfAlertDelivered(
                change_id=message.change_id, sink=sink.name, state=message.state, status=status
            )
            event_id = f"delivered-{message.change_id}-{sink.name}-{message.state}"
            await while_unavailable(lambda r=record, i=event_id: log.append(r, event_id=i))  # type: ignore[misc]
            done.append(
                Delivery(
                    change_id=message.change_id,
                    sink=sink.name,
                    state=message.state,
                    status=status,
                    ok=True,
                )
            )
    return done


class WatchReport(msgspec.Struct, kw_only=True):
    """What one round of :func:`watch_once` did."""

    series: int = 0
    detected: list[str] = msgspec.field(default_factory=list)
    confirmations: list[str] = msgspec.field(default_factory=list)
    verdicts: int = 0
    alerts: int = 0
    deliveries: list[Delivery] = msgspec.field(default_factory=list)


async def watch_once(
    log: EventLog,
    sinks: Sequence[AlertSink] = (),
    *,
    config: DetectConfig | None = None,
    options: ConfirmOptions | None = None,
    settle: int = 5,
    state_of: Callable[[EventLog], Awaitable[PerfState]] = read_state,
    confirms_of: Callable[[EventLog], Awaitable[ConfirmsState]] = read_confirms,
) -> WatchReport:
    """Every stage once, in order (see the module docstring).

    ``state_of`` gives the perf state as the log holds it now: by default a fold of
    ``AQE_PERF`` from the start; ``confirms_of`` likewise the confirm instances and
    verdicts (``AQE_WORKFLOWS``, read once a round). ``aqe perf watch`` resumes both
    from their stored projections.
    """
    report = WatchReport()
    state = await state_of(log)
    report.series = len(state.series)
    report.detected = [c.change_id for c in await record_changes(log, state, config)]
    if report.detected:
        state = await state_of(log)
    confirms = await confirms_of(log)
    report.confirmations = await start_confirmations(log, state, options, confirms)
    # The instances started just now have no verdicts yet: the same read serves.
    report.verdicts = await carry_out_verdicts(log, state, confirms)
    if report.verdicts:
        state = await state_of(log)
    report.alerts = await raise_alerts(log, state, settle=settle)
    if report.alerts:
        state = await state_of(log)
    report.deliveries = await deliver(log, state, sinks)
    return report


async def confirm_here(
    log: EventLog,
    bus: Bus,
    instance_ids: Sequence[str],
    *,
    runners: int = 1,
    timeout_s: float = 900.0,
    confirms_of: Callable[[EventLog], Awaitable[ConfirmsState]] = read_confirms,
) -> None:
    """Drive the given confirm instances to their end in this process (``confirms_of``
    tells which still run, polled; see :func:`watch_once`).

    Raises:
        TimeoutError: one had not ended after ``timeout_s``.
    """
    from aqe.runners import RunnerConfig
    from aqe.workflows.local import drive_here
    from aqe.workflows.perf import BENCH_CAPABILITY, PerfConfirmWorkflow

    async def open_ones() -> list[str]:
        confirms = await confirms_of(log)
        return [i for i in instance_ids if confirms.running(i)]

    if not await open_ones():
        return
    await drive_here(
        log,
        bus,
        PerfConfirmWorkflow(),
        open_ones,
        capabilities=[BENCH_CAPABILITY],
        config=RunnerConfig(ack_wait_s=120.0, fetch_timeout_s=0.5),
        runners=runners,
        timeout_s=timeout_s,
        poll_s=0.3,
        what="perf confirmations",
    )
