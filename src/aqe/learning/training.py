"""Training, recording and using prioritisation policies on a history.

The history comes from the log (``AQE_TESTS``: every run's test results, folded into
cycles by :func:`aqe.learning.features.from_events`) or from a data set file
(IOF/ROL). Training is the online evaluation itself: rank each cycle from what came
before, learn from its verdicts, never peek; the experience of every cycle can be
recorded as ``learning.experience.recorded.v1`` events.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from aqe.errors import ConfigError
from aqe.events import REGISTRY, Event, ExperienceRecorded, ExperienceStep, PolicyTrained
from aqe.learning.base import FEATURE_VERSION, Policy, Transition
from aqe.learning.evaluate import EvalReport, evaluate_online
from aqe.learning.features import (
    Cycle,
    HistoryTracker,
    cycles_from_iofrol,
    cycles_from_iofrol_rows,
    from_events,
)
from aqe.learning.policies import PolicyMeta, hyperparameters_as_strings
from aqe.learning.registry import make_policy
from aqe.log.port import EventLog

__all__ = [
    "Ranked",
    "TrainResult",
    "experience_event",
    "history_from_log",
    "load_cycles",
    "policy_id_for",
    "rank_pending",
    "read_test_events",
    "subset",
    "train_offline",
    "train_policy",
    "trained_event",
]

_DIGITS = 6


class TrainResult(msgspec.Struct, frozen=True, kw_only=True):
    """A trained policy's report and metadata (the policy object travels beside it)."""

    report: EvalReport
    meta: PolicyMeta


class Ranked(msgspec.Struct, frozen=True, kw_only=True):
    """One test of a pending run, in the order to run it."""

    position: int
    test_id: str
    priority: float
    expected_duration_s: float


async def read_test_events(log: EventLog, stream: str = "AQE_TESTS") -> tuple[list[Event], int]:
    """Every decodable event of the tests stream, in log order, and the last sequence read."""
    events = []
    last = 0
    async for env in log.read(stream):
        last = env.seq
        try:
            events.append(REGISTRY.decode(env.data, subject=env.subject, seq=env.seq))
        except ValueError:
            continue  # undecodable events are the dead-letter path's business
    return events, last


async def history_from_log(log: EventLog, stream: str = "AQE_TESTS") -> tuple[list[Cycle], int]:
    """Cycles from every run in the log, oldest first, and the last sequence read."""
    events, last = await read_test_events(log, stream)
    return from_events(events), last


def load_cycles(dataset: Path, protocol: str = "aqe") -> list[Cycle]:
    """Cycles of a data set file (IOF/ROL CSV): one item per test (``aqe``) or per
    row (``rows``, see :func:`aqe.learning.features.cycles_from_iofrol_rows`)."""
    if protocol == "rows":
        return cycles_from_iofrol_rows(dataset)
    return cycles_from_iofrol(dataset)


def policy_id_for(algorithm: str, seed: int, source: str, until_seq: int, cycles: int) -> str:
    """A stable id: the same training on the same history gets the same id."""
    digest = hashlib.sha256(f"{source}|{until_seq}|{cycles}".encode()).hexdigest()[:8]
    return f"{algorithm}-s{seed}-{digest}"


def _rounded(values: Sequence[float]) -> tuple[float, ...]:
    return tuple(round(float(v), _DIGITS) for v in values)


def experience_event(
    policy_id: str, algorithm: str, cycle: str, transitions: Sequence[Transition]
) -> ExperienceRecorded:
    """One cycle's transitions as an event (values rounded to 6 decimals)."""
    steps = tuple(
        ExperienceStep(
            test_id=t.test_id,
            state=_rounded(t.state),
            action=round(float(t.action), _DIGITS),
            reward=round(float(t.reward), _DIGITS),
            next_state=() if t.next_state == t.state else _rounded(t.next_state),
            done=t.done,
        )
        for t in transitions
    )
    return ExperienceRecorded(
        policy_id=policy_id,
        algorithm=algorithm,
        cycle=cycle,
        feature_version=FEATURE_VERSION,
        steps=steps,
    )


def train_policy(
    algorithm: str,
    cycles: Sequence[Cycle],
    *,
    seed: int = 0,
    source: str = "log",
    until_seq: int = 0,
    budget: float = 0.5,
    hyperparameters: dict[str, Any] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    record: Callable[[ExperienceRecorded], None] | None = None,
) -> tuple[Policy, TrainResult]:
    """Train ``algorithm`` online over ``cycles``; ``record`` receives each cycle's experience."""
    policy = make_policy(algorithm, seed=seed, **(hyperparameters or {}))
    policy_id = policy_id_for(algorithm, seed, source, until_seq, len(cycles))

    def recorder(cycle: str, transitions: list[Transition]) -> None:
        if record is not None and transitions:
            record(experience_event(policy_id, algorithm, cycle, transitions))

    started = time.perf_counter()
    report = evaluate_online(
        policy, cycles, budget=budget, on_progress=on_progress, on_transitions=recorder
    )
    policy.set_training(False)
    meta = PolicyMeta(
        policy_id=policy_id,
        algorithm=algorithm,
        seed=seed,
        hyperparameters=policy.hyperparameters(),
        feature_version=FEATURE_VERSION,
        trained_on=source,
        trained_until_seq=until_seq,
        cycles=len(cycles),
        transitions=report.transitions,
        mean_apfd=report.mean_apfd,
        mean_napfd=report.mean_napfd,
        train_seconds=round(time.perf_counter() - started, 3),
        trained_at=datetime.now(UTC),
    )
    return policy, TrainResult(report=report, meta=meta)


