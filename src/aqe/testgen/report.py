"""The test-generation report, in Markdown and HTML (pure: log state in, text out).

Per batch: coverage before and after of each target module and of every measured file
together (line and branch), candidates generated and kept per generator, why the others
were rejected, and each kept test with its gain and code.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Iterable

import msgspec

from aqe.events.testgen import CoverageTotals, GeneratedTestKept, GenerationMeasured
from aqe.testgen.measure import sum_totals
from aqe.testgen.store import GenerationLog

__all__ = ["ModuleRow", "module_rows", "render_html", "render_markdown", "target_files"]


class ModuleRow(msgspec.Struct, frozen=True, kw_only=True):
    """One line of the coverage table."""

    batch_id: str
    module: str
    before: CoverageTotals
    after: CoverageTotals


def target_files(target: str, files: Iterable[str]) -> list[str]:
    """The measured files of a module name (``a.b`` -> ``a/b.py`` or ``a/b/...``)."""
    base = target.replace(".", "/")
    return sorted(
        f
        for f in files
        if f == f"{base}.py" or f.startswith(f"{base}/") or f.endswith(f"/{base}.py")
    )


def module_rows(batch: GenerationMeasured) -> list[ModuleRow]:
    """Coverage before and after per target module, then every measured file together."""
    rows = []
    for target in batch.targets:
        files = target_files(target, batch.before)
        if not files:
            continue
        rows.append(
            ModuleRow(
                batch_id=batch.batch_id,
                module=target,
                before=sum_totals(batch.before[f] for f in files),
                after=sum_totals(batch.after.get(f, batch.before[f]) for f in files),
            )
        )
    rows.append(
        ModuleRow(
            batch_id=batch.batch_id,
            module="(all measured files)",
            before=sum_totals(batch.before.values()),
            after=sum_totals(batch.after.values()),
        )
    )
    return rows


def _pct(t: CoverageTotals) -> tuple[str, str]:
    return f"{t.line_pct:.1f}%", f"{t.branch_pct:.1f}%"


def _kept_of(state: GenerationLog, batch_id: str) -> list[GeneratedTestKept]:
    return [k for k in state.kept.values() if k.batch_id == batch_id]


def _reasons(state: GenerationLog, batch_id: str) -> Counter[str]:
    return Counter(r.reason for r in state.rejected.values() if r.batch_id == batch_id)


def render_markdown(state: GenerationLog, *, title: str = "Test generation") -> str:
    """The report as Markdown."""
    out = [f"# {title}", ""]
    if not state.batches:
        return "\n".join([*out, "No finished generation batch in the log.", ""])
    for batch in state.batches.values():
        out += [
            f"## Batch `{batch.batch_id}`",
            "",
            f"- source: `{batch.source}`; targets: {', '.join(f'`{t}`' for t in batch.targets)}",
            f"- generators: {', '.join(batch.generators)}; seed {batch.seed}; "
            f"kept only after {batch.runs} passing runs in a fresh `{batch.sandbox}` sandbox "
            "and a coverage gain; wall time {:.1f} s".format(batch.wall_s),
        ]
        if batch.instance_id:
            out.append(f"- workflow instance: `{batch.instance_id}`")
        out += [
            "",
            "| module | statements | lines before | lines after | branches | "
            "branches before | branches after |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in module_rows(batch):
            lb, bb = _pct(row.before)
            la, ba = _pct(row.after)
            out.append(
                f"| {row.module} | {row.before.statements} | {lb} | {la} | "
                f"{row.before.branches} | {bb} | {ba} |"
            )
        out += ["", "| generator | generated | kept |", "| --- | ---: | ---: |"]
        for gen in batch.generators:
            out.append(f"| {gen} | {batch.generated.get(gen, 0)} | {batch.kept.get(gen, 0)} |")
        reasons = _reasons(state, batch.batch_id)
        if reasons:
            out += [
                "",
                "Not kept: " + ", ".join(f"{n} {r}" for r, n in sorted(reasons.items())) + ".",
            ]
        kept = _kept_of(state, batch.batch_id)
        out += ["", f"### Kept tests ({len(kept)})", ""]
        if kept:
            out += [
                "| test | target | generator | seed | + lines | + branches |",
                "| --- | --- | --- | ---: | ---: | ---: |",
            ]
            for k in kept:
                out.append(
                    f"| `{k.name}` | {k.target} | {k.generator} | {k.seed} | "
                    f"{k.lines_gained} | {k.branches_gained} |"
                )
            for k in kept:
                out += ["", f"#### `{k.name}`", "", "```python", k.code.rstrip(), "```"]
        out.append("")
    return "\n".join(out)


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em}
td.n{text-align:right}.up{color:#137333;font-weight:600}pre{background:#f6f8fa;padding:.8em;
overflow:auto}
"""


