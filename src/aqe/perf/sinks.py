"""Where alerts go: stdout, a JSON webhook (Slack-compatible), Alertmanager's v2 API.

Every sink takes an :class:`AlertMessage` and says what happened (``printed``, an HTTP
status). :func:`aqe.perf.pipeline.deliver` calls each sink once per alert and state and
records a :class:`~aqe.events.perf.PerfAlertDelivered`, so a sink is not handed the
same alert twice; a sink that fails (refused, timed out, a 5xx) is tried again on the
next delivery round.

* **webhook**: ``POST`` of ``{"text": ..., "attachments": [...], "aqe": {...}}``: Slack
  incoming webhooks read ``text`` and ``attachments``; ``aqe`` carries the fields,
  ``dedup_key`` included, for other receivers.
* **alertmanager**: ``POST <url>/api/v2/alerts`` with a list of one alert
  (``labels``, ``annotations``, ``startsAt``, ``endsAt`` when resolved,
  ``generatorURL``); the ``change_id`` label makes Alertmanager group and deduplicate it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Literal, Protocol, TextIO

import msgspec

from aqe.errors import ConfigError

__all__ = [
    "AlertMessage",
    "AlertSink",
    "AlertmanagerSink",
    "DeliveryError",
    "StdoutSink",
    "WebhookSink",
    "alertmanager_payload",
    "webhook_payload",
]


class DeliveryError(Exception):
    """A sink could not take the alert now (it is tried again next round)."""


class AlertMessage(msgspec.Struct, frozen=True, kw_only=True):
    """One alert in one state, as sinks see it."""

    change_id: str
    state: Literal["firing", "resolved"]
    summary: str
    benchmark: str
    metric: str
    machine_class: str
    direction: str
    magnitude: float
    confidence: float
    commit_before: str
    commit_after: str
    started_at_ns: int = 0
    resolved_at_ns: int = 0
    resolved_commit: str = ""


class AlertSink(Protocol):
    """A place alerts are handed to."""

    name: str

    async def send(self, message: AlertMessage) -> str:
        """Hand the alert over; returns what the sink answered.

        Raises:
            DeliveryError: it did not take it (try again later).
        """
        ...


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat().replace("+00:00", "Z")


def webhook_payload(message: AlertMessage) -> dict[str, object]:
    """The JSON body a webhook receives (Slack-compatible ``text`` and ``attachments``)."""
    resolved = message.state == "resolved"
    title = ("[RESOLVED] " if resolved else "[FIRING] ") + message.summary
    color = "good" if resolved or message.direction == "improvement" else "danger"
    return {
        "text": title,
        "attachments": [
            {
                "color": color,
                "fields": [
                    {"title": "benchmark", "value": message.benchmark, "short": False},
                    {"title": "change", "value": f"x{message.magnitude:.3f}", "short": True},
                    {"title": "confidence", "value": f"{message.confidence:.4f}", "short": True},
                    {
                        "title": "commits",
                        "value": f"{message.commit_before}..{message.commit_after}",
                        "short": False,
                    },
                ],
            }
        ],
        "aqe": {**msgspec.to_builtins(message), "dedup_key": message.change_id},
    }


def alertmanager_payload(
    message: AlertMessage, *, generator_url: str = ""
) -> list[dict[str, object]]:
    """The body of ``POST /api/v2/alerts``: one postable alert."""
    alert: dict[str, object] = {
        "labels": {
            "alertname": "PerfRegression"
            if message.direction == "regression"
            else "PerfImprovement",
            "change_id": message.change_id,
            "benchmark": message.benchmark,
            "metric": message.metric,
            "machine_class": message.machine_class,
            "severity": "warning" if message.direction == "regression" else "info",
        },
        "annotations": {
            "summary": message.summary,
            "magnitude": f"{message.magnitude:.4f}",
            "confidence": f"{message.confidence:.4f}",
            "commits": f"{message.commit_before}..{message.commit_after}",
        },
    }
    if message.started_at_ns:
        alert["startsAt"] = _iso(message.started_at_ns)
    if message.state == "resolved" and message.resolved_at_ns:
        alert["endsAt"] = _iso(message.resolved_at_ns)
    if generator_url:
        alert["generatorURL"] = generator_url
    return [alert]


def _post(url: str, body: object, timeout_s: float) -> str:
    data = json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - the URL is the operator's configured sink
        url, data=data, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            return str(response.status)
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"{url}: HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DeliveryError(f"{url}: {exc}") from exc


def _check_url(url: str, what: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{what}: {url!r} is not an http(s) URL")
    return url


class StdoutSink:
    """Prints one line per alert."""

    name = "stdout"

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    async def send(self, message: AlertMessage) -> str:
        """Print the alert's line."""
        out = self.stream or sys.stdout
        mark = "RESOLVED" if message.state == "resolved" else "ALERT"
        out.write(f"{mark} {message.change_id}: {message.summary}\n")
        out.flush()
        return "printed"


class WebhookSink:
    """POSTs :func:`webhook_payload` to a URL."""

    def __init__(self, url: str, *, timeout_s: float = 10.0, name: str = "webhook") -> None:
        self.url = _check_url(url, "webhook")
        self.timeout_s = timeout_s
        self.name = name

    async def send(self, message: AlertMessage) -> str:
        """POST the alert."""
        return await asyncio.to_thread(_post, self.url, webhook_payload(message), self.timeout_s)


class AlertmanagerSink:
    """POSTs :func:`alertmanager_payload` to ``<url>/api/v2/alerts``."""

    def __init__(self, url: str, *, timeout_s: float = 10.0, generator_url: str = "") -> None:
        self.url = _check_url(url, "alertmanager").rstrip("/") + "/api/v2/alerts"
        self.timeout_s = timeout_s
        self.generator_url = generator_url
        self.name = "alertmanager"

    async def send(self, message: AlertMessage) -> str:
        """POST the alert."""
        body = alertmanager_payload(message, generator_url=self.generator_url)
        return await asyncio.to_thread(_post, self.url, body, self.timeout_s)
