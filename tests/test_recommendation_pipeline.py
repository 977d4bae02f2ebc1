"""The recommendation pipeline in process: top-k, exclude_seen, fallback, truncation, and the served
evaluation (whose full-ranking numbers must equal a direct ranking of the same scores)."""

from __future__ import annotations

import numpy as np
import pytest
from recommendation_support import MAX_HISTORY, NAME

from service.pipelines.recommendation import RecommendationPipeline, RecommendationRequest
from service.runtime.version_loader import load_version
from training.evaluate.ranking import full_ranks, hit_rate_and_ndcg
from training.evaluate.recommendation import evaluate_pipeline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline(tiny_recommendation) -> RecommendationPipeline:
    models, _ = tiny_recommendation
    return RecommendationPipeline(load_version(models / NAME / "1"))


def test_top_k_is_sorted_and_matches_the_scores(pipeline) -> None:
    history = (1, 50, 100, 181)
    [result] = pipeline([RecommendationRequest(history, 7, exclude_seen=False)])
    scores, _ = pipeline.score([history])
    expected = np.argsort(-scores[0], kind="stable")[:7] + 1
    assert [s.item.id for s in result.items] == expected.tolist()
    assert [s.score for s in result.items] == sorted((s.score for s in result.items), reverse=True)
    assert not result.fallback and not result.truncated and result.first_used == 0
    assert len(result.attention) == 4 and sum(result.attention) == pytest.approx(1, abs=1e-5)


def test_exclude_seen_drops_every_history_item(pipeline) -> None:
    scores, _ = pipeline.score([(1, 2, 3)])
    seen = tuple(int(i) + 1 for i in np.argsort(-scores[0])[:5])  # the model's own favourites
    [kept] = pipeline([RecommendationRequest(seen, 10, exclude_seen=False)])
    [excluded] = pipeline([RecommendationRequest(seen, 10, exclude_seen=True)])
    assert set(seen) & {s.item.id for s in kept.items}
    assert not set(seen) & {s.item.id for s in excluded.items} and len(excluded.items) == 10


def test_empty_history_falls_back_to_the_most_popular_items(pipeline) -> None:
    [result] = pipeline([RecommendationRequest((), 5, exclude_seen=True)])
    counts = pipeline.catalogue.counts
    assert result.fallback and result.attention == []
    assert [s.item.id for s in result.items] == sorted(range(1, len(counts)), key=lambda i: (-counts[i], i))[:5]
    assert result.items[0].score == pytest.approx(max(counts) / sum(counts))


def test_a_long_history_uses_its_most_recent_items(pipeline) -> None:
    history = tuple(range(1, MAX_HISTORY + 8))
    [long] = pipeline([RecommendationRequest(history, 10, exclude_seen=False)])
    [recent] = pipeline([RecommendationRequest(history[-MAX_HISTORY:], 10, exclude_seen=False)])
    assert long.truncated and not recent.truncated
    assert long.first_used == 7 and len(long.attention) == MAX_HISTORY
    assert [s.item.id for s in long.items] == [s.item.id for s in recent.items]


def test_batched_requests_answer_as_alone(pipeline) -> None:
    requests = [RecommendationRequest(tuple(range(5, 5 + n)), 5, exclude_seen=n % 2 == 0) for n in (1, 9, 3, 30)]
    together = pipeline(requests)
    for request, result in zip(requests, together, strict=True):
        [alone] = pipeline([request])
        assert [s.item.id for s in result.items] == [s.item.id for s in alone.items]
        assert result.attention == pytest.approx(alone.attention, abs=1e-6)


def test_served_full_ranking_equals_ranking_the_scores(pipeline, tiny_recommendation) -> None:
    _, trained = tiny_recommendation
    cases = trained.splits.test[:150]
    report = evaluate_pipeline(pipeline, trained.data, cases)
    scores, _ = pipeline.score([c.history for c in cases])
    ranks = full_ranks(scores, np.array([c.target for c in cases]), [c.history for c in cases])
    hr, ndcg = hit_rate_and_ndcg(ranks)
    assert report["served"]["full_hr@10"] == pytest.approx(hr, abs=1e-4)
    assert report["served"]["full_ndcg@10"] == pytest.approx(ndcg, abs=1e-4)
    assert report["n"] == 150
    for protocol in ("served", "popularity_baseline"):
        assert 0 <= report[protocol]["full_hr@10"] <= report[protocol]["sampled_hr@10"] <= 1
