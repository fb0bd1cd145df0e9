"""The sequential rule that turns a stream of reruns into a verdict, with its error rates.

Pure: no clock, no randomness, no I/O. The flaky workflow feeds it one outcome at a
time and stops rerunning as soon as it answers.

The rule. A test's failure probability in one context (alone in a fresh sandbox, or
after a given prefix of other tests) is ``p``. Two of Wald's sequential probability
ratio tests run side by side on the same outcomes:

* **F** ("does it ever fail?"): H0 ``p = noise`` against H1 ``p = p_min``;
* **P** ("does it ever pass?"): H0 ``1 - p = noise`` against H1 ``1 - p = p_min``.

Each adds its log-likelihood ratio per outcome (F: ``ln(p_min/noise)`` for a failure,
``ln((1-p_min)/(1-noise))`` for a pass; P the mirror image) and stops at Wald's bounds
``ln((1-beta)/alpha)`` (H1) and ``ln(beta/(1-alpha))`` (H0; ``ln(beta)`` without noise,
where no stable test can show a contrary outcome). Then, per context:

* F accepts H0 → **passes** (it does not fail, at rates of ``p_min`` or more);
* P accepts H0 → **fails** (it does not pass, at rates of ``p_min`` or more);
* both accept H1 → **mixed**: it both fails and passes in the same context, i.e. flaky;
* otherwise rerun; at ``max_runs`` the context is **undecided**.

Error rates (Wald): a test whose failure rate is ``p_min`` or more is declared "passes"
with probability at most ``beta`` (and at most ``(1 - p_min) ** n_stable`` with the default
``noise = 0``); a test that is stable up to ``noise`` is declared "mixed" with probability
at most ``alpha``. With ``noise = 0`` (the default: a rerun in a fresh sandbox is assumed to
have no failures of its own) one failure and one pass prove a mix outright, so a flaky test
costs as few reruns as it takes to see both outcomes, and a stable one costs
``n_stable = ceil(ln(beta) / ln(1 - p_min))`` reruns (11 with the defaults
``p_min = 0.25, beta = 0.05``). A failure rate is reported with its Wilson score interval.
"""

from __future__ import annotations

import math
from typing import Literal

import msgspec

from aqe.stats import RateInterval, wilson_interval

__all__ = [
    "ContextVerdict",
    "RateInterval",
    "SequentialRule",
    "Tally",
    "wilson_interval",
]

ContextVerdict = Literal["passes", "fails", "mixed", "undecided", "running"]
"""What the rule says of one context: see the module docstring."""


class SequentialRule(msgspec.Struct, frozen=True, kw_only=True):
    """The rule's parameters (see the module docstring for their meaning)."""

    p_min: float = 0.25
    """The smallest failure (or pass) rate the rule must catch."""
    alpha: float = 0.05
    """Probability of calling a stable test flaky (only above zero when ``noise > 0``)."""
    beta: float = 0.05
    """Probability of missing a failure rate of ``p_min`` or more."""
    noise: float = 0.0
    """Failure rate of a rerun itself (infrastructure), tolerated without calling a mix."""
    max_runs: int = 40
    """Reruns after which a context stays undecided (a truncated SPRT)."""
    z: float = 1.96
    """Normal quantile of the reported interval (1.96: 95%)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.p_min < 1.0:
            raise ValueError(f"p_min must lie in (0, 1), got {self.p_min}")
        if not 0.0 <= self.noise < self.p_min:
            raise ValueError(f"noise must lie in [0, p_min), got {self.noise}")
        if not (0.0 < self.alpha < 1.0 and 0.0 < self.beta < 1.0):
            raise ValueError("alpha and beta must lie in (0, 1)")
        if self.max_runs < 1:
            raise ValueError("max_runs must be at least 1")

    @property
    def upper(self) -> float:
        """Wald's bound for accepting H1."""
        return math.log((1.0 - self.beta) / self.alpha)

    @property
    def lower(self) -> float:
        """Wald's bound for accepting H0.

        Without noise no stable test can be called mixed (the real alpha is 0), so the
        bound is ``ln(beta)`` and the miss rate is exactly ``(1 - p_min) ** n <= beta``.
        """
        if self.noise == 0.0:
            return math.log(self.beta)
        return math.log(self.beta / (1.0 - self.alpha))

    def _llr(self, hit: bool) -> float:
        """One outcome's log-likelihood ratio for H1 (rate ``p_min``) against H0 (``noise``)."""
        if hit:
            return math.inf if self.noise == 0.0 else math.log(self.p_min / self.noise)
        return math.log((1.0 - self.p_min) / (1.0 - self.noise))

    def stable_runs(self) -> int:
        """Reruns that all agree before a context is called stable (no contrary outcome)."""
        return max(1, math.ceil(self.lower / self._llr(False)))

    def judge(self, tally: Tally) -> ContextVerdict:
        """The rule's answer after the outcomes in ``tally``."""
        f = self._statistic(tally.failures, tally.passes)
        p = self._statistic(tally.passes, tally.failures)
        if f >= self.upper and p >= self.upper:
            return "mixed"
        if f <= self.lower:
            return "passes"
        if p <= self.lower:
            return "fails"
        if tally.runs >= self.max_runs:
            return "undecided"
        return "running"

    def _statistic(self, hits: int, misses: int) -> float:
        total = 0.0
        if hits:
            total += hits * self._llr(True)
        if misses:
            total += misses * self._llr(False)
        return total

    def confidence(self, verdict: ContextVerdict) -> float:
        """The rule's stated confidence in ``verdict`` (1 minus its error bound)."""
        if verdict in ("passes", "fails"):
            return 1.0 - self.beta
        if verdict == "mixed":
            return 1.0 if self.noise == 0.0 else 1.0 - self.alpha
        return 0.0


class Tally(msgspec.Struct, frozen=True, kw_only=True):
    """Outcomes seen in one context: counts plus the seeds of the failing reruns."""

    passes: int = 0
    failures: int = 0
    failing_seeds: tuple[int, ...] = ()

    @property
    def runs(self) -> int:
        """Reruns counted."""
        return self.passes + self.failures

    def add(self, passed: bool, seed: int | None = None) -> Tally:
        """This tally with one more outcome."""
        if passed:
            return Tally(
                passes=self.passes + 1, failures=self.failures, failing_seeds=self.failing_seeds
            )
        seeds = self.failing_seeds if seed is None else (*self.failing_seeds, seed)
        return Tally(passes=self.passes, failures=self.failures + 1, failing_seeds=seeds)

    def interval(self, z: float = 1.96) -> RateInterval:
        """The failure rate with its Wilson interval."""
        return wilson_interval(self.failures, self.runs, z)
