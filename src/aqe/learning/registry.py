"""Policies by name: the baselines and the learning algorithms.

Every factory takes ``(seed: int = 0, **hyperparameters)``. The learners' modules
(torch) are imported only when their factory is called, so listing names is cheap.
The ``optimal`` oracle is registered too, for evaluation tables only (see
:class:`aqe.learning.baselines.OptimalPolicy`); :data:`ORACLES` names it.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any, cast

from aqe.errors import ConfigError
from aqe.learning.base import Policy
from aqe.learning.baselines import (
    DurationAwarePolicy,
    FailureCountPolicy,
    OptimalPolicy,
    RandomPolicy,
    RecentFailurePolicy,
    RetecsSortPolicy,
    RetecsWeightPolicy,
)

__all__ = ["ALGORITHMS", "BASELINES", "LEARNERS", "ORACLES", "check_policy_id", "make_policy"]

Factory = Callable[..., Policy]


def _lazy(module: str, cls: str) -> Factory:
    def factory(seed: int = 0, **hyperparameters: Any) -> Policy:
        policy_cls = getattr(importlib.import_module(module), cls)
        return cast(Policy, policy_cls(seed=seed, **hyperparameters))

    factory.__name__ = f"make_{cls}"
    factory.__qualname__ = factory.__name__
    factory.__doc__ = f"Build :class:`{module}.{cls}` (imports its module on first use)."
    return factory


_SEQ = "aqe.learning.algos.sequential"
_PG = "aqe.learning.algos.policy_gradient"
_CONT = "aqe.learning.algos.continuous"
_DT = "aqe.learning.algos.decision_transformer"

BASELINES: tuple[str, ...] = (
    "random",
    "failure-count",
    "recent-failure",
    "duration-aware",
    "retecs-sort",
    "retecs-weight",
)
ORACLES: tuple[str, ...] = ("optimal",)
LEARNERS: tuple[str, ...] = (
    "q-learning",
    "sarsa",
    "a2c",
    "actor-critic",
    "ppo",
    "ddpg",
    "td3",
    "sac",
    "decision-transformer",
)

ALGORITHMS: dict[str, Factory] = {
    "random": RandomPolicy,
    "failure-count": FailureCountPolicy,
    "recent-failure": RecentFailurePolicy,
    "duration-aware": DurationAwarePolicy,
    "retecs-sort": RetecsSortPolicy,
    "retecs-weight": RetecsWeightPolicy,
    "optimal": OptimalPolicy,
    "q-learning": _lazy(_SEQ, "SequentialQLearning"),
    "sarsa": _lazy(_SEQ, "SequentialSarsa"),
    "a2c": _lazy(_PG, "A2CPolicy"),
    "actor-critic": _lazy(_PG, "ActorCriticPolicy"),
    "ppo": _lazy(_PG, "PPOPolicy"),
    "ddpg": _lazy(_CONT, "DDPGPolicy"),
    "td3": _lazy(_CONT, "TD3Policy"),
    "sac": _lazy(_CONT, "SACPolicy"),
    "decision-transformer": _lazy(_DT, "DecisionTransformerPolicy"),
}
"""Name → factory(seed, **hyperparameters)."""


def make_policy(name: str, seed: int = 0, **hyperparameters: Any) -> Policy:
    """A fresh policy.

    Raises:
        ConfigError: no algorithm has that name (the message lists the names), or the
            hyperparameters do not suit it.
    """
    try:
        factory = ALGORITHMS[name]
    except KeyError:
        raise ConfigError(
            f"unknown algorithm {name!r}; known: {', '.join(sorted(ALGORITHMS))}"
        ) from None
    try:
        return factory(seed=seed, **hyperparameters)
    except TypeError as exc:
        raise ConfigError(f"{name}: bad hyperparameters: {exc}") from exc


_POLICY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_policy_id(policy_id: str) -> str:
    """``policy_id`` if it is safe as one directory name, which is how it is stored.

    A policy id names ``<data dir>/policies/<id>``: letters, digits, ``.``, ``_`` and
    ``-``, starting with a letter or digit, at most 128 characters, so no id can
    climb out of that directory (``..``, ``/``, ``\\``) or be hidden (``.x``).

    Raises:
        ConfigError: any other id.
    """
    if not _POLICY_ID.fullmatch(policy_id):
        raise ConfigError(
            f"bad policy id {policy_id[:80]!r}: use letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit, at most 128 characters)"
        )
    return policy_id
