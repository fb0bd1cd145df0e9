"""Verify a stream against its seals: intact, or the first divergence, with sequences.

For each seal, in order: its signature (a trusted key), its chain (it continues the
seal before it, and its consistency proof checks), its own range (each sequence it
covered still holds the message whose leaf digest it recorded), and its root (the
tree recomputed from the messages now in the stream). What is found is named:

=================  ===============================================================
``changed``        a sequence holds other bytes than when sealed
``deleted``        a sealed sequence holds no message now (deleted, purged, or
                   dropped by the server when its stored bytes failed their check)
``inserted``       a message at a sequence the seal recorded as empty
``reordered``      the message at one sealed sequence is the one sealed at another
``bad-signature``  unsigned, signed by an untrusted key, or the signature fails
``broken-chain``   a seal does not continue the previous one (a seal replaced or
                   removed), or its consistency proof does not check
``root-mismatch``  the recomputed root differs and no message in the seal's range
                   explains it (the divergence lies in an earlier seal's range)
``bad-seal``       a message on a seal subject that is not a seal
``forged-origin``  a message claiming to be a bridged copy (``Aqe-Origin-Cluster``)
                   from a cluster not trusted, or whose id is not the copy id of
                   the origin it names
=================  ===============================================================

Messages after the last seal are counted as ``unsealed`` (not a divergence), but
origin claims are checked on every message.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Collection, Sequence
from typing import Literal

import msgspec

from aqe.audit.leaf import leaf_bytes, message_leaf_hash
from aqe.audit.merkle import (
    EMPTY_ROOT,
    extend_frontier,
    frontier_root,
    leaf_hash,
    verify_consistency,
)
from aqe.audit.seal import DIGEST_BYTES, TrustedKeys, seal_problem, seals_of
from aqe.events import Envelope, Headers
from aqe.events.audit import StreamSealed
from aqe.log.port import EventLog

__all__ = ["Divergence", "DivergenceKind", "SealCheck", "StreamVerdict", "verify_stream"]

DivergenceKind = Literal[
    "changed",
    "deleted",
    "inserted",
    "reordered",
    "bad-signature",
    "broken-chain",
    "root-mismatch",
    "bad-seal",
    "forged-origin",
]
_REORDER_CANDIDATES = 64


class Divergence(msgspec.Struct, frozen=True, kw_only=True):
    """One thing that does not match what was sealed."""

    kind: DivergenceKind
    seq: int | None = None
    """The stream sequence concerned (None for a seal-level finding)."""
    seal_seq: int | None = None
    """The ``AQE_AUDIT`` sequence of the seal concerned."""
    detail: str = ""


class SealCheck(msgspec.Struct, frozen=True, kw_only=True):
    """One seal's verdict."""

    seal_seq: int
    tree_size: int
    first_seq: int
    last_seq: int
    intact: bool
    divergences: list[Divergence]


class StreamVerdict(msgspec.Struct, frozen=True, kw_only=True):
    """A stream's verdict: per seal, plus origin findings and what is not sealed yet."""

    stream: str
    seals: list[SealCheck]
    messages: int
    unsealed: int
    origin: list[Divergence]
    from_seq: int = 0

    @property
    def intact(self) -> bool:
        """No seal diverges and no origin claim is forged."""
        return not self.origin and all(s.intact for s in self.seals)

    @property
    def first_divergence(self) -> Divergence | None:
        """The first finding, in seal order, then origin findings."""
        for check in self.seals:
            if check.divergences:
                return check.divergences[0]
        return self.origin[0] if self.origin else None


def _origin_problem(env: Envelope, trusted_origins: Collection[str] | None) -> str | None:
    cluster = env.headers.get(Headers.ORIGIN_CLUSTER)
    if cluster is None:
        return None
    stream = env.headers.get(Headers.ORIGIN_STREAM, "")
    seq = env.headers.get(Headers.ORIGIN_SEQ, "")
    if trusted_origins is not None and cluster not in trusted_origins:
        return f"claims to be a copy from cluster {cluster!r}, which is not a trusted origin"
    if not seq.isdigit():
        return f"claims origin {cluster!r} with a bad {Headers.ORIGIN_SEQ} {seq!r}"
    # The bridge stores every copy under the id <origin>:<stream>:<seq>.
    if env.headers.get(Headers.MSG_ID) != f"{cluster}:{stream}:{seq}":
        return f"claims origin {cluster}/{stream}/{seq} but its id is not that copy's id"
    return None


