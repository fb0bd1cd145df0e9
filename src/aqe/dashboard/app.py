"""The live dashboard: a Starlette app whose page is updated by server-sent events.

Routes:

* ``GET /`` the page (Plotly.js from ``/static/plotly.min.js``, served from the
  ``plotly`` package: nothing is fetched from outside);
* ``GET /events`` a ``text/event-stream``: one ``update`` event with every view at
  once, then one each time the log moves (coalesced to at most one per ``min_gap_s``)
  carrying the views that changed, and a comment every 15 s to keep proxies from
  closing it;
* ``GET /api/state`` the same payload once, as JSON;
* ``GET /metrics`` Prometheus metrics (:mod:`aqe.metrics`);
* ``GET /healthz``.

Read-only by default: any other method is refused with 403, and with a token
(``aqe serve --token``) a request that writes must carry ``Authorization: Bearer
<token>``. There is no writing route yet; the rule is in place for the first.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from aqe.report.html import CSS

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from aqe.dashboard.live import LiveView
    from aqe.metrics import AqeMetrics

__all__ = ["PAGE", "create_app"]

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_SCRIPT = """
const main = document.querySelector('main');
const status = document.getElementById('status');
const config = {responsive: true, displaylogo: false};
function cardOf(item) {
  return document.getElementById(item.kind === 'table' ? item.key : 'card-' + item.key);
}
function apply(update) {
  for (const s of update.sections) {
    let sec = document.getElementById('section-' + s.key);
    if (!sec) {
      sec = document.createElement('section');
      sec.id = 'section-' + s.key;
      const h = document.createElement('h2');
      h.textContent = s.title;
      sec.appendChild(h);
      main.appendChild(sec);
    }
    for (const item of s.items) {
      let card = cardOf(item);
      const holder = document.createElement('div');
      holder.innerHTML = item.html;
      const fresh = holder.firstElementChild;
      if (!card) { sec.appendChild(fresh); card = fresh; }
      else if (item.kind === 'table') { card.replaceWith(fresh); }
      else {
        card.querySelector('h3').textContent = fresh.querySelector('h3').textContent;
        card.querySelector('.source').textContent = fresh.querySelector('.source').textContent;
      }
      if (item.kind === 'figure') Plotly.react(item.key, item.data, item.layout, config);
    }
  }
  status.dataset.version = update.version;
  status.dataset.events = update.events;
  status.dataset.lastSeq = JSON.stringify(update.last_seq);
  status.textContent = 'live · ' + update.events.toLocaleString() + ' events followed · ' +
    Object.entries(update.last_seq).map(([k, v]) => k + ' ' + v).join(' · ') +
    (update.last_event ? ' · last: ' + update.last_event : '');
}
const source = new EventSource('events');
source.addEventListener('update', (e) => apply(JSON.parse(e.data)));
source.onerror = () => { status.textContent = 'reconnecting…'; };
"""

PAGE = (
    "<!DOCTYPE html>\n"
    '<html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    '<link rel="icon" href="data:,">'  # no favicon request
    f"<title>aqe dashboard</title><style>{CSS}</style>"
    '<script src="static/plotly.min.js"></script></head><body>'
    '<header><h1>aqe dashboard</h1><p id="status" data-version="0">connecting…</p></header>'
    f"<main></main><script>{_SCRIPT}</script></body></html>\n"
)
"""The page: empty until the first ``update`` event fills it."""


def create_app(
    live: LiveView,
    metrics: AqeMetrics,
    *,
    token: str | None = None,
    min_gap_s: float = 0.1,
    keepalive_s: float = 15.0,
) -> Starlette:
    """The ASGI app over a :class:`~aqe.dashboard.live.LiveView` (started by the caller)."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
    from starlette.responses import HTMLResponse, PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Route

    from aqe.metrics import CONTENT_TYPE
    from aqe.report.html import plotly_js

    async def page(_: Request) -> Response:
        return HTMLResponse(PAGE)

    async def plotly(_: Request) -> Response:
        return Response(
            plotly_js(),
            media_type="text/javascript",
            headers={"Cache-Control": "max-age=86400"},
        )

    async def state(_: Request) -> Response:
        return Response(live.payload(), media_type="application/json")

    async def scrape(_: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    async def events(request: Request) -> Response:
        async def stream() -> AsyncIterator[bytes]:
            seen = -1
            sent: dict[str, bytes] = {}  # this page's items as last sent
            while not await request.is_disconnected():
                version = await live.wait_change(seen, keepalive_s)
                if live.closed:  # the server stops
                    return
                if version == seen:
                    yield b": keepalive\n\n"
                    continue
                seen = version
                yield b"event: update\ndata: " + live.payload(sent) + b"\n\n"
                await asyncio.sleep(min_gap_s)  # coalesce bursts: one update per gap

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    class ReadOnly(BaseHTTPMiddleware):
        async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
            if request.method in _SAFE_METHODS:
                return await call_next(request)
            if token is None:
                return PlainTextResponse(
                    "read-only dashboard (start it with --token to allow writes)", 403
                )
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return PlainTextResponse("missing or wrong bearer token", 401)
            return await call_next(request)

    routes: list[Any] = [
        Route("/", page),
        Route("/static/plotly.min.js", plotly),
        Route("/events", events),
        Route("/api/state", state),
        Route("/healthz", healthz),
        Route("/metrics", scrape),
    ]
    return Starlette(routes=routes, middleware=[Middleware(ReadOnly)])
