"""HR@k / NDCG@k and the two ranking protocols, on cases small enough to check by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.evaluate.ranking import full_ranks, hit_rate_and_ndcg, sample_negatives, sampled_ranks


def test_hit_rate_and_ndcg_from_ranks() -> None:
    # ranks 0, 1, 9 are hits worth 1, 1/log2(3), 1/log2(11); rank 10 is a miss at k=10
    hr, ndcg = hit_rate_and_ndcg([0, 1, 9, 10])
    assert hr == pytest.approx(3 / 4)
    assert ndcg == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(11)) / 4)
    assert hit_rate_and_ndcg([2], k=2) == (0.0, 0.0)
    assert hit_rate_and_ndcg([]) == (0.0, 0.0)


def test_sampled_rank_counts_negatives_scoring_at_least_the_target() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.5, 0.2]])  # column j is item j + 1
    assert sampled_ranks(scores, np.array([3]), np.array([[1, 5]])).tolist() == [0]  # 0.5 beats 0.1, 0.2
    assert sampled_ranks(scores, np.array([3]), np.array([[2, 4]])).tolist() == [2]  # 0.9 wins, the tie counts


def test_a_constant_model_never_hits() -> None:
    scores = np.zeros((1, 200))
    negatives = np.arange(2, 102)[None, :]
    assert sampled_ranks(scores, np.array([1]), negatives).tolist() == [100]


def test_full_rank_skips_seen_items_but_not_the_target() -> None:
    scores = np.array([[5.0, 4.0, 3.0, 2.0, 1.0]])
    assert full_ranks(scores, np.array([3]), [[]]).tolist() == [2]
    assert full_ranks(scores, np.array([3]), [[1]]).tolist() == [1]  # item 1 was seen: it cannot be shown
    assert full_ranks(scores, np.array([3]), [[1, 2, 3]]).tolist() == [0]  # a seen target still competes
    assert scores[0, 0] == 5.0  # the caller's scores are not modified


def test_negatives_are_unseen_distinct_and_fixed_per_user() -> None:
    interacted = {1, 2, 3, 50}
    negatives = sample_negatives(7, interacted, num_items=200)
    assert len(negatives) == 100 and len(set(negatives.tolist())) == 100
    assert not set(negatives.tolist()) & interacted
    assert set(negatives.tolist()) <= set(range(1, 201))
    assert negatives.tolist() == sample_negatives(7, interacted, num_items=200).tolist()
    assert negatives.tolist() != sample_negatives(8, interacted, num_items=200).tolist()
