"""What a test's code says about flakiness, without running it.

Three readings of the same source:

* :data:`SIGNALS`: FlakeFlagger-style vocabulary signals (sleeps, threads, waiting,
  async, time, network, files, randomness, static state, databases, ...), counted by
  regular expressions that read Java and Python alike, plus size (lines, asserts).
  They go into the model beside the embedding, as ``log1p`` counts.
* :func:`keyword_rule`: the simplest baseline: a test is flaky when its code names a
  sleep, a thread, a wait, a socket, the clock or randomness.
* :func:`code_tokens`: identifiers split at camelCase and snake_case, lowercased: the
  bag of words of "What is the vocabulary of flaky tests?" (Pinto et al., MSR 2020)
  that the logistic-regression baseline reads.

History features (flip rate, retried passes, same-commit flips, duration spread) come
from the history projection's rows: :func:`history_features`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "HISTORY_FEATURES",
    "SIGNALS",
    "SIGNAL_NAMES",
    "code_tokens",
    "history_features",
    "keyword_rule",
    "signal_counts",
    "signal_matrix",
]

_I = re.IGNORECASE

SIGNALS: dict[str, re.Pattern[str]] = {
    "sleep": re.compile(r"\bsleep\w*\s*\(|\bSystemClock\.sleep|\bparkNanos\b", _I),
    "wait": re.compile(
        r"\.(?:wait|await\w*|join|notify\w*)\s*\(|CountDownLatch|CyclicBarrier|Semaphore"
        r"|\bawaitility\b|\buntil\s*\(|\bwaitFor\w*|\bwait_for\w*|\bpoll\w*\s*\("
    ),
    "thread": re.compile(
        r"\bThread\b|\bRunnable\b|Executor\w*|\bthreading\b|\bThreadPool\w*|\.start\s*\(\s*\)"
        r"|\bsynchronized\b|\bvolatile\b|\bAtomic\w+|\bLock\b|\bReentrant\w+|\bConcurrent\w+"
    ),
    "async": re.compile(
        r"\bFuture\b|\bCompletableFuture\b|\bListenableFuture\b|\bCallable\b|\basync\w*"
        r"|\bcallback\w*|\bPromise\b|\bListener\b|\bsubscribe\w*|\basyncio\b",
        _I,
    ),
    "time": re.compile(
        r"currentTimeMillis|nanoTime|\bnew\s+Date\s*\(|\bCalendar\b|\bClock\b|\bInstant\b"
        r"|\bLocalDate\w*|\bTimeUnit\b|\btimeout\w*|\bdatetime\b|\btime\.time\s*\(|\.now\s*\(",
        _I,
    ),
    "network": re.compile(
        r"\bSocket\w*|\bServerSocket\b|\bURL\b|\bURI\b|\bHttp\w*|\bInetAddress\b|\bInetSocket\w*"
        r"|\bport\b|\bconnect\w*\s*\(|\blocalhost\b|\b127\.0\.0\.1\b|\brequests\.|\burllib\b"
        r"|\bChannel\b|\bNetty\b|\bRest\w*|\bClient\b|\bServer\b",
        _I,
    ),
    "file": re.compile(
        r"\bFile\w*\b|\bPath\w*\b|\bFiles\.|\bInputStream\b|\bOutputStream\b|\bReader\b|\bWriter\b"
        r"|\btmp\w*|\btemp\w*|\bdirectory\b|\bmkdirs?\b|\bdelete\w*\s*\(|\bopen\s*\(",
        _I,
    ),
    "random": re.compile(r"\bRandom\w*|\bUUID\b|Math\.random|\bshuffle\b|\brandint\b|\bseed\b", _I),
    "static_state": re.compile(
        r"\bstatic\b|System\.(?:set|clear|get)Property|\bgetInstance\s*\(|\bsingleton\b"
        r"|\bos\.environ\b|\bglobal\b|\bmonkeypatch\b|\breset\w*\s*\("
    ),
    "database": re.compile(
        r"\bjdbc\b|\bConnection\b|\bStatement\b|\bquery\w*\s*\(|\btransaction\w*|\bDataSource\b"
        r"|\bSession\b|\bcommit\s*\(|\brollback\s*\(|\bsql\w*\b|\bcluster\b|\bZooKeeper\b",
        _I,
    ),
    "process": re.compile(
        r"\bProcess\w*|\bRuntime\.getRuntime|\bexec\s*\(|\bsubprocess\b|\bSystem\.exit\b"
    ),
    "retry_loop": re.compile(r"\bwhile\s*\(|\bfor\s*\(\s*;\s*;|\bretry\w*|\battempt\w*", _I),
    "mock": re.compile(r"\bmock\w*|\bspy\s*\(|\bwhen\s*\(|\bverify\s*\(|\bMockito\b|\bpatch\b", _I),
    "exception": re.compile(r"\btry\b|\bcatch\b|\bexpected\s*=|\bpytest\.raises\b|\bthrows\b"),
    "assert": re.compile(r"\bassert\w*|\bexpect\w*\s*\(|\bverify\w*\s*\(|\bshould\w*", _I),
    "lines": re.compile(r"\n"),
}
"""Name -> pattern; a test's signal is the number of matches in its code."""

