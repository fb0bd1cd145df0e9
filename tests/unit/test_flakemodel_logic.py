"""The flakiness model's pure parts: data files, code signals, threshold, folds, artefact."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from aqe.errors import ConfigError, DataSetError, ReportError
from aqe.flakemodel.data import TestCode, load_tests
from aqe.flakemodel.evaluate import evaluate, splits
from aqe.flakemodel.features import (
    HISTORY_FEATURES,
    SIGNAL_NAMES,
    code_tokens,
    history_features,
    keyword_rule,
    signal_counts,
    signal_matrix,
)
from aqe.flakemodel.inputs import TAIL_CHARS, Blocks, code_views, input_matrix
from aqe.flakemodel.model import FlakeModel, HeadConfig, best_f1_threshold, inner_folds
from aqe.flakemodel.pysource import pytest_source
from support.flakecode import tiny_set

SAMPLE = Path(__file__).parents[1] / "sample_project"

SLEEPY = """@Test public void testServerStarts() throws Exception {
  Thread t = new Thread(server); t.start();
  Thread.sleep(500);
  assertTrue(server.isRunning());
}"""
PLAIN = """@Test public void testAdd() {
  assertEquals(4, Calc.add(2, 2));
}"""


def write_jsonl(path: Path, rows: list[object], *, gz: bool = False) -> Path:
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    if gz:
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


def test_load_tests_reads_plain_and_gzip(tmp_path: Path) -> None:
    rows = [
        {"project": "p", "test": "A-t1", "code": SLEEPY, "flaky": True},
        {"project": "p", "test": "A-t2", "code": "", "flaky": False},
    ]
    for gz in (False, True):
        path = write_jsonl(tmp_path / ("d.jsonl.gz" if gz else "d.jsonl"), rows, gz=gz)
        tests = load_tests(path, labelled=True)
        assert [(t.test, t.flaky) for t in tests] == [("A-t1", True), ("A-t2", False)]


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ('{"project": "p", "test": "t", "code": 3}', "code"),
        ("not json", "not a JSON object"),
        ('{"project": "", "test": "t", "code": "x"}', "`project` is empty"),
        ('{"project": "p", "test": "t", "code": "x"}', "`flaky` is missing"),
    ],
)
def test_bad_lines_name_file_line_and_field(tmp_path: Path, line: str, needle: str) -> None:
    good = {"project": "p", "test": "t0", "code": "x", "flaky": False}
    path = write_jsonl(tmp_path / "bad.jsonl", [good, line])
    with pytest.raises(DataSetError) as info:
        load_tests(path, labelled=True)
    assert isinstance(info.value, ReportError)
    assert f"{path}:2:" in str(info.value)
    assert needle in str(info.value)


def test_empty_or_unreadable_files_are_errors(tmp_path: Path) -> None:
    with pytest.raises(DataSetError, match="no tests"):
        load_tests(write_jsonl(tmp_path / "e.jsonl", []))
    bad = tmp_path / "x.jsonl.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(DataSetError, match="cannot read"):
        load_tests(bad)


def test_signals_read_java_and_python() -> None:
    counts = signal_counts(SLEEPY)
    assert counts["sleep"] == 1
    assert counts["thread"] >= 2
    assert counts["assert"] == 1
    py = "def test_x():\n    time.sleep(0.1)\n    r = random.random()\n    assert r"
    assert signal_counts(py)["sleep"] == 1
    assert signal_counts(py)["random"] == 2  # random.random: both words
    m = signal_matrix([SLEEPY, PLAIN])
    assert m.shape == (2, len(SIGNAL_NAMES))
    assert m[0, SIGNAL_NAMES.index("sleep")] == pytest.approx(np.log1p(1))
    assert m[1, SIGNAL_NAMES.index("sleep")] == 0


def test_keyword_rule_and_tokens() -> None:
    assert keyword_rule(SLEEPY)
    assert not keyword_rule(PLAIN)
    assert code_tokens("waitForHTTPServer(max_retries)") == [
        "wait",
        "for",
        "http",
        "server",
        "max",
        "retries",
    ]


def test_history_features_from_a_history_row() -> None:
    assert not history_features(None).any()
    row = {
        "runs": 9,
        "skips": 1,
        "failures": 2,
        "errors": 0,
        "flip_rate": 0.5,
        "retried_passes": 3,
        "flaky_commits": ["c1", "c2"],
        "duration_p50_s": 1.0,
        "duration_p95_s": 3.0,
    }
    f = dict(zip(HISTORY_FEATURES, history_features(row).tolist(), strict=True))
    assert f["flip_rate"] == 0.5
    assert f["retried_pass_rate"] == pytest.approx(3 / 9)
    assert f["fail_rate"] == pytest.approx(2 / 8)
    assert f["same_commit_flips_log"] == pytest.approx(np.log1p(2))
    assert f["duration_spread"] == pytest.approx(np.log1p(3.0))


def test_long_codes_get_a_tail_view() -> None:
    short = code_views(PLAIN)
    assert short == (PLAIN, None)
    long_code = "\n".join(f"  line{i}();" for i in range(400)) + "\n  Thread.sleep(5);\n}"
    head, tail = code_views(long_code)
    assert head == long_code
    assert tail is not None
    assert len(tail) <= TAIL_CHARS
    assert tail.endswith("Thread.sleep(5);\n}")
    assert tail.startswith("  line")  # cut at a line start


def test_input_matrix_blocks() -> None:
    emb = np.ones((2, 4), dtype=np.float32)
    both = Blocks(embedding=True, signals=True)
    x = input_matrix(both, [SLEEPY, PLAIN], emb)
    assert x.shape == (2, 4 + len(SIGNAL_NAMES))
    assert both.names(4)[:2] == ["emb0", "emb1"]
    with pytest.raises(ValueError, match="one vector per code"):
        input_matrix(both, [SLEEPY], emb)
    hist = Blocks(embedding=False, signals=False, history=True)
    assert input_matrix(hist, [PLAIN], None).shape == (1, len(HISTORY_FEATURES))


def test_best_f1_threshold_separates_when_it_can() -> None:
    y = np.array([False, False, True, True, False])
    p = np.array([0.1, 0.2, 0.9, 0.8, 0.3])
    t = best_f1_threshold(y, p)
    assert 0.3 < t < 0.8
    assert best_f1_threshold(np.zeros(3, dtype=bool), p[:3]) == 0.5
    # Ties are never split: every row with the cut's probability is on one side.
    tie = best_f1_threshold(np.array([True, False, True]), np.array([0.5, 0.5, 0.1]))
    assert tie <= 0.1 or tie > 0.5 or tie == pytest.approx(0.3)


def test_inner_folds_hold_out_whole_groups_or_stratify() -> None:
    y = np.array([True, False] * 30)
    groups = [f"p{i % 6}" for i in range(60)]
    folds = inner_folds(y, groups, 3, seed=0)
    assert sorted(np.concatenate(folds).tolist()) == list(range(60))
    for val in folds:
        held = {groups[i] for i in val}
        assert all(groups[i] not in held for i in np.setdiff1d(np.arange(60), val))
    strat = inner_folds(y, None, 3, seed=0)
    assert all(y[v].sum() == 10 for v in strat)


def _separable(n: int = 120) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(3)
    y = np.arange(n) % 6 == 0
    x = rng.standard_normal((n, 5)).astype(np.float32)
    x[:, 0] += np.where(y, 3.0, -1.0)
    groups = [f"p{i % 4}" for i in range(n)]
    return x, y, groups


@pytest.mark.slow  # the torch MLP head: importing torch alone is 10-20 s on a loaded machine
@pytest.mark.timeout(300)
def test_model_learns_and_round_trips_by_digest() -> None:
    x, y, groups = _separable()
    config = HeadConfig(hidden=8, epochs=30, batch_size=64, lr=1e-2, seed=1)
    model = FlakeModel.fit(x, y, columns=[f"c{i}" for i in range(5)], groups=groups, config=config)
    p = model.predict_proba(x)
    flagged = p >= model.threshold
    assert (flagged & y).sum() / y.sum() > 0.8
    assert (flagged & ~y).sum() < 10
    again = FlakeModel.from_bytes(model.to_bytes())
    assert again.digest == model.digest
    assert again.model_id == f"fm-{model.digest[:16]}"
    assert np.array_equal(again.predict_proba(x), p)
    # Same data, same seed: the same bytes.
    twin = FlakeModel.fit(x, y, columns=[f"c{i}" for i in range(5)], groups=groups, config=config)
    assert twin.digest == model.digest


def test_model_refuses_bad_inputs() -> None:
    x, y, _ = _separable(30)
    with pytest.raises(ConfigError, match="flaky and non-flaky"):
        FlakeModel.fit(x, np.zeros(30, dtype=bool), columns=[f"c{i}" for i in range(5)])
    with pytest.raises(ConfigError, match="columns"):
        FlakeModel.fit(x, y, columns=["a"])
    with pytest.raises(ConfigError, match="not a flakiness model"):
        FlakeModel.from_bytes(b"\x01\x02")


def test_pytest_source_from_node_ids() -> None:
    src = pytest_source("check_random.py::test_fails_half_of_runs", SAMPLE)
    assert src.startswith("def test_fails_half_of_runs")
    assert 'draw("half")' in src
    with pytest.raises(ConfigError, match="no test"):
        pytest_source("check_random.py::test_nope", SAMPLE)
    with pytest.raises(ConfigError, match="not a pytest node id"):
        pytest_source("check_random.py", SAMPLE)
    with pytest.raises(ConfigError, match="cannot read"):
        pytest_source("missing.py::test_x", SAMPLE)


def test_linear_head_is_the_default_and_round_trips() -> None:
    x, y, groups = _separable()
    model = FlakeModel.fit(x, y, columns=[f"c{i}" for i in range(5)], groups=groups)
    assert model.config.hidden == 0
    p = model.predict_proba(x)
    flagged = p >= model.threshold
    assert (flagged & y).sum() / y.sum() > 0.8
    assert (flagged & ~y).sum() < 10
    assert np.array_equal(FlakeModel.from_bytes(model.to_bytes()).predict_proba(x), p)


def test_evaluate_protocols_with_baselines() -> None:
    tests = [TestCode(**row) for row in tiny_set()]
    per = splits(tests, "per-project")
    assert [name for name, _, _ in per] == ["alpha", "beta", "gamma"]
    assert all(not set(tr) & set(te) for _, tr, te in per)
    cv = splits(tests, "cv", folds=4)
    assert sorted(np.concatenate([te for _, _, te in cv]).tolist()) == list(range(36))
    blocks = Blocks(embedding=False, signals=True)
    x = input_matrix(blocks, [t.code for t in tests], None)
    report = evaluate(
        tests,
        "per-project",
        methods=["keyword", "logreg", "signals"],
        inputs={"signals": (x, blocks.names(0))},
    )
    assert report.anchor_f1 == 0.73
    keyword, logreg, signals = report.methods
    assert keyword.pooled.recall == 1.0
    assert keyword.pooled.tests == 36
    assert set(keyword.per_project) == {"alpha", "beta", "gamma"}
    assert signals.pooled.f1 == 1.0
    assert 0.0 <= logreg.pooled.pr_auc <= 1.0
    with pytest.raises(ConfigError, match="needs its input matrix"):
        evaluate(tests, "cv", methods=["minilm"], folds=4)


def test_predictions_projection_rebuild_equals_incremental() -> None:
    from aqe.events import Envelope
    from aqe.events.flakemodel import FlakeModelTrained, FlakinessPredicted
    from aqe.events.learning import PolicyTrained
    from aqe.flakemodel.projection import PredictionsProjection
    from aqe.log.subjects import subject_for

    def trained(n: int) -> FlakeModelTrained:
        digest = f"{n:064x}"
        return FlakeModelTrained(
            model_id=f"fm-{digest[:16]}",
            digest=digest,
            bucket="AQE_MODELS",
            object_name=digest,
            size_bytes=10,
            threshold=0.3,
        )

    def predicted(test: str, p: float, model: FlakeModelTrained) -> FlakinessPredicted:
        return FlakinessPredicted(
            test_id=test,
            model_id=model.model_id,
            digest=model.digest,
            probability=p,
            flaky=p >= 0.3,
            threshold=0.3,
            input_digest="c0de",
        )

    m1, m2 = trained(1), trained(2)
    events = [
        m1,
        predicted("a.py::t1", 0.9, m1),
        PolicyTrained(policy_id="p", algorithm="x", seed=0, feature_version=1),
        predicted("a.py::t2", 0.1, m1),
        m2,
        predicted("a.py::t1", 0.2, m2),
    ]
    envs = [
        Envelope(
            stream="AQE_LEARNING",
            seq=i + 1,
            subject=subject_for(e),
            event_id=str(i),
            event_type=e.type_tag(),
            recorded_at_ns=i,
            data=e.to_json(),
        )
        for i, e in enumerate(events)
    ]
    proj = PredictionsProjection()
    whole = proj.initial()
    for env in envs:
        whole = proj.apply(whole, env, env.decode())
    half = proj.initial()
    for env in envs[:3]:
        half = proj.apply(half, env, env.decode())
    half = proj.decode(proj.encode(half))  # a snapshot in between
    for env in envs[3:]:
        half = proj.apply(half, env, env.decode())
    assert proj.encode(half) == proj.encode(whole)
    assert whole.latest_model() is not None
    assert whole.latest_model().model_id == m2.model_id  # type: ignore[union-attr]
    assert whole.predictions["a.py::t1"].probability == 0.2
    assert whole.predictions["a.py::t1"].model_id == m2.model_id
    assert not whole.predictions["a.py::t2"].flaky
