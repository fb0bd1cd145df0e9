"""Verifiable exports: a range of a stream as Parquet, with its seals and proofs.

An export directory holds::

    manifest.json    format, stream, range, counts, the seal the proofs lead to
    events.parquet   stream, seq, subject, headers (JSON of the leaf headers), data,
                     recorded_at_ns: one row per message of the range
    seals.jsonl      every seal of the stream up to that seal, in order, with its
                     AQE_AUDIT sequence: {"seal_seq": N, "seal": {...}}
    proofs.jsonl     one inclusion proof per row (``aqe.audit.inclusion.v1``)

:func:`verify_export` checks it with no server: the seals' signatures and chain
(consistency proofs), every row's proof against the last seal, that each row is the
message its proof names, and that no sealed message of the range is missing.

:func:`import_export` loads the rows into another server's stream in order; each
copy carries ``Aqe-Import-Stream`` and ``Aqe-Import-Seq`` (the original coordinates)
so :func:`original_leaf_hash` gives back the leaf the original seals covered.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import msgspec

from aqe.audit.leaf import leaf_bytes
from aqe.audit.merkle import EMPTY_ROOT, leaf_hash, verify_consistency
from aqe.audit.proof import (
    InclusionProof,
    ProofLeaf,
    Prover,
    check_proof,
    decode_proof,
    encode_proof,
)
from aqe.audit.seal import TrustedKeys, head_of, seal_problem, seals_of
from aqe.errors import AuditError
from aqe.events import Envelope
from aqe.events.audit import StreamSealed
from aqe.log.port import MAX_BATCH, BatchResult, EventLog

__all__ = [
    "EXPORT_FORMAT",
    "IMPORT_SEQ",
    "IMPORT_STREAM",
    "ExportReport",
    "ExportSummary",
    "RawAppender",
    "export_range",
    "import_export",
    "original_leaf_hash",
    "verify_export",
]

EXPORT_FORMAT = "aqe.audit.export.v1"
IMPORT_STREAM = "Aqe-Import-Stream"
IMPORT_SEQ = "Aqe-Import-Seq"


class _SealLine(msgspec.Struct, frozen=True):
    seal_seq: int
    seal: StreamSealed


class ExportSummary(msgspec.Struct, frozen=True, kw_only=True):
    """What :func:`export_range` wrote."""

    directory: str
    stream: str
    first_seq: int
    last_seq: int
    events: int
    seals: int
    seal_seq: int
    tree_size: int


class ExportReport(msgspec.Struct, frozen=True, kw_only=True):
    """The offline verdict on an export directory."""

    directory: str
    stream: str
    events: int
    seals: int
    problems: list[str]

    @property
    def intact(self) -> bool:
        """Nothing failed."""
        return not self.problems

    def lines(self) -> list[str]:
        """Human-readable verdict lines."""
        head = f"{self.directory}: {self.stream}, {self.events} events, {self.seals} seals: " + (
            "intact" if self.intact else f"{len(self.problems)} problems"
        )
        return [head, *(f"  {p}" for p in self.problems)]


def _parse_range(first: int, last: int | None) -> tuple[int, int | None]:
    if first < 1 or (last is not None and last < first):
        raise AuditError(f"bad range {first}..{last if last is not None else ''}")
    return first, last


async def export_range(
    log: EventLog,
    stream: str,
    out: Path,
    *,
    first: int = 1,
    last: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ExportSummary:
    """Write ``stream``'s messages ``first..last`` (default: up to the newest seal).

    Raises:
        AuditError: no seal covers the range's end, the stream diverges from its seal,
            or ``out`` is not empty.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    first, last = _parse_range(first, last)
    if out.exists() and any(out.iterdir()):
        raise AuditError(f"{out} is not empty")
    prover = await Prover.load(log, stream, covering=last or 0, on_progress=on_progress)
    end = prover.seal.last_seq if last is None else last
    rows: dict[str, list[Any]] = {
        k: [] for k in ("stream", "seq", "subject", "headers", "data", "recorded_at_ns")
    }
    proofs: list[bytes] = []
    async for env in log.read(stream, after_seq=first - 1, until_seq=end):
        proof = prover.proof_of(env)
        proofs.append(encode_proof(proof))
        rows["stream"].append(env.stream)
        rows["seq"].append(env.seq)
        rows["subject"].append(env.subject)
        rows["headers"].append(json.dumps(proof.leaf.headers, sort_keys=True))
        rows["data"].append(env.data)
        rows["recorded_at_ns"].append(env.recorded_at_ns)
    seals = [
        _SealLine(env.seq, s)
        for env, s in await seals_of(log, stream)
        if s is not None and env.seq <= prover.seal_seq
    ]
    out.mkdir(parents=True, exist_ok=True)
    schema = pa.schema(
        [
            ("stream", pa.string()),
            ("seq", pa.int64()),
            ("subject", pa.string()),
            ("headers", pa.string()),
            ("data", pa.binary()),
            ("recorded_at_ns", pa.int64()),
        ]
    )
    pq.write_table(pa.table(rows, schema=schema), out / "events.parquet")
    (out / "proofs.jsonl").write_bytes(b"".join(p + b"\n" for p in proofs))
    (out / "seals.jsonl").write_bytes(b"".join(msgspec.json.encode(s) + b"\n" for s in seals))
    summary = ExportSummary(
        directory=str(out),
        stream=stream,
        first_seq=first,
        last_seq=end,
        events=len(proofs),
        seals=len(seals),
        seal_seq=prover.seal_seq,
        tree_size=prover.seal.tree_size,
    )
    manifest = {"format": EXPORT_FORMAT, **msgspec.to_builtins(summary)}
    manifest.pop("directory")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return summary


