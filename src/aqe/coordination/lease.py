"""Leader election with fencing tokens, over the log.

A group's lease is the last message under ``aqe.coord.lease.<group>.*``:

* :class:`~aqe.events.coordination.LeaseAcquired` starts a **term**; the term (the
  **fencing token**) is that message's stream sequence. It is appended on condition that
  the last lease message is still the one the candidate read (``after_seq``), so of
  candidates racing for a free lease exactly one succeeds.
* :class:`~aqe.events.coordination.LeaseRenewed` extends it, conditional on the holder's
  last lease message, so a renewal can never land after somebody else's acquisition.
* :class:`~aqe.events.coordination.LeaseReleased` frees it at once.

A leader's writes elsewhere in ``AQE_COORD`` go through :meth:`LeaderElection.append_fenced`:
they are conditional on the lease filter's last sequence still being the leader's own last
lease message. Once another candidate has acquired the lease, that sequence has moved and
the **server** rejects the write (``ConcurrencyError``, raised here as
:class:`DeposedError`), however late a paused or partitioned leader wakes up.

**Safety does not depend on clocks**: at most one holder's writes are accepted after any
acquisition, because the server checks sequences, not times. **Liveness does**: a
candidate takes an unrenewed lease over once ``lease_ms`` has passed since the server
timestamp of its last lease message, judged by the candidate's own wall clock. Skewed
clocks make a takeover early (the old leader's later writes are then rejected, safely) or
late (the group waits longer for a leader), never unsafe.

Every reader derives the same lease from the same prefix of the log: the lease is a pure
function of the group's last lease message (:func:`lease_from`, :func:`fold_leases`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Final

import msgspec

from aqe.errors import ConcurrencyError, DeposedError, LogUnavailableError
from aqe.events import Envelope, Event
from aqe.events.coordination import LeaseAcquired, LeaseReleased, LeaseRenewed
from aqe.log.port import AppendResult, EventLog
from aqe.log.retry import append_conditional, while_unavailable
from aqe.log.streams import StreamSpec, load_stream_specs, stream_for_subject
from aqe.log.subjects import encode_token, subject_for

__all__ = [
    "DEFAULT_LEASE_MS",
    "LEASE_FILTER",
    "LEASE_PREFIX",
    "LeaderElection",
    "Lease",
    "fold_leases",
    "lease_filter",
    "lease_from",
    "read_lease",
]

_log = logging.getLogger("aqe.coordination.lease")

LEASE_PREFIX: Final = "aqe.coord.lease"
"""Every lease message of every group lives under ``aqe.coord.lease.<group>.<action>``."""

DEFAULT_LEASE_MS: Final = 2000

_LEASE_EVENTS = (LeaseAcquired, LeaseRenewed, LeaseReleased)
_NS_PER_MS: Final = 1_000_000
_STALE_REFUSALS: Final = 5
"""Refusals of a fenced write whose fence has not moved, tried again before giving up."""
_STALE_BACKOFF_S: Final = 0.05


def lease_filter(group: str) -> str:
    """The subject filter covering every lease message of ``group``.

    Raises:
        ValueError: for an empty group name.
    """
    return f"{LEASE_PREFIX}.{encode_token(group)}.*"


LEASE_FILTER = lease_filter
"""Alias of :func:`lease_filter`: ``LEASE_FILTER(group)``."""


class Lease(msgspec.Struct, frozen=True, kw_only=True):
    """A group's lease as the log shows it.

    Attributes:
        group: The election group.
        holder: The candidate id of the leader (of the last leader, when released).
        term: Stream sequence of the term's ``LeaseAcquired``; the fencing token.
        last_seq: Stream sequence of the group's last lease message; fenced writes are
            conditional on it.
        lease_ms: How long the lease lasts after ``renewed_at_ns`` (0 when released).
        renewed_at_ns: Server timestamp of the last lease message (the leader's own copy
            holds its local send time instead, which is earlier: a conservative bound).
        released: The holder stepped down; the lease is free.
    """

    group: str
    holder: str
    term: int
    last_seq: int
    lease_ms: int
    renewed_at_ns: int
    released: bool = False

    @property
    def fencing_token(self) -> int:
        """The term: larger for every later leader of the group."""
        return self.term

    @property
    def expires_at_ns(self) -> int:
        """Wall-clock time (ns) after which the lease may be taken over."""
        return self.renewed_at_ns + self.lease_ms * _NS_PER_MS

    def expired(self, now_ns: int) -> bool:
        """True when the lease no longer holds at wall-clock time ``now_ns``.

        A released lease is expired at once. Judging expiry needs a clock, so it only
        decides *when* candidates try to take over, never whether a write is accepted.
        """
        return self.released or now_ns >= self.expires_at_ns


def lease_from(envelope: Envelope) -> Lease | None:
    """The lease a group's last lease message describes (None for other events).

    Raises:
        EventDecodeError: the message cannot be decoded.
    """
    event = envelope.decode()
    if not isinstance(event, LeaseAcquired | LeaseRenewed | LeaseReleased):
        return None
    return Lease(
        group=event.group,
        holder=event.holder,
        # An acquisition starts a term: its own sequence is the fencing token.
        term=envelope.seq if isinstance(event, LeaseAcquired) else event.term,
        last_seq=envelope.seq,
        lease_ms=0 if isinstance(event, LeaseReleased) else event.lease_ms,
        renewed_at_ns=envelope.recorded_at_ns,
        released=isinstance(event, LeaseReleased),
    )


def fold_leases(envelopes: Iterable[Envelope]) -> dict[str, Lease]:
    """Every group's lease after a sequence of envelopes (pure; other events ignored).

    Each group's lease is decided by its last lease message alone, so this equals
    :func:`read_lease` for every group read at the end of the same prefix.
    """
    leases: dict[str, Lease] = {}
    for envelope in envelopes:
        if not envelope.subject.startswith(LEASE_PREFIX + "."):
            continue
        lease = lease_from(envelope)
        if lease is not None:
            leases[lease.group] = lease
    return leases


async def read_lease(log: EventLog, group: str) -> Lease | None:
    """The group's current lease, from its last lease message; None if it never had one.

    Raises:
        LogUnavailableError: the server cannot be reached.
        EventDecodeError: the last lease message cannot be decoded.
    """
    envelope = await log.last(lease_filter(group))
    return lease_from(envelope) if envelope is not None else None


def _msg_id(*parts: object) -> str:
    """A deterministic message id, so that a retried append is deduplicated."""
    joined = "\x1f".join(str(p) for p in parts)
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()[:32]


@functools.cache
def _default_specs() -> tuple[StreamSpec, ...]:
    return load_stream_specs()


Callback = Callable[..., object]


async def _call(callback: Callback | None, *args: object) -> None:
    if callback is None:
        return
    result = callback(*args)
    if inspect.isawaitable(result):
        await result


class LeaderElection:
    """One candidate's side of a group's election: campaign, renew, fence, release.

    Args:
        log: The event log (its ``AQE_COORD`` stream holds the lease).
        group: The election group; every candidate of a group uses the same name.
        candidate: This candidate's id (unique per process: two processes with the same
            id are still fenced from each other by term, but cannot tell whose term it is).
        lease_ms: How long a lease lasts without renewal; failover takes about this long.
        renew_every_ms: Renewal period while leading (default ``lease_ms // 3``).
        poll_ms: How often a follower re-reads the lease (default ``lease_ms // 4``); a
            follower also wakes when the lease it saw is due to expire.
        unavailable_s: How long one append is retried while the log is unavailable (a
            JetStream stream leader failover takes a few seconds) before
            :class:`LogUnavailableError` is raised. Retries reuse the same message id.
        clock: Wall clock in ns that judges expiry against server timestamps.

    Raises:
        ValueError: for an empty group or candidate, or periods that cannot work.
    """

    def __init__(
        self,
        log: EventLog,
        group: str,
        candidate: str,
        *,
        lease_ms: int = DEFAULT_LEASE_MS,
        renew_every_ms: int | None = None,
        poll_ms: int | None = None,
        unavailable_s: float = 15.0,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        if not group:
            raise ValueError("an election group needs a name")
        if not candidate:
            raise ValueError("a candidate needs an id")
        if lease_ms < 10:
            raise ValueError(f"lease_ms must be at least 10, got {lease_ms}")
        renew = renew_every_ms if renew_every_ms is not None else lease_ms // 3
        if not 0 < renew < lease_ms:
            raise ValueError(f"renew_every_ms must be in 1..{lease_ms - 1}, got {renew}")
        poll = poll_ms if poll_ms is not None else lease_ms // 4
        if poll <= 0:
            raise ValueError(f"poll_ms must be positive, got {poll}")
        self.log = log
        self.group = group
        self.candidate = candidate
        self.lease_ms = lease_ms
        self.renew_every_ms = renew
        self.poll_ms = poll
        self.unavailable_s = unavailable_s
        self._clock = clock
        self._filter = lease_filter(group)
        self._lease: Lease | None = None
        self._renewals = 0
        self._deadline = 0.0
        self._observed: Lease | None = None
        self._sent_acquisitions: set[str] = set()
        self._lost = asyncio.Event()
        self._last_deposed: DeposedError | None = None
        self._renewing = asyncio.Lock()

    # -- state -------------------------------------------------------------------------

    @property
    def filter(self) -> str:
        """The subject filter of this group's lease messages."""
        return self._filter

    @property
    def lease(self) -> Lease | None:
        """The lease this candidate holds (not yet known lost), else None."""
        return self._lease

    @property
    def is_leader(self) -> bool:
        """Holds a term and, by its own monotonic clock, the lease has not run out.

        A leader should check this before acting; but correctness rests on
        :meth:`append_fenced`, which the server rejects once the term is over.
        """
        return self._lease is not None and time.monotonic() < self._deadline

    @property
    def fencing_token(self) -> int | None:
        """The term held, or None."""
        return self._lease.term if self._lease is not None else None

    # -- appends with retries ---------------------------------------------------------

    async def _append(
        self,
        event: Event,
        *,
        event_id: str,
        expected_last_seq: int,
        headers: Mapping[str, str] | None = None,
    ) -> AppendResult:
        """Append conditional on the lease filter; retry unavailability with the same id."""
        return await while_unavailable(
            lambda: self.log.append(
                event,
                event_id=event_id,
                expected_last_seq=expected_last_seq,
                expected_subject=self._filter,
                headers=headers,
            ),
            within_s=self.unavailable_s,
        )

    async def _last(self) -> Envelope | None:
        return await while_unavailable(
            lambda: self.log.last(self._filter), within_s=self.unavailable_s
        )

    async def _append_lease_message(self, event: Event, event_id: str, expected: int) -> int:
        """Append a lease message; its sequence, recognising our own ambiguous retry
        (see :func:`aqe.log.retry.append_conditional`).

        Raises:
            ConcurrencyError: someone else's lease message came first.
        """
        result = await append_conditional(
            self.log,
            event,
            event_id=event_id,
            expected_last_seq=expected,
            expected_subject=self._filter,
            within_s=self.unavailable_s,
        )
        return result.seq

    def _depose(self, term: int, actual: int | None) -> DeposedError:
        error = DeposedError(self.group, self.candidate, term, actual)
        if self._lease is not None and self._lease.term == term:
            self._lease = None
            self._deadline = 0.0
            self._last_deposed = error
            self._lost.set()
        return error

    def _hold(self, lease: Lease, sent: float | None) -> Lease:
        """Adopt ``lease`` as ours; within one term the lease only moves forward.

        ``sent`` is the monotonic time the lease message was sent: the local deadline
        becomes ``sent + lease_ms`` (None leaves the deadline as it is).
        """
        current = self._lease
        if current is not None and current.term == lease.term and current.last_seq > lease.last_seq:
            return current
        self._lease = lease
        if sent is not None:
            self._deadline = max(self._deadline, sent + lease.lease_ms / 1000)
        self._lost.clear()
        return lease

    # -- election ----------------------------------------------------------------------

    async def try_acquire(self) -> Lease | None:
        """Take the lease if it is free (none, released or expired); None if not.

        Racing candidates append conditionally on the same last lease message, so
        exactly one of them wins; the others get None.

        Raises:
            LogUnavailableError: the log stayed unavailable for ``unavailable_s``.
        """
        last = await self._last()
        seen = lease_from(last) if last is not None else None
        self._observed = seen
        now_ns = self._clock()
        if seen is not None and not seen.expired(now_ns):
            if self._lease is not None:
                if seen.term == self._lease.term:
                    return self._lease
                self._depose(self._lease.term, seen.last_seq)
            if last is not None and last.event_id in self._sent_acquisitions:
                # Our earlier acquisition landed although its reply was lost.
                return self._adopt(seen)
            return None
        after = seen.last_seq if seen is not None else 0
        event = LeaseAcquired(
            group=self.group, holder=self.candidate, lease_ms=self.lease_ms, after_seq=after
        )
        event_id = _msg_id("lease-acquired", self.group, after, self.candidate)
        self._sent_acquisitions.add(event_id)
        sent = time.monotonic()
        sent_ns = self._clock()
        try:
            seq = await self._append_lease_message(event, event_id, after)
        except ConcurrencyError:
            return None
        self._renewals = 0
        self._deadline = 0.0
        lease = Lease(
            group=self.group,
            holder=self.candidate,
            term=seq,
            last_seq=seq,
            lease_ms=self.lease_ms,
            renewed_at_ns=sent_ns,
        )
        _log.info("lease %s: %s elected, term %d", self.group, self.candidate, seq)
        return self._hold(lease, sent)

    def _adopt(self, seen: Lease) -> Lease:
        self._renewals = 0
        self._deadline = 0.0
        sent = time.monotonic() - max(0.0, (self._clock() - seen.renewed_at_ns) / 1e9)
        return self._hold(seen, sent)

    def _poll_delay_s(self) -> float:
        """Sleep until the next poll, or until the lease seen is due to expire if sooner."""
        poll = self.poll_ms / 1000
        seen = self._observed
        if seen is None or seen.released:
            return poll
        remaining = (seen.expires_at_ns - self._clock()) / 1e9
        return max(0.001, min(poll, remaining + 0.001))

    async def campaign(self) -> Lease:
        """Poll until this candidate holds the lease; return it.

        Cancel it (``asyncio.wait_for``, a task) to give up. Unavailability of the log is
        ridden out by polling again.
        """
        while True:
            try:
                lease = await self.try_acquire()
            except LogUnavailableError as exc:
                _log.info("lease %s: log unavailable while campaigning: %s", self.group, exc)
                lease = None
            if lease is not None:
                return lease
            await asyncio.sleep(self._poll_delay_s())

    def _require_lease(self) -> Lease:
        if self._lease is None:
            term = self._last_deposed.term if self._last_deposed is not None else 0
            actual = self._last_deposed.actual if self._last_deposed is not None else None
            raise DeposedError(self.group, self.candidate, term, actual)
        return self._lease

    async def renew(self) -> Lease:
        """Extend the lease held; conditional on our last lease message.

        Raises:
            DeposedError: another candidate acquired the lease (or none is held).
            LogUnavailableError: the log stayed unavailable for ``unavailable_s``; the
                lease may still be ours (a later renewal reuses the same message id).
        """
        async with self._renewing:
            return await self._renew()

    async def _renew(self) -> Lease:
        lease = self._require_lease()
        renewal = self._renewals + 1
        event = LeaseRenewed(
            group=self.group,
            holder=self.candidate,
            term=lease.term,
            renewal=renewal,
            lease_ms=self.lease_ms,
        )
        event_id = _msg_id("lease-renewed", self.group, lease.term, renewal)
        sent = time.monotonic()
        sent_ns = self._clock()
        try:
            seq = await self._append_lease_message(event, event_id, lease.last_seq)
        except ConcurrencyError as exc:
            raise self._depose(lease.term, exc.actual) from exc
        self._renewals = max(self._renewals, renewal)
        renewed = Lease(
            group=self.group,
            holder=self.candidate,
            term=lease.term,
            last_seq=seq,
            lease_ms=self.lease_ms,
            renewed_at_ns=sent_ns,
        )
        return self._hold(renewed, sent)

    async def release(self, reason: str = "") -> bool:
        """Step down: the lease is free for others at once.

        Returns:
            True when a ``LeaseReleased`` was stored; False when no lease was held or
            it had already been taken over.

        Raises:
            LogUnavailableError: the log stayed unavailable for ``unavailable_s``.
        """
        async with self._renewing:
            return await self._release(reason)

    async def _release(self, reason: str) -> bool:
        lease = self._lease
        if lease is None:
            return False
        event = LeaseReleased(
            group=self.group, holder=self.candidate, term=lease.term, reason=reason
        )
        event_id = _msg_id("lease-released", self.group, lease.term)
        while True:
            try:
                await self._append_lease_message(event, event_id, lease.last_seq)
            except ConcurrencyError as exc:
                current = await self._own_newer(lease)
                if current is None:
                    self._depose(lease.term, exc.actual)
                    return False
                lease = current  # a renewal of ours landed meanwhile
                continue
            self._lease = None
            self._deadline = 0.0
            self._lost.set()
            return True

    async def _own_newer(self, lease: Lease, *, or_same: bool = False) -> Lease | None:
        """The group's lease if it is still our term, moved on by a renewal of ours
        (or, with ``or_same``, not moved at all)."""
        last = await self._last()
        current = lease_from(last) if last is not None else None
        if (
            current is not None
            and not current.released
            and current.term == lease.term
            and current.holder == self.candidate
            and (
                current.last_seq > lease.last_seq
                or (or_same and current.last_seq == lease.last_seq)
            )
        ):
            return current
        return None

    async def append_fenced(
        self,
        event: Event,
        *,
        event_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AppendResult:
        """Append ``event`` only while this candidate's term is the group's current one.

        The condition is checked by the server: the lease filter's last sequence must
        still be our last lease message. A renewal of ours landing meanwhile is
        recognised and the write retried; anybody else's lease message deposes us.

        Args:
            event: Any event stored in the same stream as the lease (``AQE_COORD``).
            event_id: Message id (default: the event's content hash).
            headers: Extra headers.

        Raises:
            DeposedError: the term is over (or no lease is held); nothing was stored.
            ValueError: the event belongs to another stream, where no fence can apply.
            LogUnavailableError: the log stayed unavailable for ``unavailable_s``.
        """
        lease = self._require_lease()
        self._check_same_stream(event)
        msg_id = event_id or event.default_id()
        stale_refusals = 0
        while True:
            try:
                return await self._append(
                    event, event_id=msg_id, expected_last_seq=lease.last_seq, headers=headers
                )
            except ConcurrencyError as exc:
                current = await self._own_newer(lease, or_same=True)
                if current is None:
                    raise self._depose(lease.term, exc.actual) from exc
                if current.last_seq == lease.last_seq:
                    # The fence has not moved, yet the write was refused: the answer came
                    # from a replica that still believed it led the stream (seen right
                    # after a paused leader resumes) while the real leader may have stored
                    # the write. Ask again with the same id: the leader either stores it
                    # or reports the copy it already stored as a duplicate.
                    stale_refusals += 1
                    if stale_refusals > _STALE_REFUSALS:
                        raise self._depose(lease.term, exc.actual) from exc
                    await asyncio.sleep(_STALE_BACKOFF_S * stale_refusals)
                    continue
                # One of our renewals moved the fence; the term is still ours.
                lease = self._hold(current, None) if self._lease is not None else current

    def _check_same_stream(self, event: Event) -> None:
        specs = _default_specs()
        own = stream_for_subject(specs, f"{LEASE_PREFIX}.{encode_token(self.group)}.acquired")
        theirs = stream_for_subject(specs, subject_for(event))
        if own is not None and theirs is not None and own.name != theirs.name:
            raise ValueError(
                f"{type(event).__name__} is stored in stream {theirs.name}, not {own.name} "
                f"where the lease of group {self.group!r} lives; a fence only applies "
                "within one stream"
            )

    # -- the whole loop ------------------------------------------------------------------

    async def run(
        self,
        stop: asyncio.Event,
        on_elected: Callback | None = None,
        on_deposed: Callback | None = None,
    ) -> None:
        """Campaign, keep the lease renewed, campaign again after deposition, until ``stop``.

        Args:
            stop: Set it to step down (the lease is released) and return.
            on_elected: Called (and awaited if it returns an awaitable) with the
                :class:`Lease` each time this candidate becomes leader.
            on_deposed: Called with the :class:`DeposedError` each time it loses a term.

        Raises:
            LogUnavailableError: only from the final release.
        """
        while not stop.is_set():
            lease = await _until(self.campaign(), stop)
            if lease is None:
                break
            await _call(on_elected, lease)
            deposed = await self._keep(stop)
            if deposed is not None:
                await _call(on_deposed, deposed)
        if self._lease is not None:
            await self.release("stopped")

    async def _keep(self, stop: asyncio.Event) -> DeposedError | None:
        """Renew every ``renew_every_ms`` until deposed (returned) or stopped (None)."""
        period = self.renew_every_ms / 1000
        while True:
            await _wait_any(period, stop, self._lost)
            if stop.is_set():
                return None
            if self._lease is None:
                return self._last_deposed or DeposedError(self.group, self.candidate, 0)
            try:
                await self.renew()
            except DeposedError as exc:
                return exc
            except LogUnavailableError as exc:
                # The lease may still be ours; the next renewal reuses the same id.
                _log.info("lease %s: renewal failed: %s", self.group, exc)


async def _wait_any(seconds: float, *events: asyncio.Event) -> None:
    """Wait until one of ``events`` is set or ``seconds`` pass."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        for waiter in waiters:
            with contextlib.suppress(asyncio.CancelledError):
                await waiter


async def _until(work: Awaitable[Lease], stop: asyncio.Event) -> Lease | None:
    """Run ``work`` until it returns (its result) or ``stop`` is set (None)."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stopper
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None