def _cell(text: object, *, num: bool = False, cls: str = "") -> str:
    classes = " ".join(c for c in ("n" if num else "", cls) if c)
    attr = f' class="{classes}"' if classes else ""
    return f"<td{attr}>{html.escape(str(text))}</td>"


def render_html(state: GenerationLog, *, title: str = "Test generation") -> str:
    """The report as one self-contained HTML page (every value escaped)."""
    esc = html.escape
    parts = [
        "<!doctype html>",
        f"<html><head><meta charset='utf-8'><title>{esc(title)}</title>",
        f"<style>{_STYLE}</style></head><body><h1>{esc(title)}</h1>",
    ]
    if not state.batches:
        parts.append("<p>No finished generation batch in the log.</p>")
    for batch in state.batches.values():
        parts.append(f"<h2>Batch <code>{esc(batch.batch_id)}</code></h2>")
        parts.append(
            "<p>source <code>{}</code>; targets {}; generators {}; seed {}; kept only after "
            "{} passing runs in a fresh <code>{}</code> sandbox and a coverage gain; wall "
            "time {:.1f} s</p>".format(
                esc(batch.source),
                esc(", ".join(batch.targets)),
                esc(", ".join(batch.generators)),
                batch.seed,
                batch.runs,
                esc(batch.sandbox),
                batch.wall_s,
            )
        )
        parts.append(
            "<table><tr><th>module</th><th>statements</th><th>lines before</th>"
            "<th>lines after</th><th>branches</th><th>branches before</th>"
            "<th>branches after</th></tr>"
        )
        for row in module_rows(batch):
            lb, bb = _pct(row.before)
            la, ba = _pct(row.after)
            up_l = "up" if row.after.lines > row.before.lines else ""
            up_b = "up" if row.after.taken > row.before.taken else ""
            parts.append(
                "<tr>"
                + _cell(row.module)
                + _cell(row.before.statements, num=True)
                + _cell(lb, num=True)
                + _cell(la, num=True, cls=up_l)
                + _cell(row.before.branches, num=True)
                + _cell(bb, num=True)
                + _cell(ba, num=True, cls=up_b)
                + "</tr>"
            )
        parts.append("</table><table><tr><th>generator</th><th>generated</th><th>kept</th></tr>")
        for gen in batch.generators:
            parts.append(
                "<tr>"
                + _cell(gen)
                + _cell(batch.generated.get(gen, 0), num=True)
                + _cell(batch.kept.get(gen, 0), num=True)
                + "</tr>"
            )
        parts.append("</table>")
        reasons = _reasons(state, batch.batch_id)
        if reasons:
            listed = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
            parts.append(f"<p>Not kept: {esc(listed)}.</p>")
        kept = _kept_of(state, batch.batch_id)
        parts.append(f"<h3>Kept tests ({len(kept)})</h3>")
        for k in kept:
            parts.append(
                f"<details><summary><code>{esc(k.name)}</code>: {esc(k.target)}, "
                f"{esc(k.generator)} (seed {k.seed}), +{k.lines_gained} lines, "
                f"+{k.branches_gained} branches</summary><pre>{esc(k.code)}</pre></details>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)
