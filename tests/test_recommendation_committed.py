"""The committed SASRec on MovieLens-1M: its manifest matches the data it names, its served quality beats
popularity and meets the issue's target, and the shared real server answers with it by title."""

from __future__ import annotations

import io
import json

import grpc
import pytest
from exported_models import latest_version_dir
from seqserve.v1 import models_pb2, recommendation_pb2, recommendation_pb2_grpc

from service.client.recommend_output import print_recommendations
from training.data.movielens import item_popularity, load_splits
from training.evaluate.recommendation import evaluate_version

MODEL = latest_version_dir("sasrec-ml1m")


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((MODEL / "manifest.json").read_text("utf-8"))


def test_the_loader_reproduces_the_recorded_data_and_split_hashes(manifest) -> None:
    data, splits, info = load_splits("ml-1m")
    recorded = manifest["data"]
    for key in ("data_sha256", "train_sha256", "dev_sha256", "test_sha256", "users", "items", "interactions"):
        assert info[key] == recorded[key], key
    counts = json.loads((MODEL / "popularity.json").read_text("utf-8"))["interaction_counts"]
    assert counts == item_popularity(splits.train, data.num_items)


def test_served_test_quality_meets_the_target_and_beats_popularity(manifest) -> None:
    metrics = manifest["metrics"]
    assert metrics["split"] == "test" and metrics["n"] == 6040
    served, popular = metrics["served"], metrics["popularity_baseline"]
    # The target is .83 / .60 (SASRec paper: .8245 / .5905); version 4 (SASRec + EASE over the
    # whole history) reaches .835 / .643 and .337 / .199 over the whole catalogue (version 3, SASRec
    # alone: .8225 / .629, .320 / .184), see docs/recommendation.md. These bounds pin what is committed,
    # so a worse retrain fails here.
    assert served["sampled_hr@10"] >= 0.83 and served["sampled_ndcg@10"] >= 0.60
    assert served["full_hr@10"] >= 0.33 and served["full_ndcg@10"] >= 0.195
    for key in ("sampled_hr@10", "sampled_ndcg@10", "full_hr@10", "full_ndcg@10"):
        assert served[key] > popular[key] * 1.5, key
    assert manifest["parity"]["max_abs_score_diff"] < 1e-3 and manifest["parity"]["top10_equal"] == 1.0


@pytest.mark.slow  # re-scores the whole test split
def test_the_published_test_metrics_are_what_the_served_pipeline_scores_today(manifest) -> None:
    """The manifest's numbers are re-measured, not trusted: the committed graph through the service's own
    pipeline on the test split (all 6,040 users; ~10 s on one thread)."""
    data, splits, _ = load_splits("ml-1m")
    measured = evaluate_version(MODEL, data, splits.test)
    # within 3 users of 6,040: another CPU's float rounding may flip a near-tie
    assert measured["served"] == pytest.approx(manifest["metrics"]["served"], abs=5e-4)
    assert measured["popularity_baseline"] == manifest["metrics"]["popularity_baseline"]  # integer counts


@pytest.mark.parametrize("name", ["sasrec-ml1m", "sasrec-ml1m-int8"])
def test_a_history_gets_the_same_list_alone_and_in_any_batch(name) -> None:
    """The int8 graph quantizes activations per run, so batched with others a user's scores moved (1,291
    of 2,014 dev top-10 lists changed); the server (and evaluation, both through run_pipeline) runs it
    one history at a time. The fp32 graph is padding-blind by construction and runs batched."""
    from service.batching.runs import run_pipeline
    from service.model.timing import StageTimings
    from service.pipelines.recommendation import RecommendationPipeline, RecommendationRequest
    from service.runtime.version_loader import load_version

    _, splits, _ = load_splits("ml-1m")
    histories = [case.history for case in splits.dev[:96]]  # lengths 20..1,000+, mixed in each batch
    pipeline = RecommendationPipeline(load_version(latest_version_dir(name)))
    requests = [RecommendationRequest(tuple(h), 10, exclude_seen=True) for h in histories]
    alone = [pipeline([request])[0] for request in requests]
    batched = [r for start in range(0, len(requests), 32) for r in run_pipeline(pipeline, requests[start : start + 32])]
    for one, many in zip(alone, batched, strict=True):
        assert [s.item.id for s in one.items] == [s.item.id for s in many.items]
        # float tolerance only: the int8 defect moved scores by 0.01-0.40
        assert [s.score for s in one.items] == pytest.approx([s.score for s in many.items], abs=1e-5)
        assert one.attention == pytest.approx(many.attention, abs=1e-6)
    timings = StageTimings()
    run_pipeline(pipeline, requests[:32], timings)
    assert (timings.padding_ratio == 0.0) == name.endswith("int8")  # int8 runs unpadded


