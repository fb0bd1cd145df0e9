"""Runner agents: pull tasks from capability work queues, run them in sandboxes, record.

See :mod:`aqe.runners.tasks` for what a runner task is and how it is queued, and
:mod:`aqe.runners.agent` for what a runner does with one delivery.
"""

from aqe.runners.agent import (
    DEAD_LETTER_PROJECTION,
    RunnerAgent,
    RunnerConfig,
    RunnerStats,
    read_task,
)
from aqe.runners.tasks import (
    NOOP,
    RunnerTask,
    check_capability,
    ensure_queue,
    queue_name,
    queue_subject,
    runner_payload,
    runner_task,
    submit_runner_task,
)

__all__ = [
    "DEAD_LETTER_PROJECTION",
    "NOOP",
    "RunnerAgent",
    "RunnerConfig",
    "RunnerStats",
    "RunnerTask",
    "check_capability",
    "ensure_queue",
    "queue_name",
    "queue_subject",
    "read_task",
    "runner_payload",
    "runner_task",
    "submit_runner_task",
]
