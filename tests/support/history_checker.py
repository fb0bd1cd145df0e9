"""A Jepsen-style history of client operations, and the checks run on it after a heal.

Every operation a client of the fault suite starts is recorded with what it answered:

* ``ok``: the call returned; what it wrote must be in the log, exactly once.
* ``fail``: a definite refusal (a failed condition, a deposed leader, a rejected
  command); what it would have written must be absent.
* ``info``: indeterminate (the log stayed unavailable, a commit reply never came); it
  may be present or absent, but never twice.

The checks are pure functions of the history and of what the log holds afterwards, so
they have their own unit tests with hand-made histories.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "EventCheck",
    "History",
    "LeaseRecord",
    "Op",
    "check_events",
    "check_leases",
    "check_verdicts",
    "render_table",
]

Outcome = Literal["ok", "fail", "info"]


@dataclass
class Op:
    """One client operation and its outcome."""

    process: str
    kind: str
    key: str
    event_ids: tuple[str, ...] = ()
    outcome: Outcome | None = None
    started: float = 0.0
    ended: float = 0.0
    value: Any = None
    error: str = ""
    units: tuple[tuple[str, ...], ...] = ()
    """Groups of ``event_ids`` that land whole or not at all, each only after the ones
    before it landed whole (a run's body, then its commit marker)."""

    def line(self) -> str:
        took = f"{self.ended - self.started:6.2f}s"
        extra = f" {self.value!r}" if self.value is not None else ""
        why = f" ({self.error})" if self.error else ""
        return (
            f"{self.started:8.2f} {took} {self.process:<10} {self.kind:<8} {self.outcome} "
            f"{self.key}{extra}{why}"
        )


class History:
    """Operations in the order they started; times are seconds since the history began."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self._t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self._t0

    @contextlib.contextmanager
    def op(
        self,
        process: str,
        kind: str,
        key: str,
        event_ids: Iterable[str] = (),
        *,
        units: Iterable[Iterable[str]] = (),
        definite: tuple[type[BaseException], ...] = (),
        indeterminate: tuple[type[BaseException], ...] = (),
    ) -> Iterator[Op]:
        """Record one operation around the ``with`` body.

        An exception in ``indeterminate`` makes it ``info``, else one in ``definite``
        makes it ``fail`` (both are swallowed); anything else also makes it ``info`` and
        propagates (a client must not lose an operation it cannot explain).
        """
        op = Op(
            process,
            kind,
            key,
            tuple(event_ids),
            started=self.now(),
            units=tuple(tuple(unit) for unit in units),
        )
        self.ops.append(op)
        try:
            yield op
        except indeterminate as exc:  # first: an indeterminate error may subclass a definite one
            op.outcome, op.error = "info", _short(exc)
        except definite as exc:
            op.outcome, op.error = "fail", _short(exc)
        except BaseException as exc:
            op.outcome, op.error = "info", _short(exc)
            raise
        else:
            if op.outcome is None:
                op.outcome = "ok"
        finally:
            op.ended = self.now()

    def counts(self) -> Counter[tuple[str, str]]:
        """(kind, outcome) -> number of operations."""
        return Counter((op.kind, op.outcome or "info") for op in self.ops)

    def text(self, limit: int = 400) -> str:
        lines = [op.line() for op in self.ops]
        if len(lines) > limit:
            lines = [
                *lines[: limit // 2],
                f"... {len(lines) - limit} more ...",
                *lines[-limit // 2 :],
            ]
        return "\n".join(lines)


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 160 else text[:157] + "..."


@dataclass
class EventCheck:
    """What the log holds against what the clients were told."""

    acked: int = 0
    unknown: int = 0
    lost: list[tuple[Op, str]] = field(default_factory=list)
    duplicates: dict[str, int] = field(default_factory=dict)
    failed_present: list[tuple[Op, str]] = field(default_factory=list)
    partial: list[tuple[Op, int]] = field(default_factory=list)
    unknown_present: int = 0

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicates or self.failed_present or self.partial)

    def problems(self) -> list[str]:
        out = [f"acked but lost: {eid} of {op.line()}" for op, eid in self.lost[:20]]
        out += [f"stored {n} times: {eid}" for eid, n in list(self.duplicates.items())[:20]]
        out += [f"failed but stored: {eid} of {op.line()}" for op, eid in self.failed_present[:20]]
        out += [
            f"stored in part (unit sizes {[len(u) for u in op.units]}, present {n}): {op.line()}"
            for op, n in self.partial[:20]
        ]
        return out


def check_events(ops: Sequence[Op], stored_ids: Iterable[str]) -> EventCheck:
    """Acked writes present once, failed ones absent, unknown ones at most once.

    ``stored_ids`` is the event id (``Nats-Msg-Id``) of every message in the streams the
    operations wrote to, one per stored message: an id seen twice is a duplicate
    whether or not any client was told about it.
    """
    counts = Counter(stored_ids)
    check = EventCheck(duplicates={eid: n for eid, n in counts.items() if n > 1})
    for op in ops:
        if not op.event_ids:
            continue
        present = [eid for eid in op.event_ids if counts[eid] > 0]
        if op.units and not _whole_in_order(op.units, counts):
            check.partial.append((op, len(present)))
        if op.outcome == "ok":
            check.acked += 1
            check.lost += [(op, eid) for eid in op.event_ids if counts[eid] == 0]
        elif op.outcome == "fail":
            check.failed_present += [(op, eid) for eid in present]
        else:
            check.unknown += 1
            check.unknown_present += bool(present)
    return check


def _whole_in_order(units: Sequence[Sequence[str]], counts: Mapping[str, int]) -> bool:
    """Each unit all present or all absent, and none present after an absent one."""
    complete = True
    for unit in units:
        present = sum(1 for eid in unit if counts.get(eid, 0) > 0)
        if present and (not complete or present < len(unit)):
            return False
        complete = complete and present == len(unit)
    return True


@dataclass(frozen=True)
class LeaseRecord:
    """One lease-subject message as the log holds it (decoded by the caller)."""

    seq: int
    action: Literal["acquired", "renewed", "released"]
    holder: str
    term: int
    """For ``acquired`` the message's own sequence, else the term it names."""
    after_seq: int = 0
    """``acquired`` only: the lease message it replaced."""


def check_leases(
    records: Sequence[LeaseRecord],
    claims: Iterable[Op],
    fenced: Mapping[int, tuple[str, int]],
) -> list[str]:
    """One leader per term, as the log shows it and as the clients were told.

    Args:
        records: The group's lease messages in stream order.
        claims: ``elect`` operations (``value`` = the term a client was told it won),
            ``fenced`` ones (``value`` = the term it wrote under, ``event_ids`` its write).
        fenced: Stored fenced writes: stream sequence -> (holder, term it names).

    Returns:
        One line per violation.
    """
    problems: list[str] = []
    holder_of: dict[int, str] = {}
    previous, term = 0, 0
    term_at: list[tuple[int, int]] = []  # (seq, term in force from seq)
    for rec in records:
        if rec.action == "acquired":
            if rec.after_seq != previous:
                problems.append(
                    f"term {rec.seq} ({rec.holder}) replaced seq {rec.after_seq}, "
                    f"but the last lease message was {previous}: two leaders raced"
                )
            term = rec.seq
            holder_of[term] = rec.holder
            term_at.append((rec.seq, term))
        elif rec.term != term or holder_of.get(term) != rec.holder:
            problems.append(
                f"{rec.action} at {rec.seq} by {rec.holder} for term {rec.term} "
                f"while term {term} ({holder_of.get(term)}) was current"
            )
        previous = rec.seq
    for seq, (holder, named) in sorted(fenced.items()):
        current = max((t for s, t in term_at if s < seq), default=0)
        if named != current or holder_of.get(current) != holder:
            problems.append(
                f"fenced write at {seq} by {holder} for term {named} stored under term "
                f"{current} ({holder_of.get(current)})"
            )
    for op in claims:
        if op.outcome != "ok" or op.kind != "elect":
            continue
        if holder_of.get(op.value) != op.process:
            problems.append(
                f"{op.process} was told it leads term {op.value}; the log says "
                f"{holder_of.get(op.value)}"
            )
    return problems


def check_verdicts(finals: Mapping[str, Sequence[Any]], observed: Iterable[Op]) -> list[str]:
    """One verdict per proposal: every read of it agrees, and so does what voters saw.

    Args:
        finals: proposal id -> the verdicts read after the heal (one per reader).
        observed: ``tally`` operations; ``value`` is a verdict a client read while the
            faults ran. A decided one must match the final choice and sequence.
    """
    problems: list[str] = []
    for pid, verdicts in finals.items():
        if any(v != verdicts[0] for v in verdicts[1:]):
            problems.append(f"{pid}: readers disagree: {verdicts}")
    for op in observed:
        if op.outcome != "ok" or op.value is None:
            continue
        seen = op.value
        final = finals[op.key][0]
        if seen.status == "decided" and (seen.choice, seen.decided_at_seq) != (
            final.choice,
            final.decided_at_seq,
        ):
            problems.append(
                f"{op.key}: {op.process} saw {seen.choice!r} decided at {seen.decided_at_seq}, "
                f"final is {final.choice!r} at {final.decided_at_seq}"
            )
    return problems


def render_table(rows: Sequence[tuple[str, object]]) -> str:
    """A two-column plain-text table."""
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
