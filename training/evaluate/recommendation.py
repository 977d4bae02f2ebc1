"""Recommendation quality through the served path, beside a popularity baseline.

    python -m training.evaluate.recommendation exported/sasrec-ml1m/2 [--split test] [--write-manifest]

Our numbers come from service.pipelines.recommendation.RecommendationPipeline over the exported ONNX
file, the code the server runs:
- full ranking: the served top-10 with exclude_seen on (the history's items are never recommended
  again), HR@10 / NDCG@10 from where the held-out item appears in it;
- sampled (the SASRec paper's protocol): the pipeline's scores of the held-out item and of 100 items
  the user never interacted with (seeded per user, see training/evaluate/ranking.py).
The popularity baseline ranks by training interaction count (the catalogue's popularity.json, which
also drives the empty-history fallback), under the same two protocols.
"""

from __future__ import annotations

import argparse
import json
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from service.batching.runs import run_pipeline
from service.model.manifest import read_manifest, republish_manifest
from service.model.pipeline import Pipeline
from service.model.timing import StageTimings
from service.pipelines.recommendation import RecommendationPipeline, RecommendationRequest
from service.runtime.version_loader import load_version
from training.data.movielens import Case, MovieLens, load_splits
from training.evaluate.ranking import (
    NEGATIVE_SEED,
    NUM_NEGATIVES,
    full_ranks,
    hit_rate_and_ndcg,
    sample_negatives,
    sampled_ranks,
)

K = 10
BATCH_SIZE = 128


def summary(full: np.ndarray, sampled: np.ndarray) -> dict[str, float]:
    """HR@10 / NDCG@10 under both protocols from 0-based full-ranking and sampled ranks."""
    full_hr, full_ndcg = hit_rate_and_ndcg(full, K)
    sampled_hr, sampled_ndcg = hit_rate_and_ndcg(sampled, K)
    return {"sampled_hr@10": round(sampled_hr, 4), "sampled_ndcg@10": round(sampled_ndcg, 4),
            "full_hr@10": round(full_hr, 4), "full_ndcg@10": round(full_ndcg, 4)}


class HistoryScores(Pipeline[Sequence[int], np.ndarray]):
    """The pipeline's full score row of each history, run as the server runs the pipeline (run_pipeline:
    one history per run for a dynamically quantized graph), for the sampled protocol."""

    def __init__(self, pipeline: RecommendationPipeline) -> None:
        self.pipeline = pipeline
        self.model = pipeline.model

    def estimate_tokens(self, item: Sequence[int]) -> int:
        return max(1, min(len(item), self.pipeline.max_history))

    def __call__(self, items: Sequence[Sequence[int]], timings: StageTimings | None = None) -> list[np.ndarray]:
        scores, _ = self.pipeline.score(items, timings)
        return list(scores)


def negatives_per_case(data: MovieLens, cases: Sequence[Case]) -> int:
    """NUM_NEGATIVES, or fewer when a small catalogue leaves some user fewer unseen items: every case is
    ranked against as many negatives (100 for ML-1M and ML-100K; a user's own catalogue may be smaller)."""
    unseen = min((data.num_items - len(set(data.histories[c.user])) for c in cases), default=NUM_NEGATIVES)
    return max(0, min(NUM_NEGATIVES, unseen))


def case_negatives(data: MovieLens, cases: Sequence[Case]) -> np.ndarray:
    """[cases, negatives_per_case] items each user never interacted with, seeded per user."""
    user_index = {user: i for i, user in enumerate(data.histories)}
    count = negatives_per_case(data, cases)
    return np.stack([sample_negatives(user_index[c.user], set(data.histories[c.user]), data.num_items, count)
                     for c in cases]).reshape(len(cases), count)


def evaluate_pipeline(pipeline: RecommendationPipeline, data: MovieLens, cases: list[Case]) -> dict[str, Any]:
    negatives = case_negatives(data, cases)
    targets = np.array([c.target for c in cases])
    order = sorted(range(len(cases)), key=lambda i: len(cases[i].history))  # as the batcher groups them
    served_full = np.full(len(cases), K, dtype=np.int64)  # a target outside the served top-10 is a miss
    served_sampled = np.zeros(len(cases), dtype=np.int64)
    for start in range(0, len(order), BATCH_SIZE):
        rows = order[start : start + BATCH_SIZE]
        requests = [RecommendationRequest(cases[i].history, K, exclude_seen=True) for i in rows]
        recommendations = run_pipeline(pipeline, requests)
        for i, recommendation in zip(rows, recommendations, strict=True):
            ids = [s.item.id for s in recommendation.items]
            if cases[i].target in ids:
                served_full[i] = ids.index(cases[i].target)
        score_rows: list[np.ndarray] = run_pipeline(HistoryScores(pipeline), [cases[i].history for i in rows])
        scores = np.stack(score_rows)
        served_sampled[rows] = sampled_ranks(scores, targets[rows], negatives[rows])

    popularity = np.asarray(pipeline.catalogue.counts[1:], dtype=np.float64)[None, :]
    popular_full = np.concatenate([full_ranks(popularity, targets[i : i + 1], [cases[i].history])
                                   for i in range(len(cases))])
    popular_sampled = sampled_ranks(np.repeat(popularity, len(cases), axis=0), targets, negatives)
    return {
        "served": summary(served_full, served_sampled),
        "popularity_baseline": summary(popular_full, popular_sampled),
        "n": len(cases),
        "protocol": {"k": K, "sampled_negatives": negatives.shape[1], "negative_seed": NEGATIVE_SEED,
                     "negatives_from": "items the user never interacted with (whole history)",
                     "full_ranking": "whole catalogue, the input history's items excluded (exclude_seen)",
                     "ties": "count against the target"},
    }


def evaluate_version(version_dir: pathlib.Path, data: MovieLens, cases: list[Case]) -> dict[str, Any]:
    return evaluate_pipeline(RecommendationPipeline(load_version(version_dir)), data, cases)


def format_table(report: dict[str, Any]) -> str:
    lines = [f"{'':<22} {'sampled HR@10':>13} {'sampled NDCG@10':>15} {'full HR@10':>10} {'full NDCG@10':>12}"]
    for name in ("served", "popularity_baseline"):
        row = report[name]
        lines.append(f"{name:<22} {row['sampled_hr@10']:>13.4f} {row['sampled_ndcg@10']:>15.4f} "
                     f"{row['full_hr@10']:>10.4f} {row['full_ndcg@10']:>12.4f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version_dir", type=pathlib.Path)
    parser.add_argument("--split", default="test", choices=["dev", "test"])
    parser.add_argument("--write-manifest", action="store_true", help="store the report as the manifest's metrics")
    args = parser.parse_args()
    manifest = read_manifest(args.version_dir)
    data, splits, _ = load_splits(manifest.data["data"]["dataset"])
    report = {"split": args.split, **evaluate_version(args.version_dir, data, getattr(splits, args.split))}
    print(format_table(report))
    print(json.dumps(report, indent=1))
    if args.write_manifest:
        republish_manifest(args.version_dir, {"metrics": report}, source=manifest)


if __name__ == "__main__":
    main()