def _digests(seal: StreamSealed) -> list[bytes] | None:
    try:
        raw = base64.b64decode(seal.digests, validate=True)
    except (binascii.Error, ValueError):
        return None
    count = sum(b - a + 1 for a, b in seal.runs)
    if len(raw) != count * DIGEST_BYTES:
        return None
    return [raw[i : i + DIGEST_BYTES] for i in range(0, len(raw), DIGEST_BYTES)]


def _sealed_seqs(seal: StreamSealed) -> list[int]:
    return [s for a, b in seal.runs for s in range(a, b + 1)]


async def verify_stream(
    log: EventLog,
    stream: str,
    trusted: TrustedKeys,
    *,
    trusted_origins: Collection[str] | None = None,
    from_seq: int = 0,
    on_progress: Callable[[int], None] | None = None,
) -> StreamVerdict:
    """Recompute ``stream``'s tree and check it against every seal (module docstring).

    With ``from_seq``, seals that end before it are only used as a starting point: the
    last of them with a good signature whose frontier gives its root lends its
    frontier, and messages are read from just after it.
    """
    seals = await seals_of(log, stream)
    start = 0  # index of the first seal checked
    size, last_seq, frontier = 0, 0, list[bytes]()
    if from_seq > 0:
        for i, (_, seal) in enumerate(seals):
            if seal is None or seal.last_seq >= from_seq:
                break
            f = [bytes.fromhex(h) for h in seal.frontier]
            if seal_problem(seal, trusted) is None and frontier_root(f).hex() == seal.root:
                start, size, last_seq, frontier = i + 1, seal.tree_size, seal.last_seq, f
    leaves: dict[int, bytes] = {}
    origin: list[Divergence] = []
    # Read up to the end the server reports: a record the server skips because its
    # checksum fails still counts as pending, so a read without a bound would wait
    # for it forever.
    end = await log.last_seq(stream)
    async for env in log.read(stream, after_seq=last_seq, until_seq=end):
        leaves[env.seq] = message_leaf_hash(env)
        problem = _origin_problem(env, trusted_origins)
        if problem is not None:
            origin.append(Divergence(kind="forged-origin", seq=env.seq, detail=problem))
        if on_progress is not None and len(leaves) % 10_000 == 0:
            on_progress(len(leaves))
    ordered = sorted(leaves)
    pos = 0  # next index into ordered not yet in the frontier
    checks: list[SealCheck] = []
    prev: StreamSealed | None = seals[start - 1][1] if start else None
    first_found: Divergence | None = None
    covered = last_seq
    for env, seal in seals[start:]:
        found: list[Divergence] = []
        if seal is None:
            found.append(
                Divergence(kind="bad-seal", seal_seq=env.seq, detail="not a decodable seal")
            )
            checks.append(
                SealCheck(
                    seal_seq=env.seq,
                    tree_size=0,
                    first_seq=0,
                    last_seq=0,
                    intact=False,
                    divergences=found,
                )
            )
            first_found = first_found or found[0]
            continue
        problem = seal_problem(seal, trusted)
        if problem is not None:
            found.append(Divergence(kind="bad-signature", seal_seq=env.seq, detail=problem))
        found += _chain_problems(seal, prev, env.seq)
        found += await _range_problems(log, seal, leaves, env.seq)
        # The tree as the stream is now, up to the seal's last sequence. A seal that
        # goes back behind the one before it already broke the chain; the tree is not
        # rebuilt backwards for it.
        new: list[bytes] = []
        while pos < len(ordered) and ordered[pos] <= seal.last_seq:
            new.append(leaves[ordered[pos]])
            pos += 1
        frontier = extend_frontier(frontier, size, new)
        size += len(new)
        root = frontier_root(frontier) if size else EMPTY_ROOT
        backwards = seal.last_seq < covered
        covered = max(covered, seal.last_seq)
        if (
            not backwards
            and root.hex() != seal.root
            and not any(d.kind in ("changed", "deleted", "inserted", "reordered") for d in found)
        ):
            where = (
                f"; first divergence at seq {first_found.seq}"
                if first_found is not None and first_found.seq is not None
                else ""
            )
            found.append(
                Divergence(
                    kind="root-mismatch",
                    seal_seq=env.seq,
                    detail=f"recomputed root of {size} leaves differs from the sealed root "
                    f"of {seal.tree_size}{where}",
                )
            )
        if found and first_found is None:
            first_found = found[0]
        first = seal.runs[0][0] if seal.runs else seal.prev_last_seq + 1
        checks.append(
            SealCheck(
                seal_seq=env.seq,
                tree_size=seal.tree_size,
                first_seq=first,
                last_seq=seal.last_seq,
                intact=not found,
                divergences=found,
            )
        )
        prev = seal
    unsealed = len(ordered) - pos
    return StreamVerdict(
        stream=stream,
        seals=checks,
        messages=len(ordered),
        unsealed=unsealed,
        origin=origin,
        from_seq=from_seq,
    )


