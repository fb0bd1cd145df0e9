"""Bridge status snapshots: reading, writing, health (staleness), summaries, rendering."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import msgspec
import pytest
from rich.console import Console

from aqe.bridge.status import (
    SNAPSHOT_VERSION,
    STALE_INTERVALS,
    assess,
    describe,
    inbound_views,
    link_views,
    pid_alive,
    read_snapshot,
    render_status,
    stale_after_s,
    write_snapshot,
)
from aqe.errors import BridgeError

NOW = 1_800_000_000.0
HOST = "bridge-host"


def chain(sent: int, acked: int, *, in_flight: int = 0, lag_ms: float = 0.0) -> dict[str, Any]:
    return {
        "sent_seq": sent,
        "acked_seq": acked,
        "in_flight": in_flight,
        "lag_events": sent - acked,
        "lag_ms": lag_ms,
        "frames_sent": sent,
        "events_acked": acked,
        "rewinds": 0,
        "ready": True,
        "last_error": "",
    }


def link(peer: str, chains: dict[str, dict[str, Any]], **extra: Any) -> dict[str, Any]:
    values = list(chains.values())
    return {
        "address": f"127.0.0.1:74{len(peer)}{ord(peer[0]) % 10}",
        "cluster": "a",
        "peer": peer,
        "connected": True,
        "reconnects": 0,
        "last_error": "",
        "chains": chains,
        "totals": {
            "frames_sent": sum(c["frames_sent"] for c in values),
            "events_acked": sum(c["events_acked"] for c in values),
            "in_flight": sum(c["in_flight"] for c in values),
            "lag_events": sum(c["lag_events"] for c in values),
            "lag_ms": max((c["lag_ms"] for c in values), default=0.0),
        },
        "relays": {"enabled": True, "started": 0, "finished": 0, "events_sent": 0, "active": []},
        "peer_marks": {},
        "transport": {
            "handshakes": 3,
            "full_handshakes": 1,
            "zero_rtt_attempts": 2,
            "zero_rtt_accepted": 1,
            "last_handshake_ms": 1.5,
            "connected": True,
        },
        **extra,
    }


def inbound_chain(applied: int, events: int, peer: str, at_ns: int = 0) -> dict[str, Any]:
    return {
        "applied_seq": applied,
        "batches": 1 if events else 0,
        "events": events,
        "duplicates_skipped": 1,
        "gaps": 0,
        "conflicts": 0,
        "commit_retries": 1 if events else 0,
        "last_applied_at_ns": at_ns,
        "peer": peer,
    }


def snapshot(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "version": SNAPSHOT_VERSION,
        "cluster": "a",
        "state": "running",
        "error": None,
        "pid": 4242,
        "host": HOST,
        "config": "/ops/bridge/a.toml",
        "nats_url": "nats://127.0.0.1:4251",
        "streams": ["AQE_TESTS", "AQE_PATTERNS"],
        "partitions": 2,
        "listen": {"host": "127.0.0.1", "port": 7451},
        "status_interval_s": 0.5,
        "started_at": NOW - 60,
        "updated_at": NOW - 0.2,
        "server": {
            "connections": 2,
            "refused": 1,
            "streams_opened": 9,
            "streams_failed": 0,
            "zero_rtt_accepted": 1,
        },
        "inbound": {
            "cluster": "a",
            "refused_streams": 0,
            "chains": {
                "b/AQE_TESTS/0": inbound_chain(40, 20, "b", int((NOW - 3) * 1e9)),
                "b/AQE_TESTS/1": inbound_chain(38, 18, "b", int((NOW - 5) * 1e9)),
                "c/AQE_TESTS/0": inbound_chain(7, 7, "b"),
                "c/AQE_PATTERNS/1": inbound_chain(0, 0, "c"),
            },
            "peer_marks": {},
        },
        "links": {
            "b": link(
                "b",
                {
                    "a/AQE_TESTS/0": chain(120, 118, in_flight=2, lag_ms=12.5),
                    "a/AQE_TESTS/1": chain(119, 119),
                    "a/AQE_PATTERNS/0": chain(0, 0),
                    "a/AQE_PATTERNS/1": chain(5, 5),
                },
            ),
            "c": link(
                "c",
                {"a/AQE_TESTS/0": chain(0, 0), "a/AQE_TESTS/1": chain(0, 0)},
                connected=False,
                reconnects=4,
                last_error="bridge peer c at 127.0.0.1:7453 refused the connection",
            ),
        },
    }
    base.update(changes)
    return base


def always(_: int) -> bool:
    return True


def never(_: int) -> bool:
    return False


# -- health -------------------------------------------------------------------------------------


def test_running_when_fresh_and_alive() -> None:
    health = assess(snapshot(), now=NOW, alive=always, hostname=HOST)
    assert health.state == "running"
    assert health.ok
    assert health.age_s == pytest.approx(0.2)
    assert "process 4242" in health.reason


def test_stale_after_a_few_missed_intervals() -> None:
    limit = stale_after_s(0.5)
    assert limit >= STALE_INTERVALS * 0.5
    fresh = snapshot(updated_at=NOW - limit)
    assert assess(fresh, now=NOW, alive=always, hostname=HOST).state == "running"
    old = snapshot(updated_at=NOW - limit - 0.01)
    health = assess(old, now=NOW, alive=always, hostname=HOST)
    assert health.state == "stale"
    assert not health.ok
    assert "no update for" in health.reason
    assert "written every 0.5 s" in health.reason


def test_the_stale_limit_follows_the_interval() -> None:
    assert stale_after_s(10.0) > stale_after_s(1.0) > stale_after_s(0.1)
    slow = snapshot(status_interval_s=10.0, updated_at=NOW - 20)
    assert assess(slow, now=NOW, alive=always, hostname=HOST).state == "running"


def test_dead_when_the_process_is_gone_even_if_recent() -> None:
    asked: list[int] = []

    def alive(pid: int) -> bool:
        asked.append(pid)
        return False

    health = assess(snapshot(), now=NOW, alive=alive, hostname=HOST)
    assert health.state == "dead"
    assert asked == [4242]
    assert "process 4242 is gone" in health.reason
    old = snapshot(updated_at=NOW - 3600)
    assert assess(old, now=NOW, alive=never, hostname=HOST).state == "dead"


def test_pid_not_checked_for_a_snapshot_from_another_host() -> None:
    health = assess(snapshot(), now=NOW, alive=never, hostname="elsewhere")
    assert health.state == "running"
    assert f"on {HOST}" in health.reason
    old = snapshot(updated_at=NOW - 3600)
    assert assess(old, now=NOW, alive=never, hostname="elsewhere").state == "stale"


def test_stopped_and_failed_are_final() -> None:
    stopped = assess(snapshot(state="stopped"), now=NOW, alive=never, hostname=HOST)
    assert stopped.state == "stopped"
    assert "stopped cleanly" in stopped.reason
    failed = assess(
        snapshot(state="failed", error="bridge a->b: the link failed: boom"),
        now=NOW,
        alive=never,
        hostname=HOST,
    )
    assert failed.state == "failed"
    assert "boom" in failed.reason
    assert not failed.ok


def test_clock_skew_gives_no_negative_age() -> None:
    health = assess(snapshot(updated_at=NOW + 5), now=NOW, alive=always, hostname=HOST)
    assert health.age_s == 0.0
    assert health.state == "running"


def test_pid_alive() -> None:
    assert pid_alive(os.getpid())
    assert not pid_alive(0)
    assert not pid_alive(-5)
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    assert not pid_alive(pid_max + 1)


# -- summaries ----------------------------------------------------------------------------------


def test_link_views() -> None:
    b, c = link_views(snapshot())
    assert b.peer == "b"
    assert b.connected
    assert b.lag_events == 2
    assert b.lag_ms == 12.5
    assert b.in_flight == 2
    assert b.events_acked == 118 + 119 + 5
    assert b.sent_seq == {"AQE_PATTERNS": 5, "AQE_TESTS": 120}
    assert b.acked_seq == {"AQE_PATTERNS": 5, "AQE_TESTS": 119}
    assert (b.zero_rtt_accepted, b.zero_rtt_attempts) == (1, 2)
    assert b.last_error == ""
    assert c.peer == "c"
    assert not c.connected
    assert c.reconnects == 4
    assert "refused" in c.last_error
    assert c.sent_seq == {"AQE_TESTS": 0}


def test_link_views_tolerate_missing_parts() -> None:
    [view] = link_views({"links": {"b": {"address": "h:1"}}})
    assert view.peer == "b"
    assert not view.connected
    assert (view.lag_events, view.zero_rtt_accepted, view.sent_seq) == (0, 0, {})


def test_inbound_views_group_partitions() -> None:
    views = {(v.origin, v.stream): v for v in inbound_views(snapshot())}
    assert sorted(views) == [("b", "AQE_TESTS"), ("c", "AQE_PATTERNS"), ("c", "AQE_TESTS")]
    b = views[("b", "AQE_TESTS")]
    assert b.events == 38
    assert b.applied_seq == 40
    assert b.duplicates_skipped == 2
    assert b.commit_retries == 2  # a retry after no commit reply is not a duplicate
    assert b.last_applied_at == pytest.approx(NOW - 3)
    assert b.via == ("b",)
    relayed = views[("c", "AQE_TESTS")]
    assert relayed.via == ("b",)  # c's events that came through b
    assert views[("c", "AQE_PATTERNS")].last_applied_at is None


def test_describe_adds_derived_fields_and_stays_json() -> None:
    described = describe(snapshot(), now=NOW, alive=always, hostname=HOST)
    assert described["cluster"] == "a"
    assert described["links"]["b"]["chains"]  # the snapshot itself is kept
    derived = described["derived"]
    assert derived["health"] == {
        "state": "running",
        "age_s": pytest.approx(0.2),
        "reason": derived["health"]["reason"],
        "ok": True,
    }
    assert derived["links_connected"] == 1
    assert derived["links_total"] == 2
    assert derived["links"]["b"]["acked_seq"] == {"AQE_PATTERNS": 5, "AQE_TESTS": 119}
    assert derived["links"]["c"]["connected"] is False
    assert {(v["origin"], v["stream"]) for v in derived["inbound"]} == {
        ("b", "AQE_TESTS"),
        ("c", "AQE_TESTS"),
        ("c", "AQE_PATTERNS"),
    }
    assert json.loads(msgspec.json.encode(described)) == json.loads(json.dumps(described))


# -- the file -----------------------------------------------------------------------------------


def test_write_then_read(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    write_snapshot(path, snapshot())
    assert read_snapshot(path) == snapshot()
    write_snapshot(path, snapshot(state="stopped"))
    assert read_snapshot(path)["state"] == "stopped"
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]  # no temporary left


def test_write_failure_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "status.json"
    with pytest.raises(BridgeError, match=r"missing/status\.json: cannot write the bridge status"):
        write_snapshot(path, snapshot())


def test_read_missing(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    with pytest.raises(BridgeError, match=r"status\.json: no bridge status yet"):
        read_snapshot(path)


@pytest.mark.parametrize("content", [b"", b"{not json", b"[1, 2]", b'{"cluster": "a"}'])
def test_read_garbage(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "status.json"
    path.write_bytes(content)
    with pytest.raises(BridgeError, match=r"status\.json: not a bridge status snapshot"):
        read_snapshot(path)


# -- rendering ----------------------------------------------------------------------------------


def rendered(snap: dict[str, Any], **kwargs: Any) -> str:
    out = io.StringIO()
    console = Console(file=out, width=220, color_system=None, highlight=False)
    kwargs.setdefault("alive", always)
    kwargs.setdefault("hostname", HOST)
    render_status(describe(snap, now=NOW, **kwargs), console, now=NOW)
    return out.getvalue()


def rows(text: str, first: str) -> list[list[str]]:
    """The cells of table rows whose first cell is ``first``."""
    found = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if cells and cells[0] == first:
            found.append(cells)
    return found


def test_render_running_node() -> None:
    text = rendered(snapshot())
    assert "bridge a  running  process 4242 updated 0.2 s ago" in text
    assert "listening on 127.0.0.1:7451" in text
    assert "links 1/2 connected" in text
    [b_link] = rows(text, "b 127.0.0.1:7418")
    assert b_link == ["b 127.0.0.1:7418", "up", "2", "12.5", "2", "242", "0", "1/2"]
    [c_link] = rows(text, "c 127.0.0.1:7419")
    assert c_link[1:3] == ["down", "0"]
    assert c_link[6] == "4"
    assert "c: last error: bridge peer c at 127.0.0.1:7453 refused the connection" in text
    b_rows = rows(text, "b")
    assert ["b", "AQE_TESTS", "120", "119"] in b_rows
    assert ["b", "AQE_PATTERNS", "5", "5"] in b_rows
    assert "inbound connections: 2 accepted (1 with 0-RTT), 1 refused; 9 streams" in text
    assert ["b", "AQE_TESTS", "40", "38", "2", "0", "0", "3.0 s ago"] in b_rows
    # c's events that came through b say so.
    assert ["c via b", "AQE_TESTS", "7", "7", "1", "0", "0", "-"] in rows(text, "c via b")


def test_render_fits_a_narrow_terminal() -> None:
    out = io.StringIO()
    console = Console(file=out, width=80, color_system=None)
    render_status(describe(snapshot(), now=NOW, alive=always, hostname=HOST), console, now=NOW)
    text = out.getvalue()
    assert "…" not in text
    assert "AQE_PATTERNS" in text


def test_render_relays() -> None:
    snap = snapshot()
    snap["links"]["b"]["relays"]["active"] = ["c/AQE_TESTS/0", "c/AQE_TESTS/1"]
    assert "b: relaying 2 chain(s)" in rendered(snap)


@pytest.mark.parametrize(
    ("changes", "alive", "headline"),
    [
        ({"updated_at": NOW - 30}, always, "bridge a  stale  no update for 30.0 s"),
        ({}, never, "bridge a  dead  process 4242 is gone without a clean stop"),
        ({"state": "stopped"}, never, "bridge a  stopped  stopped cleanly at"),
        ({"state": "failed", "error": "boom"}, never, "bridge a  failed  failed at"),
    ],
)
def test_render_unhealthy_headline(changes: dict[str, Any], alive: Any, headline: str) -> None:
    text = rendered(snapshot(**changes), alive=alive)
    assert headline in text


def test_render_failed_shows_the_error() -> None:
    text = rendered(snapshot(state="failed", error="the link failed: boom"), alive=never)
    assert "error: the link failed: boom" in text


def test_render_without_peers_or_inbound() -> None:
    text = rendered(snapshot(links={}, inbound=None, server=None))
    assert "no outgoing links" in text
    assert "no outgoing links (no [[peers]] configured)" in text
    assert "inbound connections: 0 accepted" in text
    assert "sequences" not in text


def test_render_escapes_markup_in_errors() -> None:
    snap = snapshot()
    snap["links"]["c"]["last_error"] = "bad [red]thing[/red]"
    assert "bad [red]thing[/red]" in rendered(snap)
