"""The envelope: what the log knows about a stored event besides the event itself."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from aqe.events._base import Event

__all__ = ["ENVELOPE_VERSION", "Envelope", "Headers"]

ENVELOPE_VERSION = "1"
"""Value of the ``Aqe-Envelope`` header; bumped only if the header contract changes."""


class Headers:
    """Header names aqe writes on every message (see schemas/README.md)."""

    MSG_ID = "Nats-Msg-Id"
    EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
    # The subject filter (wildcards allowed) the expected sequence is checked against,
    # instead of the message's own subject (nats-server >= 2.11).
    EXPECTED_LAST_SUBJECT_SEQ_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"
    EVENT_TYPE = "Aqe-Event-Type"
    ENVELOPE = "Aqe-Envelope"
    CONTENT_TYPE = "Content-Type"
    CORRELATION_ID = "Aqe-Correlation-Id"
    CAUSATION_ID = "Aqe-Causation-Id"
    ORIGIN = "Aqe-Origin"
    # Set by the QUIC bridge on an event it copied from another cluster: the cluster,
    # stream and sequence the event was first stored at, and the event's own id (the
    # copy's Nats-Msg-Id is built from the origin coordinates instead).
    ORIGIN_CLUSTER = "Aqe-Origin-Cluster"
    ORIGIN_STREAM = "Aqe-Origin-Stream"
    ORIGIN_SEQ = "Aqe-Origin-Seq"
    EVENT_ID = "Aqe-Event-Id"
    # Dead letters carry where the original message came from and why it was parked.
    DLQ_STREAM = "Aqe-Dlq-Stream"
    DLQ_SEQ = "Aqe-Dlq-Seq"
    DLQ_SUBJECT = "Aqe-Dlq-Subject"
    DLQ_REASON = "Aqe-Dlq-Reason"
    DLQ_PROJECTION = "Aqe-Dlq-Projection"
    # How much of the original a dead letter kept (full, truncated, reference), the
    # original payload's size and SHA-256 digest, and its Nats-Msg-Id.
    DLQ_COPY = "Aqe-Dlq-Copy"
    DLQ_SIZE = "Aqe-Dlq-Size"
    DLQ_DIGEST = "Aqe-Dlq-Digest"
    DLQ_MSG_ID = "Aqe-Dlq-Msg-Id"


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    """One stored message: log metadata plus the undecoded event bytes.

    Stream, subject, sequence, time and id come from JetStream, not from the payload.
    Decoding is left to the reader (``registry.decode(env.data)``) so that a corrupt
    message can be parked on a dead-letter subject instead of failing the read.
    """

    stream: str
    seq: int
    subject: str
    event_id: str
    event_type: str
    recorded_at_ns: int
    data: bytes
    headers: Mapping[str, str] = msgspec.field(default_factory=dict)

    def decode(self) -> Event:
        """Decode the payload with the default registry.

        Raises:
            EventDecodeError: the bytes are not a known, valid event.
        """
        from aqe.events._catalog import REGISTRY

        return REGISTRY.decode(self.data, subject=self.subject, seq=self.seq)