def _load_export(
    directory: Path,
) -> tuple[dict[str, Any], list[dict[str, Any]], list[_SealLine], list[InclusionProof]]:
    import pyarrow.parquet as pq

    try:
        manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
        table = pq.read_table(directory / "events.parquet")
        seal_lines = (directory / "seals.jsonl").read_bytes().splitlines()
        proof_lines = (directory / "proofs.jsonl").read_bytes().splitlines()
    except (OSError, ValueError) as exc:
        raise AuditError(f"{directory}: not a readable export: {exc}") from None
    if manifest.get("format") != EXPORT_FORMAT:
        raise AuditError(f"{directory}/manifest.json: format is not {EXPORT_FORMAT}")
    decoder = msgspec.json.Decoder(_SealLine)
    try:
        seals = [decoder.decode(line) for line in seal_lines if line.strip()]
    except msgspec.DecodeError as exc:
        raise AuditError(f"{directory}/seals.jsonl: {exc}") from None
    proofs = [
        decode_proof(line, source=f"{directory}/proofs.jsonl:{n}")
        for n, line in enumerate(proof_lines, start=1)
        if line.strip()
    ]
    return manifest, table.to_pylist(), seals, proofs


def verify_export(directory: Path, trusted: TrustedKeys) -> ExportReport:
    """Check an export with no server (module docstring).

    Raises:
        AuditError: the directory is not a readable export.
    """
    manifest, rows, seals, proofs = _load_export(directory)
    stream = str(manifest.get("stream", ""))
    problems = _seal_chain_problems(seals, trusted)
    last = seals[-1] if seals else None
    if len(rows) != len(proofs):
        problems.append(f"{len(rows)} events but {len(proofs)} proofs")
    for row, proof in zip(rows, proofs, strict=False):
        seq = row["seq"]
        if (
            ProofLeaf(
                stream=row["stream"],
                seq=seq,
                subject=row["subject"],
                headers=json.loads(row["headers"]),
                data=_b64(row["data"]),
            )
            != proof.leaf
        ):
            problems.append(f"seq {seq}: the row is not the message its proof names")
        if last is None or proof.seal_seq != last.seal_seq or proof.seal != head_of(last.seal):
            problems.append(f"seq {seq}: proof is against a seal that is not the export's last")
        problems += [f"seq {seq}: {p}" for p in check_proof(proof, trusted)]
    present = {row["seq"] for row in rows}
    first, end = int(manifest.get("first_seq", 1)), int(manifest.get("last_seq", 0))
    for line in seals:
        for a, b in line.seal.runs:
            for s in range(max(a, first), min(b, end) + 1):
                if s not in present:
                    problems.append(
                        f"seq {s}: sealed at AQE_AUDIT seq {line.seal_seq} but "
                        "missing from the export"
                    )
    return ExportReport(
        directory=str(directory),
        stream=stream,
        events=len(rows),
        seals=len(seals),
        problems=problems,
    )


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")


