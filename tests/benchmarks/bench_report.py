"""How fast ``aqe report`` writes its HTML file, and how fast headless Chromium opens it.

Run with ``just bench`` (or ``python tests/benchmarks/bench_report.py``). Two histories:

* the ABB IOF/ROL data set (``../shared/data/iofrol.csv`` or ``$AQE_IOFROL``: 32,260
  results, 765 runs, 33,790 events), appended to a fresh nats-server;
* ``aqe demo``'s (its embedded server; 30 runs of a 39-test suite, the fleet and the
  flaky workflow's instances); skipped with ``--no-demo``.

For each, in interleaved rounds:

* ``aqe report`` as a fresh process, first with the history projection still to fold
  (cold: the first report of a log) and then up to date (warm);
* in-process, the report (gather the projections and the log reads, build the
  figures, render the HTML) against the baseline of writing the same figures' data
  as one JSON file (same gather, same figures, ``msgspec`` instead of the HTML);
* headless Chromium (``tests/support/browser.py``): from navigation until every
  chart is drawn, against a page holding only the same embedded Plotly.js.

It prints medians and ratios to the baselines measured in the same run; it asserts
no time. Goals (issue 16): generated in under 10 s, opened in under 3 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import nats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aqe.ingest.iofrol import cycle_events, find_iofrol, read_iofrol
from aqe.log import NewEvent, load_stream_specs
from aqe.log.admin import apply_streams
from aqe.log.jetstream import JetStreamEventLog
from aqe.report import build_sections, gather, write_report
from aqe.report.html import plotly_js
from aqe.server import NatsServerProcess
from support.browser import CHARTS_DRAWN, Chromium, find_chromium

AQE = [sys.executable, "-m", "aqe.cli"]


def cli_report(env: dict[str, str], out: Path) -> tuple[float, Path]:
    started = time.perf_counter()
    done = subprocess.run(
        [*AQE, "report", "--out", str(out), "--json"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return time.perf_counter() - started, Path(msgspec.json.decode(done.stdout)["path"])


async def in_process(env: dict[str, str], out: Path) -> tuple[float, float]:
    """(seconds for the HTML report, seconds for the same data as JSON): gather included."""
    from aqe.config import discover

    settings = discover(
        data_dir=Path(env["AQE_DATA_DIR"]), nats_url=env.get("AQE_NATS_URL")
    ).settings
    log = await JetStreamEventLog.connect(settings)
    try:
        root = settings.data_dir / "projections"
        started = time.perf_counter()
        write_report(await gather(log, root), out)
        html_s = time.perf_counter() - started
        started = time.perf_counter()
        sections = build_sections(await gather(log, root))
        (out / "report.json").write_bytes(msgspec.json.encode(sections))
        json_s = time.perf_counter() - started
    finally:
        await log.close()
    return html_s, json_s


def open_times(browser: Chromium, report: Path, blank: Path) -> tuple[float, float]:
    """(seconds until every chart is drawn, seconds to load a page of Plotly.js alone)."""
    started = time.perf_counter()
    browser.open(report.as_uri())
    browser.wait_for(CHARTS_DRAWN, timeout_s=60, every_s=0.01)
    report_s = time.perf_counter() - started
    assert not browser.log.problems(), browser.log.problems()
    assert not browser.log.foreign_requests(), browser.log.foreign_requests()
    started = time.perf_counter()
    browser.open(blank.as_uri())
    browser.wait_for("typeof Plotly === 'object'", timeout_s=60, every_s=0.01)
    return report_s, time.perf_counter() - started


def row(label: str, seconds: str, ratio: str = "") -> None:
    print(f"{label:<58} {seconds:>8} {ratio:>8}")


def measure(
    name: str, env: dict[str, str], work: Path, rounds: int, browser: Chromium | None
) -> None:
    cold_s, path = cli_report(env, work / "cold")
    results: dict[str, list[float]] = {"warm": [], "html": [], "json": [], "open": [], "blank": []}
    blank = work / "plotly-only.html"
    blank.write_text(
        f"<!DOCTYPE html><html><head><script>{plotly_js()}</script></head><body></body></html>"
    )
    for r in range(rounds):  # interleaved so noise hits every side alike
        results["warm"].append(cli_report(env, work / f"warm-{r}")[0])
        html_s, json_s = asyncio.run(in_process(env, work / f"inproc-{r}"))
        results["html"].append(html_s)
        results["json"].append(json_s)
        if browser is not None:
            report_s, blank_s = open_times(browser, path, blank)
            results["open"].append(report_s)
            results["blank"].append(blank_s)
    med = {k: statistics.median(v) for k, v in results.items() if v}
    size = path.stat().st_size / 1e6
    print(f"\n{name}: report.html {size:.1f} MB; medians of {rounds} rounds")
    row("measurement", "seconds", "ratio")
    row("aqe report, cold (folds the history first), one run", f"{cold_s:.2f}")
    row("aqe report, warm (fresh process)", f"{med['warm']:.2f}")
    row("in-process: same figures written as JSON (baseline)", f"{med['json']:.2f}", "1.00x")
    row("in-process: the HTML report", f"{med['html']:.2f}", f"{med['html'] / med['json']:.2f}x")
    if "open" in med:
        row("Chromium: a page of Plotly.js alone (baseline)", f"{med['blank']:.2f}", "1.00x")
        ratio = f"{med['open'] / med['blank']:.2f}x"
        row("Chromium: the report, until every chart is drawn", f"{med['open']:.2f}", ratio)
    goal_gen = "met" if max(cold_s, med["warm"]) < 10 else "NOT met"
    goal_open = "no browser" if "open" not in med else ("met" if med["open"] < 3 else "NOT met")
    print(f"goals: generated < 10 s: {goal_gen}; opened < 3 s: {goal_open}")


async def load_iofrol(url: str, path: Path) -> int:
    nc = await nats.connect(url, pending_size=64 * 1024 * 1024)
    try:
        await apply_streams(nc, load_stream_specs())
        log = JetStreamEventLog(nc, load_stream_specs())
        items = [NewEvent(event=e) for _, events in cycle_events(read_iofrol(path)) for e in events]
        for start in range(0, len(items), 5_000):
            await log.append_batch(items[start : start + 5_000])
        return len(items)
    finally:
        await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="Timed rounds of each measurement.")
    parser.add_argument("--no-demo", action="store_true", help="Skip the aqe demo history.")
    args = parser.parse_args()
    executable = find_chromium()
    if executable is None:
        print("bench_report: no Chromium on PATH; opening times are left out")
    browser = Chromium(executable) if executable else None
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("AQE_")}
    try:
        with tempfile.TemporaryDirectory(prefix="aqe-bench-report-") as tmp:
            work = Path(tmp)
            found = find_iofrol()
            if found is None:
                print("bench_report: IOF/ROL data set not found; skipped")
            else:
                server = NatsServerProcess.start_sync(work / "js", log_file=work / "nats.log")
                try:
                    events = asyncio.run(load_iofrol(server.url, found))
                    print(f"IOF/ROL: {events:,} events appended from {found}")
                    env = base_env | {
                        "AQE_NATS_URL": server.url,
                        "AQE_DATA_DIR": str(work / "iofrol"),
                    }
                    measure(
                        "IOF/ROL (32,260 results, 765 runs)",
                        env,
                        work / "iofrol-out",
                        args.rounds,
                        browser,
                    )
                finally:
                    server.stop_sync(timeout=5.0)
            if not args.no_demo:
                env = base_env | {"AQE_DATA_DIR": str(work / "demo")}
                started = time.perf_counter()
                subprocess.run(
                    [*AQE, "demo", "-q"],
                    env=env,
                    check=True,
                    stdout=subprocess.DEVNULL,
                    timeout=900,
                )
                print(f"\naqe demo: {time.perf_counter() - started:.0f} s")
                try:
                    measure("aqe demo", env, work / "demo-out", args.rounds, browser)
                finally:
                    subprocess.run([*AQE, "server", "stop"], env=env, check=False, timeout=60)
    finally:
        if browser is not None:
            browser.close()


if __name__ == "__main__":
    main()
