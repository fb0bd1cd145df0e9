"""Weighted Reciprocal Rank Fusion, checked against sums worked out by hand."""

from __future__ import annotations

import pytest

from aqe.search.fusion import rrf


def test_scores_are_the_sum_of_reciprocal_ranks() -> None:
    fused = dict(rrf([["a", "b", "c"], ["b", "c", "d"]], k=60))
    assert fused["a"] == pytest.approx(1 / 61)
    assert fused["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["c"] == pytest.approx(1 / 63 + 1 / 62)
    assert fused["d"] == pytest.approx(1 / 63)


def test_order_rewards_agreement() -> None:
    assert [doc for doc, _ in rrf([["a", "b", "c"], ["b", "c", "d"]], k=60)] == [
        "b",
        "c",
        "a",
        "d",
    ]


def test_weights_scale_each_ranking() -> None:
    fused = rrf([["a", "b"], ["b", "a"]], k=1, weights=[3.0, 1.0])
    # a: 3/2 + 1/3 = 11/6; b: 3/3 + 1/2 = 3/2
    assert fused == [("a", pytest.approx(11 / 6)), ("b", pytest.approx(3 / 2))]


def test_k_sets_how_much_agreement_beats_a_single_top_rank() -> None:
    rankings = [["solo", "x1", "x2", "both"], ["y1", "y2", "y3", "both"]]
    # k=1: solo 1/2 = 0.5 beats both 1/5 + 1/5 = 0.4.
    assert rrf(rankings, k=1)[0][0] == "solo"
    # k=100: both 2/104 = 0.01923 beats solo 1/101 = 0.00990.
    assert rrf(rankings, k=100)[0][0] == "both"


def test_exact_ties_go_to_the_smaller_id() -> None:
    assert [doc for doc, _ in rrf([["b"], ["a"]])] == ["a", "b"]
    tied = rrf([["m", "z"], ["z", "m"]], k=5)
    assert tied[0][1] == tied[1][1]
    assert [doc for doc, _ in tied] == ["m", "z"]


def test_tie_on_score_prefers_best_single_rank_over_id() -> None:
    # "b": ranks 1 and absent, weights 1 and 2 -> 1/(2+1) = 1/3.
    # "a": absent, then rank 4 in the weight-2 list -> 2/(2+4) = 1/3. Same score;
    # b's best rank (1) beats a's (4), despite "a" < "b".
    fused = rrf([["b"], ["x", "y", "z", "a"]], k=2, weights=[1.0, 2.0])
    scores = dict(fused)
    assert scores["a"] == pytest.approx(scores["b"])
    order = [doc for doc, _ in fused]
    assert order.index("b") < order.index("a")


def test_limit_and_empty_inputs() -> None:
    assert rrf([["a", "b", "c"]], limit=2) == [
        ("a", pytest.approx(1 / 61)),
        ("b", pytest.approx(1 / 62)),
    ]
    assert rrf([["a"]], limit=0) == []
    assert rrf([]) == []
    assert rrf([[], []]) == []


def test_a_repeated_id_counts_once_at_its_best_rank() -> None:
    assert rrf([["a", "b", "a"]], k=1) == [("a", pytest.approx(1 / 2)), ("b", pytest.approx(1 / 3))]


def test_zero_weight_keeps_documents_but_adds_nothing() -> None:
    fused = dict(rrf([["a"], ["b"]], k=1, weights=[1.0, 0.0]))
    assert fused == {"a": pytest.approx(0.5), "b": 0.0}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "k must be greater than 0"),
        ({"k": -5}, "k must be greater than 0"),
        ({"weights": [1.0]}, "1 weights for 2 rankings"),
        ({"weights": [1.0, 2.0, 3.0]}, "3 weights for 2 rankings"),
        ({"weights": [1.0, -1.0]}, "non-negative"),
        ({"weights": [1.0, float("nan")]}, "non-negative"),
        ({"weights": [1.0, float("inf")]}, "finite"),
        ({"limit": -1}, "limit must not be negative"),
    ],
)
def test_invalid_arguments_raise_value_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rrf([["a"], ["b"]], **kwargs)  # type: ignore[arg-type]
