"""Server refusals delivered at once to the operation they concern.

nats-server answers a publish or subscription the user may not make with
``-ERR 'Permissions Violation for Publish to "<subject>"'`` and keeps the
connection; nats-py hands that line to the connection's error callback only, so the
request that caused it waits for its timeout (5-10 s) and says "timed out". A server
error that closes the connection ("maximum control line exceeded") likewise leaves
pending requests to time out.

:func:`refusals_for` hooks a connection's error and closed callbacks once. An
operation runs inside :meth:`Refusals.guard`, naming what it touches; a refusal that
concerns it cancels the operation's task, and the guard turns that cancellation into
:class:`~aqe.errors.PermissionDeniedError` or :class:`~aqe.errors.LimitExceededError`
naming the subject and the server's words. Nothing here runs unless the server
refuses something, and guarding costs a set insertion per operation.
"""

from __future__ import annotations

import asyncio
import re
import weakref
from collections.abc import Callable, Collection
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import nats.errors

from aqe.errors import LimitExceededError, LogError, LogUnavailableError, PermissionDeniedError

if TYPE_CHECKING:
    from nats.aio.client import Client

__all__ = ["API_PREFIX", "Refusal", "Refusals", "parse_refusal", "refusals_for"]

API_PREFIX: Final = "$js."
"""Lower-case prefix of JetStream API subjects (stream info, consumer create, get)."""

# nats-py lower-cases the server's -ERR text before it reaches the callback.
_VIOLATION: Final = re.compile(
    r'permissions violation for (publish|subscription) (?:with reply of |to )"([^"]*)"'
)
_INBOX_PREFIX: Final = "_inbox."
_LIMIT_WORDS: Final = ("maximum", "exceeded", "too large", "limit")

_HUBS: weakref.WeakKeyDictionary[Any, Refusals] = weakref.WeakKeyDictionary()


class Refusal(NamedTuple):
    """One refusal: ``operation`` is ``publish``, ``subscribe`` or ``connection``."""

    operation: str
    subject: str
    """As the server named it, lower-cased by nats-py; empty for ``connection``."""
    detail: str


def parse_refusal(message: str) -> Refusal | None:
    """The refusal in an error callback's message, if it is a permissions violation."""
    text = message.removeprefix("nats: ").strip()
    match = _VIOLATION.search(text)
    if match is None:
        return None
    operation = "publish" if match.group(1) == "publish" else "subscribe"
    return Refusal(operation, match.group(2), text)


def _closing_refusal(error: BaseException | None) -> Refusal | None:
    """The server error that closed a connection (nats-py's generic ``Error``), if any."""
    if type(error) is not nats.errors.Error:
        return None
    text = str(error).removeprefix("nats: ").strip()
    if not text or parse_refusal(text) is not None:
        return None
    return Refusal("connection", "", text)


class _Guard:
    """One operation waiting on the server; see :meth:`Refusals.guard`."""

    def __init__(
        self,
        hub: Refusals,
        where: str,
        subjects: Callable[[], Collection[str]] | None,
        api: bool,
        wake: Callable[[], None] | None,
    ) -> None:
        self._hub = hub
        self._where = where
        self._subjects = subjects
        self._api = api
        self._wake = wake
        self._task: asyncio.Task[Any] | None = None
        self._cancelled = False
        self.refusal: Refusal | None = None

    def concerns(self, refusal: Refusal) -> bool:
        if refusal.operation == "connection":
            return True  # closed by the server: no answer can come any more
        if refusal.operation == "subscribe":
            # A reply inbox or deliver subject refused: no answer can arrive.
            return refusal.subject.startswith(_INBOX_PREFIX)
        if self._api and refusal.subject.startswith(API_PREFIX):
            return True
        if self._subjects is None:
            return False
        return refusal.subject in {s.lower() for s in self._subjects()}

    def offer(self, refusal: Refusal) -> None:
        if self.refusal is not None or not self.concerns(refusal):
            return
        self.refusal = refusal
        if self._wake is not None:
            self._wake()
        elif self._task is not None and not self._task.done():
            self._cancelled = self._task.cancel()

    def error(self) -> LogError:
        """The typed error for the refusal this guard received."""
        refusal = self.refusal
        if refusal is None:  # pragma: no cover - only called after a refusal
            raise RuntimeError("no refusal")
        if refusal.operation == "connection":
            if any(word in refusal.detail for word in _LIMIT_WORDS):
                return LimitExceededError(self._where, None, refusal.detail)
            return LogUnavailableError(
                f"the server closed the connection ({self._where}): {refusal.detail}"
            )
        return PermissionDeniedError(refusal.subject, refusal.operation, refusal.detail)

    def raise_if_refused(self) -> None:
        """Raise the refusal's error if one arrived (for operations that wait in loops)."""
        if self.refusal is not None:
            raise self.error()

    def __enter__(self) -> _Guard:
        if self._wake is None:
            self._task = asyncio.current_task()
        self._hub._guards.add(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._hub._guards.discard(self)
        if not self._cancelled or self._task is None:
            return
        # Ours is the cancellation (or whatever the client made of it): report the
        # refusal instead, unless somebody else cancelled the task too.
        if self._task.uncancel() > 0 and exc_type is asyncio.CancelledError:
            return
        raise self.error() from exc


class Refusals:
    """The refusals of one connection, offered to the operations guarded on it."""

    def __init__(self) -> None:
        self._guards: set[_Guard] = set()

    def guard(
        self,
        where: str,
        *,
        subjects: Callable[[], Collection[str]] | None = None,
        api: bool = False,
        wake: Callable[[], None] | None = None,
    ) -> _Guard:
        """A context manager for one operation, on the task that runs it.

        Args:
            where: What the operation touches, for the error message.
            subjects: The subjects it publishes to (called only when a refusal
                arrives, so a large batch costs nothing up front).
            api: Whether it calls the JetStream API (``$JS.API.>``).
            wake: For an operation that waits in a loop across yields: called instead
                of cancelling the task; the loop then calls ``raise_if_refused``.
        """
        return _Guard(self, where, subjects, api, wake)

    def offer(self, refusal: Refusal) -> None:
        """Hand a refusal to every guarded operation it concerns."""
        for guard in list(self._guards):
            guard.offer(refusal)


def refusals_for(nc: Client) -> Refusals:
    """The connection's refusals, hooking its error and closed callbacks on first use."""
    hub = _HUBS.get(nc)
    if hub is not None:
        return hub
    hub = Refusals()
    _HUBS[nc] = hub
    # nats-py calls these attributes at the time of each event (2.x); wrapping them
    # keeps whatever callbacks the connection was opened with.
    hooked = hasattr(nc, "_error_cb") and hasattr(nc, "_closed_cb")
    on_error = getattr(nc, "_error_cb", None)
    on_closed = getattr(nc, "_closed_cb", None)

    async def error_cb(exc: Exception) -> None:
        refusal = parse_refusal(str(exc))
        if refusal is not None:
            hub.offer(refusal)
        if on_error is not None:
            await on_error(exc)

    async def closed_cb() -> None:
        refusal = _closing_refusal(nc.last_error)
        if refusal is not None:
            hub.offer(refusal)
        if on_closed is not None:
            await on_closed()

    if hooked:
        nc._error_cb = error_cb
        nc._closed_cb = closed_cb
    return hub