SIGNAL_NAMES: tuple[str, ...] = tuple(SIGNALS)

_RULE = ("sleep", "wait", "thread", "async", "network", "random")
_RULE_TIME = re.compile(r"currentTimeMillis|nanoTime|\btimeout\b|\btime\.time\s*\(", _I)

HISTORY_FEATURES: tuple[str, ...] = (
    "runs_log",
    "flip_rate",
    "retried_pass_rate",
    "same_commit_flips_log",
    "fail_rate",
    "duration_spread",
)
"""The history block: what the history projection knows about a test's runs."""


def signal_counts(code: str) -> dict[str, int]:
    """Match counts of every signal in ``code``."""
    return {name: len(pattern.findall(code)) for name, pattern in SIGNALS.items()}


def signal_matrix(codes: Sequence[str]) -> NDArray[np.float32]:
    """``log1p`` signal counts, one row per code, columns in :data:`SIGNAL_NAMES` order."""
    out = np.empty((len(codes), len(SIGNALS)), dtype=np.float32)
    for row, code in enumerate(codes):
        for col, pattern in enumerate(SIGNALS.values()):
            out[row, col] = math.log1p(len(pattern.findall(code)))
    return out


def keyword_rule(code: str) -> bool:
    """The keyword baseline: flaky when the code sleeps, waits, uses threads, async
    results, the network or randomness, or reads the clock."""
    return any(SIGNALS[name].search(code) for name in _RULE) or bool(_RULE_TIME.search(code))


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")


def code_tokens(code: str) -> list[str]:
    """Identifier parts, lowercased: ``waitForServerStart`` -> wait, for, server, start."""
    tokens: list[str] = []
    for ident in _IDENT.findall(code):
        for part in ident.split("_"):
            tokens.extend(p.lower() for p in _CAMEL.findall(part) if len(p) > 1)
    return tokens


def history_features(row: Mapping[str, Any] | None) -> NDArray[np.float32]:
    """The :data:`HISTORY_FEATURES` of one history-projection row (zeros without one)."""
    out = np.zeros(len(HISTORY_FEATURES), dtype=np.float32)
    if not row or not row.get("runs"):
        return out
    runs = int(row["runs"])
    decided = runs - int(row.get("skips") or 0)
    failures = int(row.get("failures") or 0) + int(row.get("errors") or 0)
    p50 = float(row.get("duration_p50_s") or 0.0)
    p95 = float(row.get("duration_p95_s") or 0.0)
    out[0] = math.log1p(runs)
    out[1] = float(row.get("flip_rate") or 0.0)
    out[2] = int(row.get("retried_passes") or 0) / runs
    out[3] = math.log1p(len(row.get("flaky_commits") or ()))
    out[4] = failures / decided if decided > 0 else 0.0
    out[5] = math.log1p(p95 / p50) if p50 > 0 else 0.0
    return out
