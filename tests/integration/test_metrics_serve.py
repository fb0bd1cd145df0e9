"""``/metrics`` of the dashboard, scraped and parsed with the Prometheus client's parser.

A real nats-server; the dashboard runs in the test's event loop (uvicorn on a free
port). Every metric :mod:`aqe.metrics` names is present, and each moves when the log
does: test results appended and folded, a workflow started, a poison message parked
on the dead-letter stream by a projection runner, a bridge node's status changing.
"""

from __future__ import annotations

import asyncio
import os
import time
import urllib.request
from pathlib import Path

import pytest
from nats.aio.client import Client
from prometheus_client.parser import text_string_to_metric_families

from aqe.dashboard import serve
from aqe.events import TestCaseExecuted, TestRunFinished, TestRunStarted
from aqe.log.jetstream import JetStreamEventLog
from aqe.metrics import METRIC_NAMES
from aqe.projections import CatalogProjection, ProjectionRunner, SnapshotStore
from aqe.projections.deadletter import JetStreamDeadLetters
from aqe.workflows._store import start_instance
from support.waiting import until

pytestmark = [pytest.mark.nats, pytest.mark.timeout(120)]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(url: str) -> tuple[set[str], Samples]:
    def get() -> str:
        with urllib.request.urlopen(url + "metrics", timeout=10) as response:  # noqa: S310
            assert response.headers["Content-Type"].startswith("text/plain")
            return str(response.read().decode())

    text = await asyncio.to_thread(get)
    families = list(text_string_to_metric_families(text))
    samples: Samples = {}
    for family in families:
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return {f.name for f in families if f.name.startswith("aqe_")}, samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def write_status(path: Path, lag: int, rtt_ms: float) -> None:
    """A bridge node's status snapshot in the layout :mod:`aqe.bridge.node` writes (one link)."""
    from aqe.bridge.status import SNAPSHOT_VERSION, write_snapshot

    write_snapshot(
        path,
        {
            "version": SNAPSHOT_VERSION,
            "cluster": "west",
            "pid": os.getpid(),
            "updated_at": time.time(),
            "links": {
                "east": {
                    "peer": "east",
                    "connected": True,
                    "totals": {"lag_events": lag, "lag_ms": 40.0 * lag, "in_flight": lag},
                    "transport": {"rtt_ms": rtt_ms, "connected": True},
                }
            },
        },
    )


async def test_every_metric_is_present_and_moves(nc: Client, tmp_path: Path) -> None:
    log = JetStreamEventLog(nc)
    status = tmp_path / "bridge" / "status.json"
    status.parent.mkdir()
    write_status(status, lag=5, rtt_ms=2.0)
    await log.append(TestCaseExecuted(test_id="t.before", run_id="r0", outcome="passed"))

    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(
        serve(
            log, tmp_path / "projections", port=0, bridge_status=status, on_ready=ready.set_result
        )
    )
    try:
        url = await asyncio.wait_for(ready, 30)
        assert url.startswith("http://127.0.0.1:")  # localhost unless told otherwise

        def folded_tests(samples: Samples) -> float:
            return (
                value(
                    samples, "aqe_events_folded_total", projection="dashboard", stream="AQE_TESTS"
                )
                or 0
            )

        async def first_fold() -> tuple[set[str], Samples] | None:
            names, samples = await scrape(url)
            return (names, samples) if folded_tests(samples) >= 1 else None

        names, before = await until(
            first_fold, "the dashboard folding the first event", timeout_s=30
        )
        assert set(METRIC_NAMES) <= names, set(METRIC_NAMES) - names

        # Move everything: a run of two results, a workflow, a poison parked by a
        # projection runner, the bridge catching up.
        await log.append(TestRunStarted(run_id="r1"))
        await log.append(TestCaseExecuted(test_id="t.a", run_id="r1", outcome="passed"))
        await log.append(TestCaseExecuted(test_id="t.b", run_id="r1", outcome="failed"))
        await log.append(TestRunFinished(run_id="r1", total=2, passed=1, failed=1))
        await start_instance(log, "flaky", {"test_id": "t.b"}, instance_id="flaky-t-b")
        await nc.jetstream().publish("aqe.tests.case.poison.executed", b"{not json", timeout=10)
        projection = CatalogProjection()
        await ProjectionRunner(
            projection,
            log,
            SnapshotStore(projection, tmp_path / "catalog"),
            JetStreamDeadLetters(nc),
        ).run()
        write_status(status, lag=0, rtt_ms=1.25)

        last: list[Samples] = [{}]

        async def moved() -> Samples | None:
            _, after = await scrape(url)
            last[0] = after
            checks = [
                value(after, "aqe_events_appended_total", stream="AQE_TESTS") == 6,
                folded_tests(after) == 6,
                value(
                    after, "aqe_projection_checkpoint", projection="dashboard", stream="AQE_TESTS"
                )
                == 6,
                value(after, "aqe_dead_letters_total") == 1,
                value(after, "aqe_workflow_instances", workflow="flaky", state="running") == 1,
                value(after, "aqe_bridge_lag_events", peer="east") == 0,
                value(after, "aqe_bridge_rtt_seconds", peer="east") == 0.00125,
            ]
            return after if all(checks) else None

        after = await until(
            moved,
            "every metric to follow the log",
            timeout_s=30,
            context=lambda: "\n".join(
                f"{k}: {v}" for k, v in sorted(last[0].items()) if "aqe" in k[0]
            ),
        )
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)

    assert value(before, "aqe_events_appended_total", stream="AQE_TESTS") == 1
    assert value(before, "aqe_dead_letters_total") == 0
    assert value(before, "aqe_workflow_instances", workflow="flaky", state="running") is None
    assert value(before, "aqe_bridge_lag_events", peer="east") == 5
    assert value(before, "aqe_bridge_lag_seconds", peer="east") == 0.2
    assert value(after, "aqe_bridge_lag_seconds", peer="east") == 0.0
    assert value(before, "aqe_bridge_rtt_seconds", peer="east") == 0.002
    # Lag is appended minus folded; the age is the time since the checkpoint moved.
    assert value(after, "aqe_consumer_lag_events", projection="dashboard", stream="AQE_TESTS") == 0
    age_before = value(
        before, "aqe_projection_checkpoint_age_seconds", projection="dashboard", stream="AQE_TESTS"
    )
    age_after = value(
        after, "aqe_projection_checkpoint_age_seconds", projection="dashboard", stream="AQE_TESTS"
    )
    assert age_before is not None
    assert age_after is not None
    assert age_after >= 0
    assert age_after != age_before
