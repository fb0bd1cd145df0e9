"""Provenance: the events behind one row of a projection, each with an inclusion proof.

A row is keyed by an aggregate id (a test id in ``history``, an agent id in
``membership``, a proposal id...). The events behind it are those on that aggregate's
subjects (``aqe.<domain>.<aggregate>.<id>.<action>``) in the projection's streams; for
the ``history`` projection the start and finish events of every run the test ran in
are added, because a run's verdicts count only once its finish is in the log (that is
why a test is broken, flaky or quarantined). Each event comes with its proof against
the newest seal covering it, or none when it is not sealed yet.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from aqe.audit.proof import InclusionProof, Prover
from aqe.errors import AuditError, EventDecodeError
from aqe.events import Envelope, TestCaseExecuted
from aqe.log.port import EventLog
from aqe.log.streams import StreamSpec
from aqe.log.subjects import encode_token

__all__ = ["Explained", "Explanation", "explain"]


class Explained(msgspec.Struct, frozen=True, kw_only=True):
    """One event behind the row."""

    stream: str
    seq: int
    subject: str
    event_type: str
    recorded_at_ns: int
    proof: InclusionProof | None = None
    """None: no seal covers this event yet (run ``aqe audit seal``)."""


class Explanation(msgspec.Struct, frozen=True, kw_only=True):
    """The events behind one row, in stream order per stream."""

    projection: str
    key: str
    events: list[Explained]

    @property
    def unsealed(self) -> int:
        """Events without a proof."""
        return sum(1 for e in self.events if e.proof is None)


def _filters(spec: StreamSpec, token: str) -> list[str]:
    """Subject filters of ``spec`` for one aggregate id token."""
    out = []
    for pattern in spec.subjects:
        parts = pattern.split(".")
        if len(parts) == 3 and parts[2] == ">":  # aqe.<domain>.>
            out.append(f"{parts[0]}.{parts[1]}.*.{token}.*")
    return out


async def _read(log: EventLog, stream: str, filters: Sequence[str]) -> list[Envelope]:
    found: list[Envelope] = []
    for subject in filters:
        found += [env async for env in log.read(stream, subjects=subject)]
    return found


async def explain(
    log: EventLog,
    projection: str,
    streams: Sequence[str],
    specs: Sequence[StreamSpec],
    key: str,
) -> Explanation:
    """The events behind row ``key`` of ``projection`` (module docstring).

    Raises:
        AuditError: no event in the projection's streams belongs to ``key``.
    """
    token = encode_token(key)
    by_name = {s.name: s for s in specs}
    found: list[Envelope] = []
    for stream in streams:
        spec = by_name.get(stream)
        if spec is not None:
            found += await _read(log, stream, _filters(spec, token))
    if not found:
        raise AuditError(
            f"no event of {projection}'s streams ({', '.join(streams)}) is about {key!r}"
        )
    if projection == "history":
        runs: set[str] = set()
        for env in found:
            try:
                event = env.decode()
            except EventDecodeError:
                continue
            if isinstance(event, TestCaseExecuted):
                runs.add(event.run_id)
        for run_id in sorted(runs):
            found += await _read(log, "AQE_TESTS", [f"aqe.tests.run.{encode_token(run_id)}.*"])
    unique = {(env.stream, env.seq): env for env in found}
    ordered = [unique[k] for k in sorted(unique)]
    provers: dict[str, Prover | None] = {}
    events: list[Explained] = []
    for env in ordered:
        if env.stream not in provers:
            try:
                provers[env.stream] = await Prover.load(log, env.stream)
            except AuditError:
                provers[env.stream] = None
        prover = provers[env.stream]
        proof = None
        if prover is not None and env.seq <= prover.seal.last_seq:
            proof = prover.proof_of(env)
        events.append(
            Explained(
                stream=env.stream,
                seq=env.seq,
                subject=env.subject,
                event_type=env.event_type,
                recorded_at_ns=env.recorded_at_ns,
                proof=proof,
            )
        )
    return Explanation(projection=projection, key=key, events=events)
