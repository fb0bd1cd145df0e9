"""The vector index's math on small synthetic arrays (no model: these test the index)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aqe.search.vector import TARGET_RECALL, VectorIndex


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def random_unit(n: int, dim: int = 32, seed: int = 1) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal((n, dim)))


def clustered(n: int, dim: int = 32, clusters: int = 50, seed: int = 2) -> np.ndarray:
    """Blobs on the sphere: the structure an IVF index exists for."""
    rng = np.random.default_rng(seed)
    centres = random_unit(clusters, dim, seed + 100)
    which = rng.integers(0, clusters, n)
    return unit(centres[which] + 0.35 * rng.standard_normal((n, dim)) / np.sqrt(dim))


def ids_for(n: int) -> list[str]:
    return [f"p{i:05d}" for i in range(n)]


def brute(vectors: np.ndarray, query: np.ndarray, k: int, mask=None) -> list[str]:
    scores = vectors @ query
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    order = np.argsort(-scores, kind="stable")[:k]
    return [f"p{i:05d}" for i in order if np.isfinite(scores[i])]


def recall(index: VectorIndex, vectors: np.ndarray, queries: np.ndarray, k: int = 10, mask=None):
    found = wanted = 0
    for q in queries:
        got = {pid for pid, _ in index.search(q, k, mask=mask)}
        truth = set(brute(vectors, q, k, mask))
        found += len(got & truth)
        wanted += len(truth)
    return found / wanted


@pytest.fixture(scope="module")
def ivf_data() -> tuple[np.ndarray, np.ndarray, VectorIndex]:
    data = clustered(6000)
    queries = unit(data[:50] + 0.2 * clustered(50, seed=9))
    return data, queries, VectorIndex.build(ids_for(6000), data, exact_max=1000)


def test_exact_matches_brute_force_order_and_scores() -> None:
    data = random_unit(500)
    index = VectorIndex.build(ids_for(500), data)
    query = random_unit(1, seed=7)[0]

    hits = index.search(query, 10)

    assert index.kind == "exact"
    assert [pid for pid, _ in hits] == brute(data, query, 10)
    expected = np.sort(data @ query)[::-1][:10]
    np.testing.assert_allclose([s for _, s in hits], expected, rtol=1e-5)
    assert index.exact(query, 10) == hits


def test_k_larger_than_index_and_k_zero() -> None:
    data = random_unit(7)
    index = VectorIndex.build(ids_for(7), data)

    assert len(index.search(data[0], 50)) == 7
    assert index.search(data[0], 0) == []
    assert index.search(data[0], 1)[0][0] == "p00000"  # a vector is its own best match
    assert len(index) == 7


def test_empty_index_returns_nothing() -> None:
    index = VectorIndex.build([], np.zeros((0, 32), dtype=np.float32))

    assert len(index) == 0
    assert index.search(random_unit(1)[0], 5) == []


def test_mask_only_allowed_rows_and_still_k() -> None:
    data = random_unit(400)
    index = VectorIndex.build(ids_for(400), data)
    query = random_unit(1, seed=3)[0]
    mask = np.zeros(400, dtype=bool)
    mask[::7] = True  # 58 allowed

    hits = index.search(query, 10, mask=mask)

    assert [pid for pid, _ in hits] == brute(data, query, 10, mask)
    assert len(hits) == 10


def test_mask_with_fewer_allowed_rows_than_k() -> None:
    data = random_unit(100)
    index = VectorIndex.build(ids_for(100), data)
    mask = np.zeros(100, dtype=bool)
    mask[[3, 50, 99]] = True

    hits = index.search(data[0], 10, mask=mask)

    assert sorted(pid for pid, _ in hits) == ["p00003", "p00050", "p00099"]
    assert index.search(data[0], 10, mask=np.zeros(100, dtype=bool)) == []


def test_ivf_recall_meets_target_against_exact(ivf_data) -> None:
    data, queries, index = ivf_data

    assert index.kind == "ivf"
    assert index.params["nlist"] == round(2 * np.sqrt(6000))
    assert 1 <= index.nprobe < index.params["nlist"]
    assert index.params["calibration_recall"] >= TARGET_RECALL
    assert recall(index, data, queries) >= TARGET_RECALL


def test_ivf_scores_are_exact_dot_products(ivf_data) -> None:
    data, queries, index = ivf_data
    position = {pid: i for i, pid in enumerate(ids_for(6000))}

    hits = index.search(queries[0], 10)

    scores = [s for _, s in hits]
    assert scores == sorted(scores, reverse=True)
    for pid, score in hits:
        assert score == pytest.approx(float(data[position[pid]] @ queries[0]), abs=1e-5)


def test_ivf_build_is_deterministic(ivf_data) -> None:
    data, queries, index = ivf_data

    again = VectorIndex.build(ids_for(6000), data, exact_max=1000)

    assert again.params == index.params
    assert all(again.search(q, 10) == index.search(q, 10) for q in queries[:10])


@pytest.mark.parametrize("every", [2, 5, 40, 1000])
def test_ivf_mask_keeps_k_and_recall(ivf_data, every: int) -> None:
    data, queries, index = ivf_data
    mask = np.zeros(6000, dtype=bool)
    mask[::every] = True
    allowed = {f"p{i:05d}" for i in np.flatnonzero(mask)}

    for q in queries[:10]:
        hits = index.search(q, 10, mask=mask)
        assert {pid for pid, _ in hits} <= allowed
        assert len(hits) == min(10, len(allowed))
    assert recall(index, data, queries[:20], mask=mask) >= TARGET_RECALL


def test_unclustered_data_stays_exact() -> None:
    # Uniform directions have no lists worth probing: IVF would read most rows anyway.
    data = random_unit(3000, dim=64)

    index = VectorIndex.build(ids_for(3000), data, exact_max=500)

    assert index.kind == "exact"
    assert "ivf_rejected" in index.params


@pytest.mark.parametrize("kind", ["exact", "ivf"])
def test_save_load_round_trip(tmp_path: Path, ivf_data, kind: str) -> None:
    data, queries, _ = ivf_data
    index = VectorIndex.build(ids_for(6000), data, exact_max=1000 if kind == "ivf" else 10_000)
    index.save(tmp_path / "vectors")

    loaded = VectorIndex.load(tmp_path / "vectors")

    assert loaded.kind == kind
    assert len(loaded) == 6000
    assert loaded.params == index.params
    mask = np.arange(6000) % 3 == 0
    for q in queries[:10]:
        assert loaded.search(q, 10) == index.search(q, 10)
        assert loaded.search(q, 10, mask=mask) == index.search(q, 10, mask=mask)


def test_save_replaces_an_earlier_index(tmp_path: Path) -> None:
    VectorIndex.build(ids_for(300), random_unit(300)).save(tmp_path)
    data = random_unit(20, seed=5)
    VectorIndex.build(ids_for(20), data).save(tmp_path)

    loaded = VectorIndex.load(tmp_path)

    assert len(loaded) == 20
    assert loaded.search(data[4], 1)[0][0] == "p00004"


def test_load_without_params_is_not_an_index(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"params\.json"):
        VectorIndex.load(tmp_path)


def test_bad_input_is_rejected() -> None:
    data = random_unit(10)
    with pytest.raises(ValueError, match="unique"):
        VectorIndex.build(["a"] * 10, data)
    with pytest.raises(ValueError, match="ids for"):
        VectorIndex.build(ids_for(9), data)
    with pytest.raises(ValueError, match="2-d"):
        VectorIndex.build(ids_for(10), data[0])
    with pytest.raises(ValueError, match="NaN"):
        VectorIndex.build(ids_for(10), np.full((10, 32), np.nan, dtype=np.float32))
    index = VectorIndex.build(ids_for(10), data)
    with pytest.raises(ValueError, match="dimensions"):
        index.search(np.ones(5, dtype=np.float32), 3)
    with pytest.raises(ValueError, match="mask"):
        index.search(data[0], 3, mask=np.ones(4, dtype=bool))


def test_ivf_mask_that_follows_the_content(ivf_data) -> None:
    # A category filter is not random: it selects a region of the space.
    data, queries, index = ivf_data
    mask = data @ data[123] > 0.3
    allowed = {f"p{i:05d}" for i in np.flatnonzero(mask)}
    assert 10 < len(allowed) < 3000

    for q in queries[:10]:
        hits = index.search(q, 10, mask=mask)
        assert {pid for pid, _ in hits} <= allowed
        assert len(hits) == 10
    assert recall(index, data, queries, mask=mask) >= TARGET_RECALL


# -- faiss backing: one copy, changes without a rebuild, retraining on drift -----------


def test_params_name_the_backend_and_the_index_holds_the_only_copy(ivf_data) -> None:
    data, _, index = ivf_data

    assert index.params["backend"] == "faiss"
    assert index.params["structure"] == "IndexIVFFlat"
    assert index.params["precision"] == "float32"
    assert index.params["dim"] == 32
    assert index.params["count"] == 6000
    assert not any(isinstance(v, np.ndarray) and v.size >= data.size for v in vars(index).values())
    ids, vectors = index._vectors()
    assert ids == ids_for(6000)
    np.testing.assert_array_equal(vectors, data)


def test_add_without_retraining_is_searchable_and_masks_follow_ids(ivf_data) -> None:
    data, queries, _ = ivf_data
    index = VectorIndex.build(ids_for(6000)[:5000], data[:5000], exact_max=1000)
    trained = index.params["nlist"], index._centroids.copy()

    index.add(ids_for(6000)[5000:], data[5000:])

    assert len(index) == 6000
    assert index.ids == ids_for(6000)
    assert "rebuilt" not in index.params  # 6000 <= 2 * 5000: no retraining
    assert (index.params["nlist"], index._centroids.tolist()) == (trained[0], trained[1].tolist())
    assert index.search(data[5500], 1)[0][0] == "p05500"
    kept_lists = index._lists.copy()
    index._refresh()  # what faiss holds agrees with the bookkeeping the add updated
    np.testing.assert_array_equal(index._lists, kept_lists)
    assert recall(index, data, queries) >= TARGET_RECALL
    mask = np.arange(6000) >= 5000
    assert {pid for pid, _ in index.search(data[10], 10, mask=mask)} <= set(ids_for(6000)[5000:])
    with pytest.raises(ValueError, match="already in the index"):
        index.add(["p00001"], data[:1])
    with pytest.raises(ValueError, match="dimensions"):
        index.add(["new"], np.ones((1, 5), dtype=np.float32))


def test_remove_drops_rows_and_masks_align_with_the_remaining_ids(ivf_data) -> None:
    data, queries, _ = ivf_data
    index = VectorIndex.build(ids_for(6000), data, exact_max=1000)
    gone = ids_for(6000)[:3000:3]

    index.remove(gone)

    kept = [pid for pid in ids_for(6000) if pid not in set(gone)]
    assert index.ids == kept
    assert len(index) == 5000
    assert "p00000" not in index
    assert all(pid not in set(gone) for q in queries for pid, _ in index.search(q, 10))
    assert index.search(data[0], 1)[0][0] != "p00000"
    mask = np.array([int(pid[1:]) % 2 == 0 for pid in kept])
    hits = index.search(queries[0], 10, mask=mask)
    assert len(hits) == 10
    assert all(int(pid[1:]) % 2 == 0 and pid not in set(gone) for pid, _ in hits)
    with pytest.raises(KeyError, match="not in the index"):
        index.remove(["p00000"])


def test_growing_past_twice_the_trained_count_retrains(ivf_data) -> None:
    data, queries, _ = ivf_data
    index = VectorIndex.build(ids_for(6000)[:2500], data[:2500], exact_max=1000)
    lists_before = index.params["nlist"]

    index.add(ids_for(6000)[2500:], data[2500:])

    assert "6000 rows, trained on 2500" in index.params["rebuilt"]
    assert index.params["trained_count"] == 6000
    assert index.params["nlist"] > lists_before
    assert index.ids == ids_for(6000)
    assert recall(index, data, queries) >= TARGET_RECALL


def test_exact_grows_into_ivf_and_shrinks_back(ivf_data) -> None:
    data, queries, _ = ivf_data
    index = VectorIndex.build(ids_for(6000)[:800], data[:800], exact_max=1000)
    assert index.kind == "exact"

    index.add(ids_for(6000)[800:], data[800:])

    assert index.kind == "ivf"
    assert recall(index, data, queries) >= TARGET_RECALL
    index.remove(ids_for(6000)[:5500])
    assert index.kind == "exact"
    assert index.ids == ids_for(6000)[5500:]
    assert index.search(data[5999], 1)[0][0] == "p05999"


def test_uneven_additions_retrain(ivf_data) -> None:
    # Every new row lands near one centroid: that list swells until the index retrains.
    data, _, _ = ivf_data
    index = VectorIndex.build(ids_for(6000), data, exact_max=1000)
    near = unit(data[:1] + 0.01 * random_unit(3000, seed=11))

    index.add([f"n{i}" for i in range(3000)], near)

    assert "imbalance" in index.params.get("rebuilt", "")
    assert len(index) == 9000


def test_save_load_after_changes(tmp_path: Path, ivf_data) -> None:
    data, queries, _ = ivf_data
    index = VectorIndex.build(ids_for(6000)[:5000], data[:5000], exact_max=1000)
    index.add(ids_for(6000)[5000:], data[5000:])
    index.remove(ids_for(6000)[:100])
    index.save(tmp_path / "vectors")

    loaded = VectorIndex.load(tmp_path / "vectors")

    assert loaded.ids == index.ids
    assert loaded.params == index.params
    assert sorted(p.name for p in (tmp_path / "vectors").iterdir()) == [
        "ids.json",
        "index.faiss",
        "params.json",
    ]
    for q in queries[:10]:
        assert loaded.search(q, 10) == index.search(q, 10)
    loaded.add(["again"], data[:1])
    assert loaded.search(data[0], 1)[0][0] == "again"


def test_load_refuses_an_unknown_format(tmp_path: Path) -> None:
    VectorIndex.build(ids_for(20), random_unit(20)).save(tmp_path)
    params = tmp_path / "params.json"
    params.write_text(params.read_text().replace('"format": 2', '"format": 7'))

    with pytest.raises(ValueError, match=r"params\.json: vector index format 7 is not 2"):
        VectorIndex.load(tmp_path)


def test_a_format_1_directory_loads_into_faiss(tmp_path: Path) -> None:
    # What the NumPy IVF wrote before issue 19: a LanceDB table "vectors" and params.json.
    import json

    import lancedb
    import pyarrow as pa

    data = random_unit(300)
    table = pa.table(
        {
            "id": pa.array(ids_for(300)),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(data.reshape(-1)), 32),
            "list": pa.array(np.zeros(300, dtype=np.int32)),
        }
    )
    lancedb.connect(str(tmp_path)).create_table("vectors", data=table)
    old = {"format": 1, "kind": "exact", "count": 300, "dim": 32, "seed": 0, "model": "m-1"}
    (tmp_path / "params.json").write_text(json.dumps(old))

    loaded = VectorIndex.load(tmp_path)

    assert loaded.params["migrated_from_format"] == 1
    assert loaded.params["model"] == "m-1"
    assert loaded.ids == ids_for(300)
    assert [p for p, _ in loaded.search(data[7], 5)] == brute(data, data[7], 5)
