"""Learning from the history in the log, end to end: eval, train, prioritize, subset."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Runner = Callable[..., Any]  # the `aqe` fixture in conftest.py

pytestmark = pytest.mark.nats


def junit(path: Path, failing: set[str]) -> Path:
    cases = []
    for name, seconds in (("a", 1.0), ("b", 2.0), ("c", 3.0), ("d", 4.0)):
        body = '<failure message="boom">trace</failure>' if name in failing else ""
        cases.append(
            f'<testcase classname="pkg.T" name="{name}" time="{seconds}">{body}</testcase>'
        )
    path.write_text('<testsuite name="s">' + "".join(cases) + "</testsuite>", encoding="utf-8")
    return path


@pytest.fixture
def history(aqe: Runner, tmp_path: Path) -> None:
    # pkg.T.c fails in most runs, pkg.T.b now and then, a and d never.
    for i in range(8):
        failing = {"c"} if i % 4 else {"c", "b"}
        report = junit(tmp_path / f"r{i}.xml", failing)
        result = aqe("ingest", str(report), "--run-id", f"run-{i}", "-q", "--no-fold")
        assert result.code == 0, result.err


def test_prioritize_and_subset_from_the_log(aqe: Runner, history: None) -> None:
    order = aqe("prioritize", "--json").json()
    assert [r["test_id"] for r in order][:2] == ["pkg.T.c", "pkg.T.b"]
    plain = aqe("prioritize")
    assert plain.code == 0
    assert plain.out.splitlines()[0] == "pkg.T.c"
    half = aqe("subset", "--budget", "50%", "--json").json()
    assert [r["test_id"] for r in half] == ["pkg.T.c", "pkg.T.b"]  # 3 s + 2 s of 10 s
    bad = aqe("subset", "--budget", "half")
    assert bad.code == 2
    assert "--budget" in bad.err


def test_train_records_experience_and_saves_a_policy(aqe: Runner, history: None) -> None:
    trained = aqe("learn", "train", "--algo", "q-learning", "--seed", "3", "--json")
    assert trained.code == 0, trained.err
    meta = trained.json()
    assert meta["algorithm"] == "q-learning"
    assert meta["cycles"] == 8
    assert meta["trained_until_seq"] > 0
    assert meta["events"] == 9  # 8 cycles of experience + the trained-policy fact
    listed = aqe("learn", "list", "--json").json()
    assert [p["policy_id"] for p in listed] == [meta["policy_id"]]
    order = aqe("prioritize", "--policy", meta["policy_id"], "--json").json()
    assert len(order) == 4
    assert aqe("consume", "experience", "-q").code == 0
    verify = aqe("replay", "experience", "--verify")
    assert verify.code == 0, verify.out + verify.err
    again = aqe("learn", "train", "--algo", "q-learning", "--seed", "3", "--json").json()
    assert again["policy_id"] == meta["policy_id"]
    # Same history, same seed: the experience is the same facts (deduplicated); only the
    # new training itself is a new fact.
    assert again["events"] == 1


def test_eval_prints_every_requested_algorithm(aqe: Runner, history: None) -> None:
    rows = aqe("learn", "eval", "--algo", "failure-count", "--json").json()
    assert rows[0]["policy"] == "failure-count"
    assert rows[0]["failing_cycles"] == 8
    assert rows[0]["mean_apfd"] > 0.5
    unknown = aqe("learn", "eval", "--algo", "alphazero")
    assert unknown.code == 2