def _chain_problems(
    seal: StreamSealed, prev: StreamSealed | None, seal_seq: int
) -> list[Divergence]:
    out: list[Divergence] = []
    want = (prev.tree_size, prev.root, prev.last_seq) if prev else (0, "", 0)
    have = (seal.prev_size, seal.prev_root, seal.prev_last_seq)
    if have != want:
        out.append(
            Divergence(
                kind="broken-chain",
                seal_seq=seal_seq,
                detail=f"continues a seal of size {have[0]} (last seq {have[2]}) but the "
                f"seal before it has size {want[0]} (last seq {want[2]}) or another root",
            )
        )
    try:
        proof = [bytes.fromhex(h) for h in seal.consistency]
        old_root = bytes.fromhex(seal.prev_root) if seal.prev_size else EMPTY_ROOT
        ok = verify_consistency(
            seal.prev_size, seal.tree_size, old_root, bytes.fromhex(seal.root), proof
        )
    except ValueError:
        ok = False
    if not ok:
        out.append(
            Divergence(
                kind="broken-chain",
                seal_seq=seal_seq,
                detail=f"consistency proof from size {seal.prev_size} to {seal.tree_size} "
                "does not check",
            )
        )
    return out


async def _range_problems(
    log: EventLog, seal: StreamSealed, leaves: dict[int, bytes], seal_seq: int
) -> list[Divergence]:
    """Compare the seal's own range, sequence by sequence, with the stream now."""
    digests = _digests(seal)
    if digests is None:
        return [Divergence(kind="bad-seal", seal_seq=seal_seq, detail="digests do not match runs")]
    sealed = dict(zip(_sealed_seqs(seal), digests, strict=True))
    out: list[Divergence] = []
    lo = seal.prev_last_seq + 1
    present = [s for s in range(lo, seal.last_seq + 1) if s in leaves] if leaves else []
    mismatched: list[int] = []
    for s in sorted(set(present) | set(sealed)):
        if s not in leaves:
            out.append(
                Divergence(
                    kind="deleted",
                    seq=s,
                    seal_seq=seal_seq,
                    detail=f"sealed seq {s} holds no message now",
                )
            )
        elif s not in sealed:
            out.append(
                Divergence(
                    kind="inserted",
                    seq=s,
                    seal_seq=seal_seq,
                    detail=f"seq {s} holds a message the seal did not cover",
                )
            )
        elif leaves[s][:DIGEST_BYTES] != sealed[s]:
            mismatched.append(s)
    moved = await _moves(log, seal.stream, mismatched, sealed) if mismatched else {}
    for s in mismatched:
        if s in moved:
            out.append(
                Divergence(
                    kind="reordered",
                    seq=s,
                    seal_seq=seal_seq,
                    detail=f"seq {s} holds the message sealed at seq {moved[s]}",
                )
            )
        else:
            out.append(
                Divergence(
                    kind="changed",
                    seq=s,
                    seal_seq=seal_seq,
                    detail=f"seq {s} holds other bytes than were sealed",
                )
            )
    out.sort(key=lambda d: d.seq or 0)
    return out


async def _moves(
    log: EventLog, stream: str, mismatched: Sequence[int], sealed: dict[int, bytes]
) -> dict[int, int]:
    """For mismatched sequences, the sealed sequence whose digest their message has."""
    if len(mismatched) > _REORDER_CANDIDATES:
        return {}
    out: dict[int, int] = {}
    for s in mismatched:
        env = await log.get(stream, s)
        for other in mismatched:
            if other == s:
                continue
            moved = leaf_hash(leaf_bytes(stream, other, env.subject, env.headers, env.data))
            if moved[:DIGEST_BYTES] == sealed[other]:
                out[s] = other
                break
    return out