FAMILY = ["Toy Story (1995)", "Aladdin (1992)", "Lion King, The (1994)", "Beauty and the Beast (1991)",
          "Little Mermaid, The (1989)", "Hercules (1997)", "Mulan (1998)", "Pocahontas (1995)",
          "Hunchback of Notre Dame, The (1996)", "Tarzan (1999)"]
HORROR = ["Scream (1996)", "Halloween (1978)", "Nightmare on Elm Street, A (1984)", "Friday the 13th (1980)",
          "Shining, The (1980)", "Exorcist, The (1973)", "Blair Witch Project, The (1999)", "Carrie (1976)",
          "Omen, The (1976)", "Psycho (1960)"]


@pytest.mark.parametrize(("titles", "genres"), [(FAMILY, {"Animation", "Children's"}), (HORROR, {"Horror"})])
def test_the_shared_server_follows_the_history_by_title(channel, models, titles, genres) -> None:
    listed = models.ListModels(models_pb2.ListModelsRequest(task="recommendation"), timeout=10).models
    assert ("sasrec-ml1m", True) in [(m.name, m.is_default) for m in listed]  # the default; int8 beside it
    stub = recommendation_pb2_grpc.RecommendationStub(channel)
    response = stub.Recommend(recommendation_pb2.RecommendRequest(
        history=[recommendation_pb2.HistoryItem(title=t) for t in titles], k=10, exclude_seen=True), timeout=30)
    assert [w.item.name for w in response.attention] == titles
    assert len(response.items) == 10 and not set(titles) & {r.item.name for r in response.items}
    # Ten films of one kind: the list follows them (the popularity fallback would not: Star Wars, ...).
    matching = sum(1 for r in response.items if genres & set(r.item.genres))
    assert matching >= 8, [r.item.name for r in response.items]


def test_the_default_was_chosen_on_dev_and_reads_the_whole_history(manifest) -> None:
    """Version 4's co-occurrence term: settings chosen on dev (recorded, and better there than SASRec
    alone, whose dev numbers the training record keeps), fed the whole history by the service."""
    term = manifest["cooccurrence"]
    assert (term["l2"], term["rank"], term["weight"]) == (1000.0, 256, 3.0)  # configs/recommendation.py
    dev, alone = manifest["dev_metrics"]["served"], manifest["training"]["best_dev"]
    assert dev["full_ndcg@10"] > alone["full_ndcg@10"] and dev["sampled_hr@10"] >= alone["sampled_hr@10"]
    assert [spec["name"] for spec in manifest["onnx"]["inputs"]] == ["history", "lengths", "whole_history"]


def test_the_shared_server_reads_items_older_than_max_history(channel) -> None:
    """A 260-item history: SASRec reads the last 200 (reported), the co-occurrence term all 260, so the
    60 oldest items still change the list (they would not if the service cut the history for both)."""
    _, splits, _ = load_splits("ml-1m")
    history = next(c.history for c in splits.dev if len(c.history) >= 260)[-260:]
    stub = recommendation_pb2_grpc.RecommendationStub(channel)

    def recommend(items: tuple[int, ...]) -> recommendation_pb2.RecommendResponse:
        return stub.Recommend(recommendation_pb2.RecommendRequest(
            history=[recommendation_pb2.HistoryItem(id=i) for i in items], k=20, exclude_seen=True), timeout=30)

    whole, recent = recommend(history), recommend(history[-200:])
    assert whole.truncated and whole.history_used == 200 and not recent.truncated
    assert whole.whole_history_scored and recent.whole_history_scored
    out = io.StringIO()
    print_recommendations(whole, len(history), out)
    assert out.getvalue().splitlines()[0] == ("history: 260 items, all scored through item co-occurrence, the most "
                                              "recent 200 also by self-attention (max 200); attention of the last "
                                              "item over it:")
    assert [w.index for w in whole.attention] == list(range(60, 260))
    assert [r.score for r in whole.items] != [r.score for r in recent.items]


def test_the_shared_server_refuses_an_id_outside_the_catalogue(channel) -> None:
    stub = recommendation_pb2_grpc.RecommendationStub(channel)
    with pytest.raises(grpc.RpcError) as error:
        stub.Recommend(recommendation_pb2.RecommendRequest(history=[recommendation_pb2.HistoryItem(id=3707)]),
                       timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "ids are 1..3706" in error.value.details()
