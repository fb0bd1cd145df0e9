"""The event log: append / append_batch / read over JetStream, and subject encoding.

``aqe.log`` itself imports no client library; the JetStream adapter lives in
:mod:`aqe.log.jetstream` and is imported only by code that needs a server; so is
:mod:`aqe.log.objectstore`, the artefacts (models, policies) kept beside the log.
"""

from aqe.log.memory import InMemoryEventLog
from aqe.log.port import MAX_BATCH, AppendResult, BatchResult, EventLog, NewEvent
from aqe.log.streams import StreamSpec, load_stream_specs, stream_for_subject
from aqe.log.subjects import decode_token, encode_token, parse_subject, subject_for

__all__ = [
    "MAX_BATCH",
    "AppendResult",
    "BatchResult",
    "EventLog",
    "InMemoryEventLog",
    "NewEvent",
    "StreamSpec",
    "decode_token",
    "encode_token",
    "load_stream_specs",
    "parse_subject",
    "stream_for_subject",
    "subject_for",
]
