"""A poison message as big as the server allows cannot stall a fold (issue 21, item 2).

Before the fix, parking a 1 MiB garbage message added dead-letter headers to it and
went over ``max_payload``: the server closed the connection, the park timed out, and
``aqe consume``, ``aqe runs`` exited 2 on every run with the checkpoint stuck behind
the poison, while ``replay --verify`` still said "equal" (it compared only up to the
checkpoint).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats
import pytest

Runner = Callable[..., Any]  # the `aqe` fixture in tests/e2e/conftest.py

pytestmark = pytest.mark.nats

POISON_SUBJECT = "aqe.tests.case.poison.executed"


def publish_raw(url: str, subject: str, data: bytes) -> int:
    """Publish bytes as any NATS client could, past aqe; return the stream sequence."""

    async def go() -> int:
        nc = await nats.connect(url)
        try:
            ack = await nc.jetstream().publish(subject, data, timeout=10)
            return int(ack.seq)
        finally:
            await nc.close()

    return asyncio.run(go())


def max_payload(url: str) -> int:
    async def go() -> int:
        nc = await nats.connect(url)
        try:
            return int(nc.max_payload)
        finally:
            await nc.close()

    return asyncio.run(go())


def junit(path: Path, run_tag: str) -> Path:
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<testsuite name="unit" tests="2" timestamp="2026-11-20T10:00:00">\n'
        f'<testcase classname="com.acme.{run_tag}" name="ok" time="0.5"/>\n'
        f'<testcase classname="com.acme.{run_tag}" name="fails" time="0.5">'
        '<failure message="no">trace</failure></testcase>\n'
        "</testsuite>\n",
        encoding="utf-8",
    )
    return path


def test_a_max_payload_poison_is_parked_bounded_and_every_fold_goes_past_it(
    aqe: Runner, nats_url: str, tmp_path: Path
) -> None:
    before = aqe("ingest", str(junit(tmp_path / "a.xml", "Before")), "--run-id", "r-before", "-q")
    assert before.code == 0, before.err
    # As big as the server takes: the stored message is exactly max_payload bytes.
    poison = random.Random(21).randbytes(max_payload(nats_url))
    poison_seq = publish_raw(nats_url, POISON_SUBJECT, poison)
    after = aqe("ingest", str(junit(tmp_path / "b.xml", "After")), "--run-id", "r-after", "-q")
    assert after.code == 0, after.err

    # (`aqe ingest` itself folds the history projection, so it met the poison first.)
    for name in ("history", "catalog"):
        consumed = aqe("consume", name, "-q")
        assert consumed.code == 0, consumed.err
    listing = {p["name"]: p for p in aqe("projections", "list", "--json").json()}
    for name in ("history", "catalog"):
        assert listing[name]["dead_letters"] == 1
        assert listing[name]["unparked"] == 0
        assert listing[name]["lag"] == 0
        assert listing[name]["checkpoints"]["AQE_TESTS"] > poison_seq
    runs = aqe("runs", "--json")
    assert runs.code == 0, runs.err
    assert sorted(r["run_id"] for r in runs.json()) == ["r-after", "r-before"]

    # One dead letter per projection on AQE_DLQ, each pointing back at the poison.
    letters = [aqe("events", "get", str(n), "--stream", "AQE_DLQ", "--json") for n in (1, 2)]
    assert all(letter.code == 0 for letter in letters), [x.err for x in letters]
    assert aqe("events", "get", "3", "--stream", "AQE_DLQ").code == 2
    by_projection = {x.json()["headers"]["Aqe-Dlq-Projection"]: x.json() for x in letters}
    assert sorted(by_projection) == ["catalog", "history"]
    for record in by_projection.values():
        headers = record["headers"]
        assert record["subject"].startswith("aqe.dlq.")
        assert headers["Aqe-Dlq-Stream"] == "AQE_TESTS"
        assert headers["Aqe-Dlq-Seq"] == str(poison_seq)
        assert headers["Aqe-Dlq-Subject"] == POISON_SUBJECT
        assert headers["Aqe-Dlq-Copy"] == "truncated"
        assert headers["Aqe-Dlq-Size"] == str(len(poison))
        assert headers["Aqe-Dlq-Digest"] == "sha256:" + hashlib.sha256(poison).hexdigest()
        assert "not JSON" in headers["Aqe-Dlq-Reason"]
        parked = record["dead_letter"]
        assert (parked["stream"], parked["seq"], parked["copy"]) == (
            "AQE_TESTS",
            str(poison_seq),
            "truncated",
        )
        kept = record["data"]
        assert 0 < len(kept) < len(poison)
    tail = aqe("events", "tail", "--stream", "AQE_DLQ")
    assert tail.code == 0, tail.err
    text = " ".join(tail.out.split())  # rich wraps long lines
    for projection in ("history", "catalog"):
        assert (
            f"dead letter of AQE_TESTS#{poison_seq} {POISON_SUBJECT} ({projection}; "
            f"truncated copy of {len(poison)} bytes)"
        ) in text

    # Rebuilding parks the poison again: the server keeps one dead letter per projection.
    again = aqe("replay", "history", "-q", "--json")
    assert again.code == 0, again.err
    assert again.json()["dead_letters"] == 1
    assert aqe("events", "get", "3", "--stream", "AQE_DLQ").code == 2

    verified = aqe("replay", "history", "--verify", "-q")
    assert verified.code == 0, verified.out + verified.err
    assert "equals a rebuild" in verified.out


def test_verify_reports_a_projection_that_lags_the_stream(aqe: Runner, tmp_path: Path) -> None:
    assert aqe("ingest", str(junit(tmp_path / "a.xml", "One")), "-q").code == 0
    assert aqe("consume", "catalog", "-q").code == 0
    assert aqe("replay", "catalog", "--verify", "-q").code == 0
    # Two more events the live projection has not folded.
    for beat in (1, 2):
        published = aqe(
            "publish", "agents.agent.heartbeat.v1", "-d", f'{{"agent_id": "a1", "beat": {beat}}}'
        )
        assert published.code == 0, published.err
    lagging = aqe("replay", "catalog", "--verify", "-q")
    assert lagging.code == 1, lagging.out + lagging.err
    assert "lags the log by 2 events" in lagging.out
    assert "AQE_AGENTS: live checkpoint 0 lags the stream's end 2 by 2 events" in lagging.out
    report = aqe("replay", "catalog", "--verify", "-q", "--json")
    assert report.code == 1
    assert (report.json()["equal"], report.json()["lag"]) == (False, 2)
    assert aqe("consume", "catalog", "-q").code == 0
    assert aqe("replay", "catalog", "--verify", "-q").code == 0
