"""Event types, the envelope, the registry with its single decoder, and upcasting.

This package imports nothing else of aqe except ``aqe.errors``, and no client library.
"""

from aqe.events._base import TAG_FIELD, Event, TagParts, parse_tag
from aqe.events._catalog import REGISTRY
from aqe.events._envelope import ENVELOPE_VERSION, Envelope, Headers
from aqe.events._registry import EventRegistry, Upcaster
from aqe.events.agents import AgentHeartbeat, AgentRegistered, AgentStatus
from aqe.events.learning import ExperienceRecorded, ExperienceStep, PolicyTrained
from aqe.events.patterns import PatternAdded, PatternDeprecated, PatternUpdated, PatternUsed
from aqe.events.testruns import (
    Outcome,
    TestCaseExecuted,
    TestCaseQuarantined,
    TestCaseUnquarantined,
    TestRunFinished,
    TestRunStarted,
)

__all__ = [
    "ENVELOPE_VERSION",
    "REGISTRY",
    "TAG_FIELD",
    "AgentHeartbeat",
    "AgentRegistered",
    "AgentStatus",
    "Envelope",
    "Event",
    "EventRegistry",
    "ExperienceRecorded",
    "ExperienceStep",
    "Headers",
    "Outcome",
    "PatternAdded",
    "PatternDeprecated",
    "PatternUpdated",
    "PatternUsed",
    "PolicyTrained",
    "TagParts",
    "TestCaseExecuted",
    "TestCaseQuarantined",
    "TestCaseUnquarantined",
    "TestRunFinished",
    "TestRunStarted",
    "Upcaster",
    "parse_tag",
]
