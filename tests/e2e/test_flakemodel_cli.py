"""``aqe flaky-model`` and ``aqe flaky --predicted`` end to end: a real nats-server,
the real MiniLM model, the real command in a subprocess."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from support.flakecode import write_tiny_set

Runner = Callable[..., Any]  # the `aqe` fixture in conftest.py

pytestmark = [pytest.mark.nats, pytest.mark.slow, pytest.mark.timeout(600)]

SAMPLE = Path(__file__).parents[1] / "sample_project"


def test_train_predict_and_show_through_the_log(aqe: Runner, tmp_path: Path) -> None:
    data = write_tiny_set(tmp_path / "tiny.jsonl")
    trained = aqe("flaky-model", "train", "--data", str(data), "--epochs", "200", "--json")
    assert trained.code == 0, trained.err
    event = trained.json()
    assert event["model_id"] == "fm-" + event["digest"][:16]
    assert event["bucket"] == "AQE_MODELS"
    assert (event["tests"], event["flaky"]) == (36, 12)

    listed = aqe("flaky-model", "list", "--json").json()
    assert [m["digest"] for m in listed] == [event["digest"]]

    predicted = aqe("flaky-model", "predict", str(data), "--model", event["model_id"], "--json")
    assert predicted.code == 0, predicted.err
    rows = predicted.json()
    assert len(rows) == 36
    assert set(rows[0]) == {"project", "test", "probability", "flaky"}
    hits = sum(r["flaky"] == ("Flaky" in r["test"]) for r in rows)
    assert hits >= 33  # its own training set

    nodes = [
        "check_random.py::test_fails_half_of_runs",
        "check_resources.py::test_counter_race",
        "check_plain.py::test_dict_merge",
    ]
    py = aqe("flaky-model", "predict-pytest", *nodes, "--root", str(SAMPLE), "--json")
    assert py.code == 0, py.err
    scored = py.json()
    assert [r["test"] for r in scored] == nodes
    assert all(0.0 <= r["probability"] <= 1.0 for r in scored)

    shown = aqe("flaky", "--predicted", "--json")
    assert shown.code == 0, shown.err
    flagged = {r["test"] for r in scored if r["flaky"]}
    assert {r["test_id"] for r in shown.json()} == flagged
    table = aqe("flaky", "--predicted")
    assert table.code == 0, table.err


def test_eval_baselines_and_bad_input(aqe: Runner, tmp_path: Path) -> None:
    data = write_tiny_set(tmp_path / "tiny.jsonl")
    result = aqe(
        "flaky-model",
        "eval",
        "--data",
        str(data),
        "--protocol",
        "per-project",
        "--methods",
        "keyword,logreg,signals",
        "--json",
    )
    assert result.code == 0, result.err
    report = result.json()
    assert report["protocol"] == "per-project"
    assert report["anchor_f1"] == 0.73
    assert [m["method"] for m in report["methods"]] == ["keyword", "logreg", "signals"]
    keyword = report["methods"][0]
    assert set(keyword["per_project"]) == {"alpha", "beta", "gamma"}
    assert keyword["pooled"]["tests"] == 36
    assert keyword["pooled"]["recall"] == 1.0  # every flaky one sleeps, waits or connects

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"project": "p", "test": "t", "code": "x", "flaky": true}\n{"project": 1}\n')
    failed = aqe("flaky-model", "train", "--data", str(bad))
    assert failed.code == 2
    assert f"{bad}:2:" in failed.err
