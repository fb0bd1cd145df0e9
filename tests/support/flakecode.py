"""A tiny labelled test-code set for the flakiness model's tests (real code, written here).

Three projects; the flaky tests sleep, start threads, talk to sockets or read the
clock; the others assert on pure computations. Small enough that MiniLM embeds it in
seconds, clear enough that a model trained on it separates it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["tiny_set", "write_tiny_set"]

_FLAKY = [
    "@Test public void test{n}Started() throws Exception {{\n  server.start();\n"
    "  Thread.sleep({ms});\n  assertTrue(server.isRunning());\n}}",
    "@Test public void test{n}Async() throws Exception {{\n"
    "  Future<String> f = executor.submit(task);\n"
    '  assertEquals("done", f.get({ms}, TimeUnit.MILLISECONDS));\n}}',
    "@Test public void test{n}Socket() throws IOException {{\n"
    '  Socket s = new Socket("localhost", port + {ms});\n'
    "  s.getOutputStream().write(1);\n  assertEquals(1, s.getInputStream().read());\n}}",
    "@Test public void test{n}Elapsed() {{\n  long t0 = System.currentTimeMillis();\n"
    "  cache.refresh();\n"
    "  assertTrue(System.currentTimeMillis() - t0 < {ms});\n}}",
]
_STABLE = [
    "@Test public void test{n}Sum() {{\n  assertEquals({ms}, Calculator.add({ms}, 0));\n}}",
    '@Test public void test{n}Upper() {{\n  assertEquals("ABC{ms}", "abc{ms}".toUpperCase());\n}}',
    "@Test public void test{n}ListSize() {{\n  List<Integer> xs = Arrays.asList(1, 2, {ms});\n"
    "  assertEquals(3, xs.size());\n}}",
    '@Test public void test{n}Parse() {{\n  assertEquals({ms}, Integer.parseInt("{ms}"));\n}}',
]


def tiny_set(projects: tuple[str, ...] = ("alpha", "beta", "gamma")) -> list[dict[str, Any]]:
    """4 flaky and 8 stable tests per project, as data-file rows."""
    rows: list[dict[str, Any]] = []
    for p, project in enumerate(projects):
        for i, template in enumerate(_FLAKY):
            n = f"{project.title()}{i}"
            code = template.format(n=n, ms=100 * (p + 1) + i)
            rows.append(
                {
                    "project": project,
                    "test": f"{project}.FlakyTest-t{i}",
                    "code": code,
                    "flaky": True,
                }
            )
        for i in range(8):
            n = f"{project.title()}{i}"
            code = _STABLE[i % 4].format(n=n, ms=10 * p + i)
            rows.append(
                {
                    "project": project,
                    "test": f"{project}.StableTest-t{i}",
                    "code": code,
                    "flaky": False,
                }
            )
    return rows


def write_tiny_set(path: Path) -> Path:
    """The tiny set as a JSON-lines file."""
    path.write_text("".join(json.dumps(r) + "\n" for r in tiny_set()), encoding="utf-8")
    return path
