"""The one exception tree of aqe.

Every error aqe raises on purpose derives from :class:`AqeError`; the CLI catches
``AqeError`` once at its edge, prints the message and exits 2. Foreign exceptions
(nats-py, OS errors) are translated where they enter aqe, ``raise ... from exc``,
so no client type crosses a port.

::

    AqeError
    ├── ConfigError (ValueError)            bad settings, missing binary, bad stream file
    │   └── BridgeConfigError               a bridge config file that cannot be used (file, field)
    ├── EventError (ValueError)
    │   ├── UnknownEventTypeError           a type tag nobody registered
    │   ├── EventValidationError            a payload that does not match its schema
    │   └── EventDecodeError                bytes in the log that cannot become an event
    ├── LogError
    │   ├── LogUnavailableError (TimeoutError)   no server, no stream, timeouts
    │   │   └── MessageInProcessError       the server is still storing this message id (10158)
    │   ├── PermissionDeniedError (PermissionError)  the server refused this user the subject
    │   ├── LimitExceededError              a server or stream limit refused the message
    │   ├── ConcurrencyError                wrong last subject sequence (server error 10071)
    │   ├── PayloadTooLargeError (ValueError)    larger than the server's max_payload
    │   ├── BatchRejectedError              an atomic batch the server refused as a whole
    │   └── EventNotFoundError (LookupError)     no message at that sequence
    ├── ServerError                         the embedded nats-server would not start / stop
    ├── ProjectionError
    │   └── UnknownProjectionError (LookupError)
    ├── ReportError (ValueError)            a test report that cannot be read (file, line, why)
    │   └── DataSetError                    a line of a test-code file that cannot be read
    ├── IngestError                         a read report whose run was not stored (files, why)
    ├── NoHistoryError (LookupError)        a question about test runs the log does not hold yet
    ├── SkillError (ValueError)             a skill or skill library that is not valid (file, line)
    ├── AuditError                          no seal, a bad proof file, a bad export
    ├── SandboxError                        a sandbox could not be prepared (source, setup)
    │   └── SandboxUnavailableError         a sandbox backend cannot run on this machine
    ├── CommandRejectedError                a command handler decided "no"
    ├── DeposedError                        this candidate no longer (or never) held the lease
    └── BridgeError                         a QUIC bridge link or its configuration failed
        ├── LinkDownError (ConnectionError) no connection to the peer
        ├── StreamClosedError               a bridge stream ended (peer, reset, bad input)
        └── FrameError (ValueError)         bytes on a stream that are not a valid frame
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "AqeError",
    "AuditError",
    "BatchRejectedError",
    "BridgeConfigError",
    "BridgeError",
    "CommandRejectedError",
    "ConcurrencyError",
    "ConfigError",
    "DataSetError",
    "DeposedError",
    "EventDecodeError",
    "EventError",
    "EventNotFoundError",
    "EventValidationError",
    "FrameError",
    "IngestError",
    "LimitExceededError",
    "LinkDownError",
    "LogError",
    "LogUnavailableError",
    "MessageInProcessError",
    "NoHistoryError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "ProjectionError",
    "ReportError",
    "SandboxError",
    "SandboxUnavailableError",
    "ServerError",
    "SkillError",
    "StreamClosedError",
    "UnknownEventTypeError",
    "UnknownProjectionError",
]


class AqeError(Exception):
    """Base of every error aqe raises on purpose."""


class ConfigError(AqeError, ValueError):
    """Settings, files or the environment are not usable as given."""


class BridgeConfigError(ConfigError):
    """A bridge config file that cannot be used; names the file and the field.

    Attributes:
        path: The config file, as given.
        field: The field, e.g. ``peers[1].address`` (empty for the file as a whole).
        reason: What is wrong with it.
    """

    def __init__(self, path: Path, field: str, reason: str) -> None:
        where = f"{path}: {field}: " if field else f"{path}: "
        super().__init__(where + reason)
        self.path = path
        self.field = field
        self.reason = reason


class EventError(AqeError, ValueError):
    """An event could not be built, validated or decoded."""


class UnknownEventTypeError(EventError):
    """A type tag that no registered event (nor upcaster) knows."""

    def __init__(self, event_type: str, known: tuple[str, ...] = ()) -> None:
        self.event_type = event_type
        self.known = known
        hint = f"; known types: {', '.join(known)}" if known else ""
        super().__init__(f"unknown event type {event_type!r}{hint}")


class EventValidationError(EventError):
    """A payload that does not match its event's schema."""

    def __init__(self, event_type: str, detail: str) -> None:
        self.event_type = event_type
        self.detail = detail
        super().__init__(f"invalid {event_type} payload: {detail}")


