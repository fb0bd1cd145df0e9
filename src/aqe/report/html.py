"""One self-contained HTML file: sections of Plotly charts and tables, no network needed.

Plotly.js (the copy the ``plotly`` package ships, :func:`plotly.offline.get_plotlyjs`)
is embedded once; each figure's traces and layout follow as a JSON ``<script>`` block
and one small script draws them all. Nothing is fetched when the file is opened: no
CDN, no fonts, no images.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Sequence

import msgspec

from aqe.report.model import Figure, Section, Table

__all__ = [
    "CSS",
    "STRIP_CSS",
    "card_html",
    "figure_json",
    "plotly_js",
    "render_html",
    "render_section",
]

_ENCODER = msgspec.json.Encoder()

STRIP_CSS = """
.strip{font-family:ui-monospace,monospace;white-space:nowrap;letter-spacing:1px}
.strip span{display:inline-block;width:.8em;text-align:center;color:#fff;
  border-radius:2px;margin-right:1px}
.v-p{background:#2e7d32}.v-r{background:#f9a825}.v-f{background:#c62828}.v-e{background:#6a1b9a}
.v-s{background:#bdbdbd}
"""

CSS = (
    """
body{font-family:system-ui,sans-serif;margin:0;color:#212121;background:#fafafa}
header{background:#263238;color:#eceff1;padding:14px 24px}
header h1{margin:0;font-size:20px}header p{margin:4px 0 0;font-size:13px;color:#b0bec5}
main{padding:8px 24px 40px;max-width:1400px}
section{margin-top:18px}
section>h2{font-size:17px;border-bottom:1px solid #cfd8dc;padding-bottom:4px}
.card{background:#fff;border:1px solid #e0e0e0;border-radius:6px;padding:10px 14px;margin:10px 0}
.card h3{font-size:14px;margin:0 0 4px}
.source{font-size:11px;color:#607d8b;margin:2px 0 6px}
.note{font-size:12px;color:#455a64}
table{border-collapse:collapse;font-size:12px;width:100%}
th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #eeeeee;vertical-align:top}
td.id{font-family:ui-monospace,monospace;word-break:break-all}
nav a{color:#80cbc4;margin-right:12px;font-size:13px}
"""
    + STRIP_CSS
)

_DRAW = """
document.querySelectorAll('script.aqe-figure').forEach(function (el) {
  var fig = JSON.parse(el.textContent);
  Plotly.newPlot(el.dataset.target, fig.data, fig.layout,
                 {responsive: true, displaylogo: false});
});
"""


@functools.cache
def plotly_js() -> str:
    """The minified Plotly.js the ``plotly`` package ships (about 4.8 MB), read once."""
    from plotly.offline import get_plotlyjs

    return str(get_plotlyjs())


def figure_json(figure: Figure) -> str:
    """A figure's ``{"data", "layout"}`` as JSON safe inside a ``<script>`` element."""
    raw = _ENCODER.encode({"data": figure.data, "layout": figure.layout}).decode()
    return raw.replace("</", "<\\/")


def _strip(verdicts: str) -> str:
    cells = "".join(f'<span class="v-{html.escape(v)}">{html.escape(v)}</span>' for v in verdicts)
    return f'<span class="strip">{cells}</span>'


def _table(table: Table) -> str:
    strip_columns = {i for i, c in enumerate(table.columns) if c in table.strips}
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = []
    for row in table.rows:
        cells = []
        for i, cell in enumerate(row):
            if i in strip_columns:
                cells.append(f"<td>{_strip(cell)}</td>")
            elif i == 0:
                cells.append(f'<td class="id">{html.escape(cell)}</td>')
            else:
                cells.append(f"<td>{html.escape(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    note = f'<p class="note">{html.escape(table.note)}</p>' if table.note else ""
    rows = (
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        if body
        else ""
    )
    return (
        f'<div class="card" id="{html.escape(table.key)}"><h3>{html.escape(table.title)}</h3>'
        f'<p class="source">{html.escape(table.source.describe())}</p>{rows}{note}</div>'
    )


def _figure(figure: Figure, *, with_data: bool = True) -> str:
    key = html.escape(figure.key)
    note = f'<p class="note">{html.escape(figure.note)}</p>' if figure.note else ""
    data = (
        f'<script type="application/json" class="aqe-figure" data-target="{key}">'
        f"{figure_json(figure)}</script>"
        if with_data
        else ""
    )
    return (
        f'<div class="card" id="card-{key}"><h3>{html.escape(figure.title)}</h3>'
        f'<p class="source">{html.escape(figure.source.describe())}</p>'
        f'<div class="chart" id="{key}"></div>{note}{data}</div>'
    )


def card_html(item: Figure | Table) -> str:
    """An item's card without figure data (the dashboard draws it with ``Plotly.react``)."""
    return _figure(item, with_data=False) if isinstance(item, Figure) else _table(item)


def render_section(section: Section) -> str:
    """One ``<section>`` with its figures and tables."""
    parts = [_figure(i) if isinstance(i, Figure) else _table(i) for i in section.items]
    note = f'<p class="note">{html.escape(section.note)}</p>' if section.note else ""
    return (
        f'<section id="section-{html.escape(section.key)}"><h2>{html.escape(section.title)}</h2>'
        f"{note}{''.join(parts)}</section>"
    )


def render_html(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The whole report as one HTML document, Plotly.js inlined."""
    nav = "".join(
        f'<a href="#section-{html.escape(s.key)}">{html.escape(s.title)}</a>' for s in sections
    )
    body = "".join(render_section(s) for s in sections)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'  # no favicon request
        f"<title>{html.escape(title)}</title><style>{CSS}</style>"
        f'<script type="text/javascript">{plotly_js()}</script></head><body>'
        f"<header><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p><nav>{nav}</nav></header>"
        f"<main>{body}</main><script>{_DRAW}</script></body></html>\n"
    )
