"""`aqe audit` end to end: seal, verify, prove, check a proof offline (in Python and in
Node.js), export, verify the export offline, import it into a fresh server."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import nats
import pytest

from aqe.audit.proof import decode_proof
from aqe.server import NatsServerProcess

pytestmark = pytest.mark.nats

Runner = Any  # the `aqe` fixture in conftest.py

REPORT = (
    '<testsuites><testsuite name="pytest">'
    + "".join(f'<testcase classname="tests.test_m" name="test_{i}" time="0.1"/>' for i in range(8))
    + '<testcase classname="tests.test_m" name="test_f" time="0.1"><failure message="boom"/>'
    "</testcase></testsuite></testsuites>"
)
VERIFIER = Path(__file__).with_name("verify_proof.mjs")


async def _read_copies(url: str) -> list[tuple[int, bytes]]:
    from aqe.audit.export import IMPORT_SEQ, original_leaf_hash
    from aqe.log.jetstream import JetStreamEventLog

    nc = await nats.connect(url)
    log = JetStreamEventLog(nc)
    try:
        return [
            (int(env.headers[IMPORT_SEQ]), original_leaf_hash(env))
            async for env in log.read("AQE_TESTS")
        ]
    finally:
        await log.close()


def _tamper(proof_line: str) -> str:
    proof = json.loads(proof_line)
    data = base64.b64decode(proof["leaf"]["data"]).replace(b"passed", b"failed")
    proof["leaf"]["data"] = base64.b64encode(data).decode()
    return json.dumps(proof)


def test_seal_verify_prove_export_import(
    aqe: Runner, aqe_env: dict[str, str], tmp_path: Path
) -> None:
    report = tmp_path / "r.xml"
    report.write_text(REPORT, encoding="utf-8")
    assert aqe("ingest", str(report), "-q").code == 0
    assert aqe("quarantine", "tests.test_m.test_f", "--reason", "flaky").code == 0
    nothing = aqe("audit", "seal")
    assert nothing.code == 2
    assert "aqe audit keygen" in nothing.err
    assert aqe("audit", "keygen").code == 0
    pub_file = Path(aqe_env["AQE_DATA_DIR"]) / "keys" / "audit-sealer.pub"
    pub = pub_file.read_text(encoding="ascii").strip()

    sealed = aqe("audit", "seal", "--stream", "AQE_TESTS", "--json")
    assert sealed.code == 0, sealed.err
    [row] = sealed.json()
    size = row["tree_size"]
    assert (row["stream"], row["last_seq"]) == ("AQE_TESTS", size)
    assert size == 12  # run started + 9 executions + run finished + quarantine

    verified = aqe("audit", "verify", "--stream", "AQE_TESTS", "--json")
    assert verified.code == 0, verified.out + verified.err
    [verdict] = verified.json()
    assert verdict["intact"]
    assert [s["intact"] for s in verdict["seals"]] == [True]
    assert "intact" in aqe("audit", "verify", "--stream", "AQE_TESTS").out

    proofs = tmp_path / "p.jsonl"
    made = aqe(
        "audit", "prove", "--stream", "AQE_TESTS", "--seq", "3", "--seq", "11", "--out", str(proofs)
    )
    assert made.code == 0, made.err
    checked = aqe("audit", "check-proof", str(proofs), "--key", pub, "--json")
    assert checked.code == 0, checked.out + checked.err
    assert [(r["seq"], r["ok"]) for r in checked.json()] == [(3, True), (11, True)]

    bad = tmp_path / "bad.jsonl"
    bad.write_text(_tamper(proofs.read_text().splitlines()[0]) + "\n", encoding="utf-8")
    refused = aqe("audit", "check-proof", str(bad), "--key", str(pub_file))
    assert refused.code == 1
    assert "seq 3: the audit path does not lead" in refused.out

    node = shutil.which("node")
    if node is not None:  # the second-language checker agrees both ways
        ok = subprocess.run(
            [node, str(VERIFIER), str(proofs), pub],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert ok.stdout.split("\n")[:2] == ["ok AQE_TESTS 3", "ok AQE_TESTS 11"]
        no = subprocess.run(
            [node, str(VERIFIER), str(bad), pub],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert no.returncode == 1
        assert "FAILED AQE_TESTS 3: audit path" in no.stdout

    # Why is test_f quarantined? Its execution, its run's start and finish, the
    # quarantine itself: each with its sequence and a proof that checks offline.
    why = aqe(
        "audit",
        "explain",
        "history",
        "tests.test_m.test_f",
        "--json",
        "--proofs",
        str(tmp_path / "why.jsonl"),
    )
    assert why.code == 0, why.err
    explained = why.json()["events"]
    assert [(e["seq"], e["event_type"]) for e in explained] == [
        (1, "tests.run.started.v1"),
        (10, "tests.case.executed.v1"),
        (11, "tests.run.finished.v1"),
        (12, "tests.case.quarantined.v1"),
    ]
    assert all(e["proof"]["seal"]["root"] == row["root"] for e in explained)
    assert aqe("audit", "check-proof", str(tmp_path / "why.jsonl"), "--key", pub).code == 0

    # The history as it was before the quarantine (seq 11), beside the live one.
    past = aqe("replay", "history", "--as-of", "11", "--into", str(tmp_path / "past"), "-q")
    assert past.code == 0, past.err
    state = (tmp_path / "past" / "history" / "state.json").read_bytes()
    assert b"tests.test_m.test_f" in state
    assert b'"quarantined":true' not in state
    assert aqe("replay", "history", "--as-of", "11").code == 2  # --into is required

    out = tmp_path / "export"
    exported = aqe(
        "audit", "export", "--stream", "AQE_TESTS", "--range", "2..10", "--out", str(out), "--json"
    )
    assert exported.code == 0, exported.err
    assert (exported.json()["events"], exported.json()["tree_size"]) == (9, 12)
    offline = aqe("audit", "verify", "--export", str(out), "--key", pub, "--json")
    assert offline.code == 0, offline.out + offline.err
    assert offline.json()["problems"] == []

    # A fresh server takes the verified export; copies keep their original sequence.
    other = NatsServerProcess.start_sync(tmp_path / "js2", log_file=tmp_path / "nats2.log")
    try:
        env2 = {**aqe_env, "AQE_NATS_URL": other.url, "AQE_DATA_DIR": str(tmp_path / "d2")}
        imported = aqe("audit", "import", str(out), "--key", pub, "--json", env=env2)
        assert imported.code == 0, imported.err
        assert imported.json() == {"imported": 9, "stream": "AQE_TESTS"}
        copies = asyncio.run(_read_copies(other.url))
    finally:
        other.stop_sync()

    # Each copy's original leaf (from Aqe-Import-Stream/-Seq) is the one its proof proves.
    exported_proofs = [json.loads(line) for line in (out / "proofs.jsonl").read_text().splitlines()]
    assert [seq for seq, _ in copies] == list(range(2, 11))
    for (seq, leaf), proof in zip(copies, exported_proofs, strict=True):
        assert seq == proof["leaf"]["seq"]
        assert leaf == decode_proof(json.dumps(proof).encode()).leaf.hash()

    # An export with one row changed in its proof no longer verifies, and names the row.
    lines = (out / "proofs.jsonl").read_text().splitlines()
    (out / "proofs.jsonl").write_text("\n".join([_tamper(lines[0]), *lines[1:]]) + "\n")
    broken = aqe("audit", "verify", "--export", str(out), "--key", pub)
    assert broken.code == 1
    assert "seq 2: the row is not the message its proof names" in broken.out