class EventDecodeError(EventError):
    """Bytes stored in the log that cannot be decoded into an event."""

    def __init__(self, subject: str, seq: int, detail: str) -> None:
        self.subject = subject
        self.seq = seq
        self.detail = detail
        super().__init__(f"cannot decode message {seq} on {subject}: {detail}")


class LogError(AqeError):
    """The event log refused or failed an operation."""


class LogUnavailableError(LogError, TimeoutError):
    """The server (or a stream on it) cannot be reached."""


class MessageInProcessError(LogUnavailableError):
    """The server is still storing an earlier publish of the same message id (error 10158).

    Seen on a replicated stream whose leader cannot reach its peers: the first try is
    neither stored nor refused yet. Retrying with the same id settles it as stored or
    as a duplicate, so it is retried like any unavailability.
    """

    def __init__(self, subject: str, code: int | None, detail: str) -> None:
        self.subject = subject
        self.code = code
        self.detail = detail
        super().__init__(f"{subject}: the server is still processing this message ({detail})")


class PermissionDeniedError(LogError, PermissionError):
    """The server refused this connection's user an operation on a subject."""

    def __init__(self, subject: str, operation: str, detail: str) -> None:
        self.subject = subject
        self.operation = operation
        self.detail = detail
        super().__init__(
            f"permission denied: the server refused {operation} on {subject} ({detail})"
        )


class LimitExceededError(LogError):
    """A server, account or stream limit refused the operation (size, count, resources)."""

    def __init__(self, subject: str, code: int | None, detail: str) -> None:
        self.subject = subject
        self.code = code
        self.detail = detail
        shown = f"server error {code}: " if code is not None else ""
        super().__init__(f"{subject}: limit exceeded: {shown}{detail}")


class ConcurrencyError(LogError):
    """Another writer appended to the aggregate first (server error 10071)."""

    def __init__(self, subject: str, expected: int, actual: int | None) -> None:
        self.subject = subject
        self.expected = expected
        self.actual = actual
        shown = "unknown" if actual is None else str(actual)
        super().__init__(
            f"concurrent write on {subject}: expected last sequence {expected}, found {shown}"
        )


class PayloadTooLargeError(LogError, ValueError):
    """A message larger than the server's max_payload."""

    def __init__(self, subject: str, size: int, limit: int) -> None:
        self.subject = subject
        self.size = size
        self.limit = limit
        super().__init__(
            f"event for {subject} is {size} bytes, over the server's max_payload of {limit} bytes"
        )


class BatchRejectedError(LogError):
    """An atomic batch the server refused as a whole; nothing of it was stored."""

    def __init__(self, batch_id: str, code: int | None, detail: str) -> None:
        self.batch_id = batch_id
        self.code = code
        self.detail = detail
        super().__init__(f"atomic batch {batch_id} rejected (code {code}): {detail}")


class EventNotFoundError(LogError, LookupError):
    """No message at the requested stream sequence."""

    def __init__(self, stream: str, seq: int) -> None:
        self.stream = stream
        self.seq = seq
        super().__init__(f"no message with sequence {seq} in stream {stream}")


class ServerError(AqeError):
    """The embedded nats-server could not be started, checked or stopped."""


