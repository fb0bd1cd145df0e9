"""Learning from the history in the log, end to end: eval, train, prioritize, subset."""

from __future__ import annotations

import shutil
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
    bucket, digest = meta["artefact"].split("/")
    assert (listed[0]["bucket"], listed[0]["digest"]) == (bucket, digest)
    order = aqe("prioritize", "--policy", meta["policy_id"], "--json").json()
    assert len(order) == 4
    # the local directory is only a cache: without it the policy comes from the store
    shutil.rmtree(meta["cache"])
    fetched = aqe("prioritize", "--policy", meta["policy_id"], "--json")
    assert fetched.code == 0, fetched.err
    assert fetched.json() == order
    assert Path(meta["cache"]).is_dir()
    unknown = aqe("prioritize", "--policy", "no-such-policy")
    assert unknown.code == 2
    assert "names no policy" in unknown.err
    # an offline learner fits on that policy's experience from the projection
    qid = meta["policy_id"]
    dt = aqe("learn", "train", "--algo", "decision-transformer", "--from-experience", qid, "--json")
    assert dt.code == 0, dt.err
    dt_meta = dt.json()
    assert dt_meta["trained_on"] == f"experience:{qid}"
    assert dt_meta["transitions"] == 32  # 8 cycles x 4 tests
    assert dt_meta["events"] == 1
    ranked = aqe("prioritize", "--policy", dt_meta["policy_id"], "--json").json()
    assert len(ranked) == 4
    online = aqe("learn", "train", "--algo", "ppo", "--from-experience", qid)
    assert online.code == 2
    assert "offline" in online.err
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
    by_name = {r["policy"]: r for r in rows}
    assert set(by_name) == {"failure-count", "random (expected)"}
    assert by_name["failure-count"]["failing_cycles"] == 8
    assert by_name["failure-count"]["mean"]["mean_apfd"] > 0.5
    assert by_name["random (expected)"]["mean"]["mean_apfd"] == 0.5
    unknown = aqe("learn", "eval", "--algo", "alphazero")
    assert unknown.code == 2
    no_rows = aqe("learn", "eval", "--algo", "failure-count", "--protocol", "rows")
    assert no_rows.code == 2
    assert "--dataset" in no_rows.err


def pytest_junit(path: Path, failing: set[str]) -> Path:
    """A report as pytest's --junitxml writes it (xunit2: no file attribute)."""
    cases = []
    for name, seconds in (("test_z", 1.0), ("test_f", 2.0), ("test_a", 3.0), ("test_m", 4.0)):
        body = '<failure message="boom">trace</failure>' if name in failing else ""
        cases.append(
            f'<testcase classname="tests.test_m" name="{name}" time="{seconds}">{body}</testcase>'
        )
    path.write_text(
        '<testsuites><testsuite name="pytest">' + "".join(cases) + "</testsuite></testsuites>",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def pytest_history(aqe: Runner, tmp_path: Path) -> None:
    # test_f fails every run; the rest never, and ran in the order z, f, a, m.
    for i in range(3):
        report = pytest_junit(tmp_path / f"p{i}.xml", {"test_f"})
        result = aqe("ingest", str(report), "--run-id", f"py-{i}", "-q", "--no-fold")
        assert result.code == 0, result.err


NODE = "tests/test_m.py::"


def test_subset_speaks_pytest_node_ids(aqe: Runner, pytest_history: None, tmp_path: Path) -> None:
    # Node ids mapped back from pytest's JUnit classname; ties keep the runs' own order.
    order = aqe("prioritize")
    assert order.code == 0, order.err
    assert order.out.splitlines() == [NODE + n for n in ("test_f", "test_z", "test_a", "test_m")]
    assert aqe("prioritize", "--format", "ids").out.splitlines()[0] == "tests.test_m.test_f"
    assert aqe("prioritize", "--format", "junit-classnames").out.splitlines() == ["tests.test_m"]

    # `pytest --collect-only -q` output as it is: a new test is reported and always in.
    collected = f"{NODE}test_a\n{NODE}test_new\n{NODE}test_f\n\n3 tests collected in 0.01s\n"
    rest = tmp_path / "rest.txt"
    chosen = aqe("subset", "--budget", "1%", "--tests", "-", "--rest", str(rest), input=collected)
    assert chosen.code == 0, chosen.err
    assert chosen.out.splitlines() == [NODE + "test_new"]
    assert "1 of 3 tests are not in the history" in chosen.err
    assert f"{NODE}test_new" in chosen.err
    assert rest.read_text().splitlines() == [NODE + "test_f", NODE + "test_a"]

    # Confidence: test_f alone carries most of the expected failures.
    confident = aqe("subset", "--target-confidence", "0.6")
    assert confident.out.splitlines() == [NODE + "test_f"], confident.err
    assert "confidence 0.70" in confident.err

    # Two bins balanced by duration: {m 4 s, z 1 s} and {a 3 s, f 2 s}, priority order kept.
    bins = [
        aqe("subset", "--budget", "100%", "--split-index", f"{k}/2").out.splitlines()
        for k in (1, 2)
    ]
    assert bins == [[NODE + "test_z", NODE + "test_m"], [NODE + "test_f", NODE + "test_a"]]
    assert aqe("subset", "--budget", "100%", "--split-index", "3/2").code == 2
    as_json = aqe("subset", "--budget", "100%", "--format", "json").json()
    assert [r["nodeid"] for r in as_json][:1] == [NODE + "test_f"]
