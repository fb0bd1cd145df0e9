"""Every example of every skill runs (the harness behind `aqe skills test`).

One test per skill: its fenced bash and python blocks run in order in a fresh folder
against an embedded nats-server started there (stopped at the end); blocks marked
``<!-- aqe-skip: reason -->`` are counted, not run. Minutes in all, so `slow` (CI runs
it after the default suite); `just test-slow -k skills` or `aqe skills test` run it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aqe.skills.examples import run_examples
from aqe.skills.library import Skill, load_library, skills_root

SKILLS = load_library()


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("skill", SKILLS, ids=[s.name for s in SKILLS])
def test_skill_examples_run(skill: Skill, tmp_path: Path) -> None:
    outcome = run_examples(skill, tmp_path / "work", library=skills_root(), timeout_s=420)
    summary = outcome.summary()
    failure = summary["failure"]
    assert failure is None, f"{failure['where']}: exit {failure['exit_code']}\n{failure['output']}"
    assert outcome.ok
    assert summary["executed"] >= 1
    print(f"{skill.name}: {summary['executed']} executed, {summary['marked']} marked")
