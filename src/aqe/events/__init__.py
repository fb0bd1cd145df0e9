"""Event types, the envelope, the registry with its single decoder, and upcasting.

This package imports nothing else of aqe except ``aqe.errors``, and no client library.
"""

from aqe.events._base import TAG_FIELD, Event, TagParts, parse_tag
from aqe.events._catalog import REGISTRY
from aqe.events._envelope import ENVELOPE_VERSION, Envelope, Headers
from aqe.events._registry import EventRegistry, Upcaster
from aqe.events.agents import (
    AgentHeartbeat,
    AgentRegistered,
    AgentRetired,
    AgentStatus,
    AgentSuspected,
)
from aqe.events.bridge import BridgeApplied
from aqe.events.coordination import (
    LeaderCheckpointed,
    LeaseAcquired,
    LeaseReleased,
    LeaseRenewed,
    ProposalOpened,
    TaskAbandoned,
    TaskClaimed,
    TaskCompleted,
    TaskSubmitted,
    Topology,
    TopologySelected,
    VoteCast,
    Voter,
    VotingMode,
)
from aqe.events.learning import ExperienceRecorded, ExperienceStep, PolicyTrained
from aqe.events.patterns import PatternAdded, PatternDeprecated, PatternUpdated, PatternUsed
from aqe.events.runners import TaskOutcome, TaskParked, TaskQueued
from aqe.events.testruns import (
    Outcome,
    TestCaseExecuted,
    TestCaseQuarantined,
    TestCaseUnquarantined,
    TestRunFinished,
    TestRunSelected,
    TestRunStarted,
)
from aqe.events.workflows import (
    StepStatus,
    WorkflowCancelled,
    WorkflowDecided,
    WorkflowFinished,
    WorkflowStarted,
    WorkflowStatus,
    WorkflowStepFinished,
    WorkflowStepScheduled,
    WorkflowTimerFired,
    WorkflowTimerSet,
)

__all__ = [
    "ENVELOPE_VERSION",
    "REGISTRY",
    "TAG_FIELD",
    "AgentHeartbeat",
    "AgentRegistered",
    "AgentRetired",
    "AgentStatus",
    "AgentSuspected",
    "BridgeApplied",
    "Envelope",
    "Event",
    "EventRegistry",
    "ExperienceRecorded",
    "ExperienceStep",
    "Headers",
    "LeaderCheckpointed",
    "LeaseAcquired",
    "LeaseReleased",
    "LeaseRenewed",
    "Outcome",
    "PatternAdded",
    "PatternDeprecated",
    "PatternUpdated",
    "PatternUsed",
    "PolicyTrained",
    "ProposalOpened",
    "StepStatus",
    "TagParts",
    "TaskAbandoned",
    "TaskClaimed",
    "TaskCompleted",
    "TaskOutcome",
    "TaskParked",
    "TaskQueued",
    "TaskSubmitted",
    "TestCaseExecuted",
    "TestCaseQuarantined",
    "TestCaseUnquarantined",
    "TestRunFinished",
    "TestRunSelected",
    "TestRunStarted",
    "Topology",
    "TopologySelected",
    "Upcaster",
    "VoteCast",
    "Voter",
    "VotingMode",
    "WorkflowCancelled",
    "WorkflowDecided",
    "WorkflowFinished",
    "WorkflowStarted",
    "WorkflowStatus",
    "WorkflowStepFinished",
    "WorkflowStepScheduled",
    "WorkflowTimerFired",
    "WorkflowTimerSet",
    "parse_tag",
]
