"""The pure layers import no client library (STYLE: dependencies flow inward).

The subprocess is deliberate: this process has usually imported nats already (the shared
conftest starts servers), so only a fresh interpreter can tell what an import pulls in.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import aqe.events

PURE_MODULES = [
    "aqe.errors",
    "aqe.events",
    "aqe.events.schema",
    "aqe.log",
    "aqe.log.retry",
    "aqe.coordination.lease",
    "aqe.coordination.voting",
    "aqe.coordination.membership",
    "aqe.coordination.agent",
    "aqe.coordination.tasks",
    "aqe.coordination.dispatch",
    "aqe.coordination.topology",
]

_PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(sys.modules)))
"""


def _modules_after_import(*names: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *names],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


def _is_nats(module: str) -> bool:
    return module == "nats" or module.startswith("nats.")


@pytest.mark.parametrize("name", PURE_MODULES)
def test_pure_module_does_not_import_nats(name: str) -> None:
    loaded = _modules_after_import(name)
    assert name in loaded
    assert not sorted(m for m in loaded if _is_nats(m))
    assert "aqe.log.jetstream" not in loaded


def test_all_pure_modules_together_do_not_import_nats() -> None:
    loaded = _modules_after_import(*PURE_MODULES)
    assert not sorted(m for m in loaded if _is_nats(m))


def test_the_probe_does_see_nats_when_imported() -> None:
    # Guards the test above against passing because the probe is blind.
    assert "nats" in _modules_after_import("nats")


def _imports(path: Path) -> list[str]:
    """Every module ``path`` imports by absolute name, anywhere in it."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
    return names


def test_events_package_imports_only_errors_from_aqe() -> None:
    package = Path(aqe.events.__file__).parent
    offenders: list[str] = []
    for path in sorted(package.glob("*.py")):
        for module in _imports(path):
            top = module.split(".")[0]
            inside = module == "aqe.errors" or module.startswith(("aqe.events", "aqe.errors"))
            if (top == "aqe" and not inside) or top == "nats":
                offenders.append(f"{path.name}: {module}")
    assert offenders == []


# Query commands must answer fast (issue 11 item 8): LanceDB alone costs over a second
# to import, torch and sentence-transformers several, numpy a tenth.
HEAVY = ("lancedb", "pyarrow", "torch", "sentence_transformers", "numpy", "tantivy", "aioquic")

_QUERY_PROBE = """
import json, sys
from aqe.cli import main
try:
    main(["--data-dir", sys.argv[1], sys.argv[2], "--offline", "--json"])
except SystemExit as exc:
    assert exc.code == 0, exc.code
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


@pytest.mark.parametrize("command", ["runs", "flaky", "broken", "history"])
def test_query_commands_import_no_heavy_library(tmp_path: Path, command: str) -> None:
    from aqe.projections import Snapshot, SnapshotStore
    from aqe.projections.history import HistoryProjection
    from aqe.projections.tables import tables_current

    # A history whose LanceDB tables are current: the reader could use them, and must not.
    directory = tmp_path / "projections" / "history"
    projection = HistoryProjection()
    SnapshotStore(projection, directory).save(
        Snapshot(state=projection.initial(), checkpoints={"AQE_TESTS": 0})
    )
    assert tables_current(directory, {"AQE_TESTS": 0})
    done = subprocess.run(
        [sys.executable, "-c", _QUERY_PROBE, str(tmp_path), command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stderr.splitlines()[-1]))
    assert "aqe.projections.history" in loaded
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    assert heavy == []


def test_nothing_outside_the_cli_imports_it() -> None:
    # ARCHITECTURE: `cli` may import anything, nothing imports `cli`; the MCP server and
    # the CLI share aqe.app and aqe.queries instead.
    package = Path(aqe.events.__file__).parent.parent
    offenders: list[str] = []
    for path in sorted(package.rglob("*.py")):
        if path.is_relative_to(package / "cli"):
            continue
        offenders += [
            f"{path.relative_to(package)}: {m}"
            for m in _imports(path)
            if m == "aqe.cli" or m.startswith("aqe.cli.")
        ]
    assert offenders == []
