"""Finding the test that makes another fail (or pass) by bisecting the tests before it.

Pure: a :class:`Bisection` is a value; :func:`next_probe` says which tests to run
before the target next, :func:`observe` takes that probe's outcome. After iDFlakies
(Lam et al., ICST 2019):

* a **victim** passes alone and fails after some test, its **polluter**, which leaves
  shared state behind; the bisection looks for the prefix tests whose presence makes
  the target *fail*;
* a **brittle** test fails alone and passes after some test, its **state-setter**; the
  bisection looks for the prefix tests whose presence makes the target *pass*.

Both are one search: keep the candidates (the prefix, in its original order) and run the
first half before the target; if the target shows the sought outcome the culprit is in
that half, otherwise run the second half; if neither half alone shows it, the outcome
needs tests from both halves and the search stops with every remaining candidate as the
(combined) culprit. A single culprit among ``k`` candidates costs at most
``2 * ceil(log2 k)`` probes. Relative order is kept inside each probe, so a polluter that
must run before a cleaner is still found in the half that holds it.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["Bisection", "ODKind", "next_probe", "observe", "start_bisection"]

ODKind = Literal["victim", "brittle"]


class Bisection(msgspec.Struct, frozen=True, kw_only=True):
    """The search's state.

    ``candidates`` still hold the culprit; ``half`` is which half the next probe runs
    (0 first, 1 second); ``culprits`` is set once the search is over.
    """

    kind: ODKind
    candidates: tuple[str, ...]
    half: int = 0
    probes: int = 0
    culprits: tuple[str, ...] | None = None

    @property
    def done(self) -> bool:
        """The search has its answer."""
        return self.culprits is not None

    @property
    def single(self) -> bool:
        """One test alone is the culprit."""
        return self.culprits is not None and len(self.culprits) == 1


def start_bisection(kind: ODKind, prefix: tuple[str, ...]) -> Bisection:
    """A search over ``prefix`` (the tests that ran before the target, in that order).

    Raises:
        ValueError: an empty prefix (nothing ran before the target: no culprit to find).
    """
    if not prefix:
        raise ValueError("an empty prefix holds no polluter or state-setter")
    return _settle(Bisection(kind=kind, candidates=prefix))


def _settle(b: Bisection) -> Bisection:
    if len(b.candidates) == 1:
        return Bisection(
            kind=b.kind, candidates=b.candidates, probes=b.probes, culprits=b.candidates
        )
    return b


def _halves(candidates: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    mid = len(candidates) // 2
    return candidates[:mid], candidates[mid:]


def next_probe(b: Bisection) -> tuple[str, ...]:
    """The tests to run, in order, before the target in the next probe.

    Raises:
        ValueError: the search is over.
    """
    if b.done:
        raise ValueError("the bisection is over")
    return _halves(b.candidates)[b.half]


def observe(b: Bisection, passed: bool) -> Bisection:
    """The search after the target ``passed`` (or not) behind :func:`next_probe`'s tests.

    Raises:
        ValueError: the search is over.
    """
    if b.done:
        raise ValueError("the bisection is over")
    sought = (not passed) if b.kind == "victim" else passed
    halves = _halves(b.candidates)
    probes = b.probes + 1
    if sought:
        return _settle(Bisection(kind=b.kind, candidates=halves[b.half], probes=probes))
    if b.half == 0:
        return Bisection(kind=b.kind, candidates=b.candidates, half=1, probes=probes)
    # Neither half alone reproduces it: the culprits act together.
    return Bisection(kind=b.kind, candidates=b.candidates, probes=probes, culprits=b.candidates)