def train_offline(
    algorithm: str,
    data: Sequence[Transition],
    *,
    seed: int = 0,
    source: str,
    until_seq: int = 0,
    cycles: int = 0,
    hyperparameters: dict[str, Any] | None = None,
) -> tuple[Policy, PolicyMeta]:
    """Fit an offline learner (one with ``fit(transitions)``, the Decision Transformer)
    on recorded experience, e.g. another policy's buffer in the ``experience``
    projection; nothing is replayed online, so the metadata has no APFD.

    Raises:
        ConfigError: the algorithm cannot learn offline, or there is no experience.
    """
    policy = make_policy(algorithm, seed=seed, **(hyperparameters or {}))
    fit = getattr(policy, "fit", None)
    if policy.kind != "offline" or fit is None:
        raise ConfigError(f"{algorithm} does not learn offline from recorded experience")
    if not data:
        raise ConfigError(f"no recorded experience in {source}")
    started = time.perf_counter()
    fit(list(data))
    policy.set_training(False)
    meta = PolicyMeta(
        policy_id=policy_id_for(algorithm, seed, source, until_seq, cycles),
        algorithm=algorithm,
        seed=seed,
        hyperparameters=policy.hyperparameters(),
        feature_version=FEATURE_VERSION,
        trained_on=source,
        trained_until_seq=until_seq,
        cycles=cycles,
        transitions=len(data),
        train_seconds=round(time.perf_counter() - started, 3),
        trained_at=datetime.now(UTC),
    )
    return policy, meta


def trained_event(meta: PolicyMeta, bucket: str, digest: str) -> PolicyTrained:
    """The ``learning.policy.trained.v1`` fact for a policy stored as ``bucket/digest``."""
    return PolicyTrained(
        policy_id=meta.policy_id,
        algorithm=meta.algorithm,
        seed=meta.seed,
        feature_version=meta.feature_version,
        hyperparameters=hyperparameters_as_strings(meta.hyperparameters),
        trained_on=meta.trained_on,
        trained_until_seq=meta.trained_until_seq,
        cycles=meta.cycles,
        mean_apfd=meta.mean_apfd,
        mean_napfd=meta.mean_napfd,
        artefact=f"{bucket}/{digest}",
        trained_at=meta.trained_at,
        bucket=bucket,
        digest=digest,
    )


def rank_pending(
    policy: Policy,
    history: Sequence[Cycle],
    test_ids: Sequence[str],
    *,
    replay: bool,
) -> list[Ranked]:
    """The order to run ``test_ids`` in, from ``history`` (the tests' past).

    With ``replay`` the policy first learns online over the history (heuristics and
    untrained policies); a saved policy only needs the history for its features.
    Equal priorities keep the order of ``test_ids``.
    """
    if replay:
        evaluate_online(policy, history)
    policy.set_training(False)
    tracker = HistoryTracker()
    for index, cycle in enumerate(history):
        tracker.observe_cycle(
            cycle.cycle_id, cycle.test_ids, cycle.durations, cycle.verdicts, now=index
        )
    unique = tuple(dict.fromkeys(test_ids))
    if not unique:
        return []
    obs = tracker.observation("pending", unique, now=len(history))
    priorities = np.asarray(policy.act(obs), dtype=np.float64)
    keys = np.where(np.isnan(priorities), -np.inf, priorities)
    order = sorted(range(len(unique)), key=lambda i: (-keys[i], i))
    return [
        Ranked(
            position=i,
            test_id=unique[j],
            priority=round(float(priorities[j]), _DIGITS),
            expected_duration_s=float(obs.durations[j]),
        )
        for i, j in enumerate(order, start=1)
    ]


def subset(order: Sequence[Ranked], budget_s: float) -> list[Ranked]:
    """The prefix of ``order`` whose expected durations fit in ``budget_s``.

    Like Launchable's subset: tests run in order until the next one would overrun.
    """
    chosen: list[Ranked] = []
    used = 0.0
    for item in order:
        if used + item.expected_duration_s > budget_s:
            break
        chosen.append(item)
        used += item.expected_duration_s
    return chosen
