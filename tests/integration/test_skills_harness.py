"""The example harness itself, on a small skill: order, markers, failure, the server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aqe.skills.examples import run_examples
from aqe.skills.library import load_skill

SKILL = """---
name: tiny
version: 1.0.0
description: A skill whose examples exercise the example harness.
category: operations
tags: [test]
related: []
---

# Tiny

## Level 1: Quick start

```bash
echo first > order.txt
aqe publish agents.agent.registered.v1 -d '{"agent_id": "h1", "role": "runner"}'
```

<!-- aqe-skip: needs a remote CI service -->
```bash
exit 1
```

## Level 2: Core concepts

```python
from pathlib import Path
Path("order.txt").write_text(Path("order.txt").read_text() + "second\\n")
```

## Level 3: Advanced

```bash
aqe events tail --stream AQE_AGENTS --json | grep -q '"h1"'
FAIL_HERE
```

```bash
echo never > never.txt
```
"""


@pytest.mark.timeout(180)
def test_blocks_run_in_order_marks_are_counted_failures_stop(tmp_path: Path) -> None:
    library = tmp_path / "skills"
    (library / "tiny").mkdir(parents=True)
    (library / "tiny" / "SKILL.md").write_text(SKILL)
    (library / "README.md").write_text("- [tiny](tiny/SKILL.md)\n")
    work = tmp_path / "work"
    outcome = run_examples(load_skill(library / "tiny"), work, library=library, timeout_s=120)
    assert [r.status for r in outcome.results] == [
        "passed",
        "marked",
        "passed",
        "failed",
        "not run",
    ]
    assert (work / "order.txt").read_text() == "first\nsecond\n"
    assert not (work / "never.txt").exists()
    failed = outcome.results[3]
    assert failed.exit_code == 127
    assert "FAIL_HERE" in failed.output
    summary = outcome.summary()
    assert (summary["executed"], summary["marked"], summary["not_run"]) == (3, 1, 1)
    assert summary["marks"] == ["needs a remote CI service"]
    # The embedded server the blocks started under the work folder was stopped.
    status = subprocess.run(
        [sys.executable, "-m", "aqe.cli", "server", "status", "--json"],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("AQE_")},
             "AQE_DATA_DIR": str(work / ".aqe")},
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert json.loads(status.stdout)["running"] is False


@pytest.mark.timeout(120)
def test_skills_check_cli_is_green_for_the_shipped_library() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "aqe.cli", "skills", "check", "--json"],
        capture_output=True, text=True, timeout=100, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["problems"] == []
    assert report["skills"] >= 25
    assert report["examples"] > report["marked"] > 0
