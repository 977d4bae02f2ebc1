"""The EASE co-occurrence term (training/models/cooccurrence.py) and how it is exported and served: the
low-rank factors reproduce EASE, the graph adds exactly the term to SASRec's scores, and the service
feeds it the whole history (each item once) while SASRec reads only the most recent max_history."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from recommendation_support import MAX_HISTORY, NAME

from service.pipelines.recommendation import RecommendationPipeline, RecommendationRequest, pad_whole_histories
from service.runtime.version_loader import load_version
from training.evaluate.cooccurrence_grid import choose
from training.export.recommendation import parity
from training.models.cooccurrence import (
    CooccurrenceConfig,
    CooccurrenceScores,
    cooccurrence_scores,
    ease_exact,
    ease_low_rank,
    eigen,
    gram_matrix,
)
from training.train_recommendation import export_version


def random_sequences(num_items: int = 25, users: int = 60, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.choice(np.arange(1, num_items + 1), size=rng.integers(3, 12), replace=False).tolist()
            for _ in range(users)]


def test_the_gram_matrix_counts_an_item_once_per_user() -> None:
    gram = gram_matrix([[1, 2, 2], [2, 3]], num_items=3)
    assert gram.tolist() == [[1, 1, 0], [1, 2, 1], [0, 1, 1]]


def test_at_full_rank_the_factors_are_ease_off_the_diagonal() -> None:
    gram = gram_matrix(random_sequences(), num_items=25)
    history_factors, item_factors = ease_low_rank(eigen(gram), l2=5.0, rank=25)
    product = history_factors[1:].astype(np.float64) @ item_factors
    exact = ease_exact(gram, l2=5.0)
    off_diagonal = ~np.eye(25, dtype=bool)
    np.testing.assert_allclose(product[off_diagonal], exact[off_diagonal], atol=1e-6)
    assert not history_factors[0].any()  # padding adds nothing


def test_a_lower_rank_drops_only_the_terms_of_the_smaller_eigenvalues() -> None:
    """Off the diagonal, EASE = sum over eigenvalues s of f(s) v v^T (columns scaled by -1/diag(P)) with
    |f(s)| = 1/l2 - 1/(s + l2), small for s << l2: the error at rank r is bounded by the dropped |f|."""
    gram = gram_matrix(random_sequences(users=200), num_items=25)
    eigenvalues, _ = eigen(gram)
    exact = ease_exact(gram, l2=20.0)
    column_scale = np.abs(1.0 / np.diag(np.linalg.inv(gram + 20.0 * np.eye(25)))).max()
    off_diagonal = ~np.eye(25, dtype=bool)
    for rank in (2, 12, 24):
        history_factors, item_factors = ease_low_rank(eigen(gram), l2=20.0, rank=rank)
        error = np.linalg.norm((history_factors[1:].astype(np.float64) @ item_factors - exact)[off_diagonal])
        dropped = 1.0 / 20.0 - 1.0 / (eigenvalues[rank:] + 20.0)
        assert error <= np.sqrt((dropped**2).sum()) * column_scale + 1e-5


def test_the_term_is_ease_for_every_item_the_history_items_included() -> None:
    """At full rank the term is weight * x_u B for all items: a history item is scored by the other
    history items only (B's diagonal is 0), though the low-rank product has a diagonal of its own."""
    term = cooccurrence_scores(random_sequences(), 25, CooccurrenceConfig(l2=5.0, rank=25, weight=2.0))
    exact = ease_exact(gram_matrix(random_sequences(), 25), l2=5.0)
    assert term.self_scores[1:].abs().max() > 0.01  # what the correction removes is not negligible
    with torch.no_grad():
        padded = term(torch.tensor([[3, 7, 11, 0, 0]])).numpy()[0]
        unpadded = term(torch.tensor([[3, 7, 11]])).numpy()[0]
    np.testing.assert_allclose(padded, unpadded, atol=1e-6)
    # weight 2, float16 factors: EASE's scores within half-precision rounding
    np.testing.assert_allclose(padded, 2.0 * exact[[2, 6, 10]].sum(axis=0), atol=2e-3)


def test_the_whole_history_input_keeps_each_item_once_in_first_seen_order() -> None:
    assert pad_whole_histories([[5, 3, 5, 9], [2]]).tolist() == [[5, 3, 9], [2, 0, 0]]


@pytest.fixture(scope="module")
def with_term(tiny_recommendation, tmp_path_factory) -> tuple:
    """The tiny SASRec exported again with a co-occurrence term (version 2 beside the plain version 1)."""
    models, trained = tiny_recommendation
    root = tmp_path_factory.mktemp("cooccurrence")
    config = CooccurrenceConfig(l2=50.0, rank=32, weight=1.5)
    export_version(trained, root / NAME / "2", NAME, max_k=50, evaluate=False, cooccurrence=config)
    term = cooccurrence_scores(trained.splits.train.values(), trained.model.config.num_items, config)
    plain = RecommendationPipeline(load_version(models / NAME / "1"))
    return root / NAME / "2", trained, term, plain, RecommendationPipeline(load_version(root / NAME / "2"))


@pytest.mark.slow  # trains the tiny SASRec and exports it with the term
def test_the_exported_graph_matches_torch_with_the_term(with_term) -> None:
    version, trained, term, _, _ = with_term
    measured = parity(trained.model, version / "model.onnx", [[1], [MAX_HISTORY, 3, 9]], seed=5, cooccurrence=term)
    assert measured["max_abs_score_diff"] < 1e-4 and measured["top10_equal"] == 1.0
    manifest = json.loads((version / "manifest.json").read_text("utf-8"))
    assert [spec["name"] for spec in manifest["onnx"]["inputs"]] == ["history", "lengths", "whole_history"]
    assert manifest["cooccurrence"]["rank"] == 32 and manifest["cooccurrence"]["weight"] == 1.5


@pytest.mark.slow  # trains the tiny SASRec and exports it with the term
def test_served_scores_are_sasrec_plus_the_term_over_the_whole_history(with_term) -> None:
    _, _, term, plain, combined = with_term
    history = list(range(1, MAX_HISTORY + 15))  # longer than SASRec reads
    plain_scores, plain_attention = plain.score([history])
    scores, attention = combined.score([history])
    with torch.no_grad():
        expected = term(torch.tensor([history])).numpy()
    np.testing.assert_allclose(scores - plain_scores, expected, atol=1e-4)
    np.testing.assert_array_equal(attention, plain_attention)  # the attention is SASRec's alone


@pytest.mark.slow  # trains the tiny SASRec and exports it with the term
def test_items_beyond_max_history_still_move_the_list_and_truncation_is_reported(with_term) -> None:
    _, _, _, plain, combined = with_term
    recent = tuple(range(30, 30 + MAX_HISTORY))
    older = tuple(range(100, 140)) + recent
    for pipeline, moves in ((plain, False), (combined, True)):
        [long] = pipeline([RecommendationRequest(older, 10, exclude_seen=False)])
        [short] = pipeline([RecommendationRequest(recent, 10, exclude_seen=False)])
        assert long.truncated and long.first_used == 40 and len(long.attention) == MAX_HISTORY
        assert ([s.score for s in long.items] != [s.score for s in short.items]) == moves


@pytest.mark.slow  # trains the tiny SASRec and exports it with the term
def test_a_history_answers_the_same_alone_and_batched_with_the_term(with_term) -> None:
    _, _, _, _, combined = with_term
    requests = [RecommendationRequest(tuple(range(5, 5 + n)), 5, exclude_seen=True) for n in (1, 40, 3, 25)]
    together = combined(requests)
    for request, result in zip(requests, together, strict=True):
        [alone] = combined([request])
        assert [s.item.id for s in result.items] == [s.item.id for s in alone.items]
        assert [s.score for s in result.items] == pytest.approx([s.score for s in alone.items], abs=1e-5)


@pytest.mark.slow  # trains the tiny SASRec and exports it with the term
def test_a_repeated_item_counts_once_like_in_training(with_term) -> None:
    _, _, _, plain, combined = with_term
    with_repeat, _ = combined.score([[4, 8, 4, 15]])
    without, _ = combined.score([[8, 4, 15]])  # same distinct items; SASRec sees a different sequence
    plain_with, _ = plain.score([[4, 8, 4, 15]])
    plain_without, _ = plain.score([[8, 4, 15]])
    np.testing.assert_allclose(with_repeat - plain_with, without - plain_without, atol=1e-4)


def test_cooccurrence_scores_module_keeps_float16_factors() -> None:
    history_factors = np.ones((4, 2), np.float32)
    history_factors[0] = 0.0  # the padding row, as ease_low_rank makes it
    module = CooccurrenceScores(history_factors, np.ones((2, 3), np.float32), weight=0.5)
    assert module.history_factors.dtype == torch.float16 and module.item_factors.dtype == torch.float16
    with torch.no_grad():  # items 1 and 2 each lose their own 0.5 x 2 = 1.0; item 3 is not in the history
        assert module(torch.tensor([[1, 2, 0]])).tolist() == [[1.0, 1.0, 2.0]]


def test_the_grid_keeps_the_best_full_ndcg_that_does_not_lose_sampled_hit_rate() -> None:
    alone = {"full_ndcg@10": 0.19, "sampled_hr@10": 0.85}
    rows = [{"weight": 1.0, "full_ndcg@10": 0.22, "sampled_hr@10": 0.84},  # best NDCG, but loses HR
            {"weight": 2.0, "full_ndcg@10": 0.20, "sampled_hr@10": 0.85},
            {"weight": 3.0, "full_ndcg@10": 0.21, "sampled_hr@10": 0.86}]
    assert choose(rows, alone)["weight"] == 3.0
    assert choose(rows[:1], alone) is None