def _seal_chain_problems(seals: Sequence[_SealLine], trusted: TrustedKeys) -> list[str]:
    problems: list[str] = []
    prev: StreamSealed | None = None
    for line in seals:
        seal, where = line.seal, f"seal at AQE_AUDIT seq {line.seal_seq}"
        problem = seal_problem(seal, trusted)
        if problem is not None:
            problems.append(f"{where}: {problem}")
        want = (prev.tree_size, prev.root, prev.last_seq) if prev else (0, "", 0)
        if (seal.prev_size, seal.prev_root, seal.prev_last_seq) != want:
            problems.append(f"{where}: does not continue the seal before it")
        old_root = bytes.fromhex(seal.prev_root) if seal.prev_size else EMPTY_ROOT
        proof = [bytes.fromhex(h) for h in seal.consistency]
        if not verify_consistency(
            seal.prev_size, seal.tree_size, old_root, bytes.fromhex(seal.root), proof
        ):
            problems.append(f"{where}: consistency proof does not check")
        prev = seal
    return problems


def original_leaf_hash(env: Envelope) -> bytes:
    """The leaf hash an imported copy had in its original stream."""
    headers = {k: v for k, v in env.headers.items() if k not in (IMPORT_STREAM, IMPORT_SEQ)}
    stream = env.headers.get(IMPORT_STREAM, env.stream)
    seq = int(env.headers.get(IMPORT_SEQ, env.seq))
    return leaf_hash(leaf_bytes(stream, seq, env.subject, headers, env.data))


class RawAppender(Protocol):
    """What import needs of a log: atomic batches of raw messages (the JetStream adapter)."""

    async def append_raw_batch(
        self, stream: str, messages: Sequence[tuple[str, bytes, Mapping[str, str]]]
    ) -> BatchResult:
        """Append raw messages as one atomic batch."""
        ...


async def import_export(
    directory: Path,
    log: RawAppender,
    *,
    stream: str | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Append an export's rows, in order, to ``stream`` (default: the exported one).

    Each copy keeps its headers (``Nats-Msg-Id`` too: importing twice stores nothing
    new) and gets ``Aqe-Import-Stream``/``Aqe-Import-Seq``. The caller verifies the
    export first (``aqe audit import`` does). Returns the number of rows sent.
    """
    manifest, rows, _, _ = _load_export(directory)
    target = stream or str(manifest["stream"])
    batch: list[tuple[str, bytes, Mapping[str, str]]] = []
    sent = 0
    for row in rows:
        headers = dict(json.loads(row["headers"]))
        headers[IMPORT_STREAM] = row["stream"]
        headers[IMPORT_SEQ] = str(row["seq"])
        batch.append((row["subject"], row["data"], headers))
        if len(batch) == MAX_BATCH:
            await log.append_raw_batch(target, batch)
            sent += len(batch)
            batch = []
            if on_progress is not None:
                on_progress(sent)
    if batch:
        await log.append_raw_batch(target, batch)
        sent += len(batch)
    return sent
