"""Headless Chromium driven over the Chrome DevTools Protocol, for the browser tests.

The system's Chromium (Debian package ``chromium``, ``/usr/bin/chromium``; ``.ci/run``
installs it) is started with ``--remote-debugging-port=0``; the port it picked is read
from ``DevToolsActivePort`` in its profile directory, and one page target is driven
through a websocket (the ``websockets`` package's synchronous client). No browser is
downloaded, nothing else is needed.

:class:`Chromium` records what a page did while it loaded: console messages at error
level, uncaught exceptions and the URL of every network request, so a test can assert
there were none outside localhost.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")

CHARTS_DRAWN = """(() => {
  const charts = [...document.querySelectorAll('.chart')].map(
    e => [e.id, e.querySelectorAll('.main-svg .trace path, .main-svg image').length]);
  return charts.length > 0 && charts.every(c => c[1] > 0) && charts;
})()"""
"""JavaScript: ``[[chart id, marks drawn], ...]`` once every ``.chart`` element holds
drawn Plotly marks (bars and lines are paths, a heatmap an image), else false."""
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def find_chromium() -> str | None:
    """The Chromium executable (``AQE_CHROMIUM`` or the first on ``PATH``), or None."""
    explicit = os.environ.get("AQE_CHROMIUM")
    if explicit:
        return explicit if os.path.exists(explicit) else None
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def artifacts_dir(default: Path) -> Path:
    """Where screenshots go: ``AQE_ARTIFACTS_DIR`` or ``default``; created."""
    root = Path(os.environ.get("AQE_ARTIFACTS_DIR") or default)
    root.mkdir(parents=True, exist_ok=True)
    return root


@dataclass
class PageLog:
    """What one page did since :meth:`Chromium.open` (or :meth:`Chromium.clear`)."""

    console_errors: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def foreign_requests(self) -> list[str]:
        """Requests that left the machine (not localhost, not a data: or file: URL)."""
        out = []
        for url in self.requests:
            parsed = urlparse(url)
            if parsed.scheme in {"data", "file", "blob", "about", "chrome", "devtools"}:
                continue
            if (parsed.hostname or "") in LOCAL_HOSTS:
                continue
            out.append(url)
        return out

    def problems(self) -> list[str]:
        """Console errors and uncaught exceptions, one line each."""
        return [*self.console_errors, *self.exceptions]


class CdpError(RuntimeError):
    """A DevTools command failed or the browser went away."""


class Chromium:
    """One headless Chromium with one page, at ``width`` x ``height``."""

    def __init__(self, executable: str, *, width: int = 1280, height: int = 800) -> None:
        from websockets.sync.client import connect

        self.width, self.height = width, height
        self._exits = contextlib.ExitStack()
        self._profile = tempfile.mkdtemp(prefix="aqe-chromium-")
        self._stderr = open(os.path.join(self._profile, "stderr.log"), "wb")  # noqa: SIM115
        self._proc = subprocess.Popen(
            [
                executable,
                "--headless=new",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
                f"--user-data-dir={self._profile}",
                f"--window-size={width},{height}",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--metrics-recording-only",
                "--no-sandbox",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )
        try:
            port = self._wait_port(timeout_s=60.0)
            page_ws = self._page_target(port, timeout_s=30.0)
            self._ws = self._exits.enter_context(connect(page_ws, max_size=None, open_timeout=30))
        except BaseException:
            self.close()
            raise
        self._ids = itertools.count(1)
        self._events: list[dict[str, Any]] = []
        self.log = PageLog()
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.send(f"{domain}.enable")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    # -- process ---------------------------------------------------------------------

    def _stderr_tail(self) -> str:
        with contextlib.suppress(OSError):
            return Path(self._profile, "stderr.log").read_text(errors="replace")[-2000:]
        return ""

    def _wait_port(self, timeout_s: float) -> int:
        marker = Path(self._profile, "DevToolsActivePort")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise CdpError(
                    f"chromium exited with {self._proc.returncode}: {self._stderr_tail()}"
                )
            with contextlib.suppress(OSError, ValueError, IndexError):
                return int(marker.read_text().splitlines()[0])
            time.sleep(0.05)
        raise CdpError(f"chromium did not open its DevTools port in {timeout_s} s")

    @staticmethod
    def _page_target(port: int, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            url = f"http://127.0.0.1:{port}/json/list"
            with (
                contextlib.suppress(OSError, ValueError),
                urllib.request.urlopen(url, timeout=5) as r,
            ):
                for target in json.load(r):
                    if target.get("type") == "page":
                        return str(target["webSocketDebuggerUrl"])
            if time.monotonic() > deadline:
                raise CdpError("chromium has no page target")
            time.sleep(0.05)

    def close(self) -> None:
        """Close the connection, stop the browser (SIGTERM, then SIGKILL) and remove its profile."""
        with contextlib.suppress(Exception):
            self._exits.close()
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        self._stderr.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- protocol --------------------------------------------------------------------

    def _record(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        params = message.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in {"error", "assert"}:
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            self.log.console_errors.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            desc = details.get("exception", {}).get("description") or details.get("text")
            self.log.exceptions.append(f"uncaught: {desc}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.log.console_errors.append(
                f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}"
            )
        elif method == "Network.requestWillBeSent":
            self.log.requests.append(params["request"]["url"])
        self._events.append(message)

    def _receive(self, timeout_s: float) -> dict[str, Any]:
        try:
            raw = self._ws.recv(timeout=timeout_s)
        except TimeoutError:
            raise
        except Exception as exc:
            raise CdpError(f"DevTools connection lost: {exc}; {self._stderr_tail()}") from exc
        message: dict[str, Any] = json.loads(raw)
        return message

    def send(self, method: str, timeout_s: float = 30.0, **params: Any) -> dict[str, Any]:
        """Run one DevTools command and return its result."""
        ident = next(self._ids)
        self._ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CdpError(f"{method}: no answer in {timeout_s} s")
            try:
                message = self._receive(left)
            except TimeoutError:
                continue
            if message.get("id") == ident:
                if "error" in message:
                    raise CdpError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self._record(message)

    def pump(self, seconds: float) -> None:
        """Record events arriving within ``seconds``."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                self._record(self._receive(left))
            except TimeoutError:
                return

    def wait_event(self, method: str, timeout_s: float) -> dict[str, Any]:
        """The next event named ``method`` (recording everything else on the way)."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = self._receive(left)
            except TimeoutError:
                break
            self._record(message)
            if message.get("method") == method:
                return message
        raise CdpError(f"no {method} in {timeout_s} s")

    # -- page ------------------------------------------------------------------------

    def clear(self) -> None:
        """Forget what was recorded so far."""
        self.log = PageLog()
        self._events.clear()

    def open(self, url: str, timeout_s: float = 60.0) -> float:
        """Navigate to ``url`` and wait for its load event; seconds it took."""
        self.clear()
        started = time.perf_counter()
        result = self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise CdpError(f"{url}: {result['errorText']}")
        self.wait_event("Page.loadEventFired", timeout_s)
        return time.perf_counter() - started

    def evaluate(self, expression: str, timeout_s: float = 30.0) -> Any:
        """The value of a JavaScript expression (awaited if it is a promise)."""
        result = self.send(
            "Runtime.evaluate",
            timeout_s=timeout_s,
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
        )
        if "exceptionDetails" in result:
            raise CdpError(f"{expression[:80]}: {result['exceptionDetails'].get('text')}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout_s: float, every_s: float = 0.02) -> Any:
        """Poll a JavaScript expression until it is truthy and return its value."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s} s waiting for {expression!r}")
            self.pump(every_s)

    def screenshot(self, path: Path) -> Path:
        """Save a PNG of the viewport (``width`` x ``height``) to ``path``."""
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=False)[
            "data"
        ]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


@contextlib.contextmanager
def chromium_or_skip(width: int = 1280, height: int = 800) -> Iterator[Chromium]:
    """A :class:`Chromium`, or ``pytest.skip`` naming why none can run here."""
    import pytest

    executable = find_chromium()
    if executable is None:
        pytest.skip("no Chromium on PATH (apt-get install chromium; .ci/run installs it)")
    with Chromium(executable, width=width, height=height) as browser:
        yield browser
