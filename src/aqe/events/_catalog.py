"""The default registry holding every event type aqe ships."""

from __future__ import annotations

from aqe.events._registry import EventRegistry
from aqe.events.agents import AgentHeartbeat, AgentRegistered, AgentRetired, AgentSuspected
from aqe.events.audit import StreamSealed
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
    TopologySelected,
    VoteCast,
)
from aqe.events.coverage import CoverageRecorded
from aqe.events.flakemodel import FlakeModelTrained, FlakinessPredicted
from aqe.events.learning import ExperienceRecorded, PolicyTrained
from aqe.events.patterns import PatternAdded, PatternDeprecated, PatternUpdated, PatternUsed
from aqe.events.perf import (
    BenchmarkMeasured,
    PerfAlertDelivered,
    PerfAlertRaised,
    PerfAlertResolved,
    PerfChangeDetected,
    PerfChangeVerified,
)
from aqe.events.runners import TaskParked, TaskQueued
from aqe.events.testgen import GeneratedTestKept, GeneratedTestRejected, GenerationMeasured
from aqe.events.testruns import (
    TestCaseExecuted,
    TestCaseQuarantined,
    TestCaseUnquarantined,
    TestRunFinished,
    TestRunSelected,
    TestRunStarted,
)
from aqe.events.workflows import (
    WorkflowCancelled,
    WorkflowDecided,
    WorkflowFinished,
    WorkflowStarted,
    WorkflowStepFinished,
    WorkflowStepScheduled,
    WorkflowTimerFired,
    WorkflowTimerSet,
)

__all__ = ["REGISTRY"]

REGISTRY = EventRegistry(
    [
        TestRunStarted,
        TestRunFinished,
        TestRunSelected,
        TestCaseExecuted,
        TestCaseQuarantined,
        TestCaseUnquarantined,
        PatternAdded,
        PatternUpdated,
        PatternDeprecated,
        PatternUsed,
        ExperienceRecorded,
        PolicyTrained,
        FlakeModelTrained,
        FlakinessPredicted,
        AgentRegistered,
        AgentHeartbeat,
        AgentRetired,
        AgentSuspected,
        LeaseAcquired,
        LeaseRenewed,
        LeaseReleased,
        LeaderCheckpointed,
        TaskSubmitted,
        TaskClaimed,
        TaskCompleted,
        TaskAbandoned,
        TopologySelected,
        ProposalOpened,
        VoteCast,
        BridgeApplied,
        TaskQueued,
        TaskParked,
        WorkflowStarted,
        WorkflowStepScheduled,
        WorkflowStepFinished,
        WorkflowTimerSet,
        WorkflowTimerFired,
        WorkflowDecided,
        WorkflowFinished,
        WorkflowCancelled,
        CoverageRecorded,
        BenchmarkMeasured,
        PerfChangeDetected,
        PerfChangeVerified,
        PerfAlertRaised,
        PerfAlertResolved,
        PerfAlertDelivered,
        StreamSealed,
        GeneratedTestKept,
        GeneratedTestRejected,
        GenerationMeasured,
    ]
)
"""Every event type aqe can decode; later capabilities register theirs here."""