class ProjectionError(AqeError):
    """A projection could not be run, rebuilt or verified."""


class UnknownProjectionError(ProjectionError, LookupError):
    """A projection name nobody registered."""

    def __init__(self, name: str, known: tuple[str, ...]) -> None:
        self.name = name
        self.known = known
        super().__init__(f"unknown projection {name!r}; known: {', '.join(known) or 'none'}")


class ReportError(AqeError, ValueError):
    """A test report (JUnit XML, CTRF, pytest-json, spool) that cannot be ingested.

    The message names the file, the line when known, and the reason, e.g.
    ``report.xml:12: mismatched tag``.
    """

    def __init__(self, path: str, reason: str, line: int | None = None) -> None:
        self.path = path
        self.reason = reason
        self.line = line
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {reason}")


class DataSetError(ReportError):
    """A line of a test-code file that cannot be read (file, line, field)."""


class IngestError(AqeError):
    """Reports were read, but appending their run (or folding it) failed.

    The message names the files and says what to do: the run is not visible until
    its ``TestRunFinished`` is stored, and ingesting the same files again completes it
    without duplicating anything.
    """

    def __init__(self, paths: tuple[str, ...], reason: str) -> None:
        self.paths = paths
        self.reason = reason
        shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        super().__init__(f"{shown}: {reason}")


class NoHistoryError(AqeError, LookupError):
    """The log holds no test runs yet, and the question needs some."""


class SkillError(AqeError, ValueError):
    """A skill or the skill library that cannot be read or is not valid.

    Attributes:
        reason: The message without the file and line.
        path: The file (or folder) at fault, when one is.
        line: Its 1-based line, when known.
    """

    def __init__(self, message: str, path: Path | None = None, line: int | None = None) -> None:
        where = "" if path is None else f"{path}:{line}: " if line else f"{path}: "
        super().__init__(where + message)
        self.reason = message
        self.path = path
        self.line = line


class AuditError(AqeError):
    """An audit operation could not be carried out (no seal, bad proof file, bad export)."""


class SandboxError(AqeError):
    """A sandbox's working copy, setup or backend could not be prepared."""


class SandboxUnavailableError(SandboxError):
    """A sandbox backend cannot run on this machine; the message says why and what to use."""

    def __init__(self, backend: str, reason: str) -> None:
        self.backend = backend
        self.reason = reason
        super().__init__(f"sandbox backend {backend!r} is unavailable: {reason}")


class CommandRejectedError(AqeError):
    """A command handler's decision: the command is not allowed in this state."""


class DeposedError(AqeError):
    """This candidate does not (or no longer) hold the group's lease.

    Raised when the server rejects a renewal or a fenced write because another candidate
    acquired the lease after ``term`` began, and when a leader-only call is made by a
    candidate that holds no lease.

    Attributes:
        group: The election group.
        holder: The candidate that lost (or never had) the lease.
        term: The term it held (0: it held none).
        actual: The lease filter's last sequence the server reported, when known.
    """

    def __init__(self, group: str, holder: str, term: int, actual: int | None = None) -> None:
        self.group = group
        self.holder = holder
        self.term = term
        self.actual = actual
        if term == 0:
            message = f"{holder!r} does not hold the lease of group {group!r}"
        else:
            now = "unknown" if actual is None else str(actual)
            message = (
                f"{holder!r} was deposed as leader of group {group!r}: term {term} has "
                f"ended (the lease's last sequence is now {now})"
            )
        super().__init__(message)


class BridgeError(AqeError):
    """A QUIC bridge link or its configuration failed."""


class LinkDownError(BridgeError, ConnectionError):
    """No connection to the peer (refused, timed out, failed verification, or lost)."""


class StreamClosedError(BridgeError):
    """A bridge stream ended: closed by the peer, reset, malformed input, or link lost."""

    def __init__(self, reason: str, *, code: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class FrameError(BridgeError, ValueError):
    """Bytes on a stream that are not a valid frame."""
