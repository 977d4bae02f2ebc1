"""Choose the co-occurrence term's settings on dev:  python -m training.evaluate.cooccurrence_grid [CHECKPOINT]

Scores every dev user with a trained SASRec (default: the committed recipe's final phase, best.pt), then
adds EASE scores over the whole history (training/models/cooccurrence.py, fit on the training
sequences) for each (l2, rank, weight) of the grid, and prints dev full NDCG@10 / sampled HR@10 for each.
The rule (configs/recommendation.py COOCCURRENCE): the best full NDCG@10 among settings whose sampled
HR@10 is not below SASRec's alone. Dev only: test is for the exported model, once.
"""

from __future__ import annotations

import argparse
import itertools
import json
import pathlib
from typing import Any

import numpy as np
import torch

from training.configs import recommendation as cfg
from training.data.movielens import Case, load_splits
from training.evaluate.ranking import full_ranks, sample_negatives, sampled_ranks
from training.evaluate.recommendation import summary
from training.models.cooccurrence import CooccurrenceScores, ease_low_rank, eigen, gram_matrix
from training.models.sasrec import SASRec, SASRecConfig
from training.train_recommendation import torch_scores

# Values of mixed types (rank is an int), so Any.
GRID: dict[str, tuple[Any, ...]] = {"l2": (1000.0, 2000.0, 3000.0), "rank": (128, 256), "weight": (2.5, 3.0, 3.4, 4.0)}
DEFAULT_CHECKPOINT = pathlib.Path(f"{cfg.LOOP.checkpoint_dir}-decay/best.pt")


def sasrec_scores(model: SASRec, cases: list[Case], batch_size: int = 128) -> np.ndarray:
    """[len(cases), N] scores of the SASRec alone, each history cut to its last max_length items."""
    with torch.no_grad():
        return np.concatenate([torch_scores(model, [c.history[-model.config.max_length :]
                                                    for c in cases[start : start + batch_size]])
                               for start in range(0, len(cases), batch_size)])


def metrics(scores: np.ndarray, targets: np.ndarray, negatives: np.ndarray, cases: list[Case]) -> dict[str, float]:
    return summary(full_ranks(scores, targets, [c.history for c in cases]), sampled_ranks(scores, targets, negatives))


def choose(results: list[dict[str, float]], alone: dict[str, float]) -> dict[str, float] | None:
    """The rule: the best dev full NDCG@10 among settings whose dev sampled HR@10 is not below SASRec's
    alone (None if no setting keeps it)."""
    allowed = [r for r in results if r["sampled_hr@10"] >= alone["sampled_hr@10"]]
    return max(allowed, key=lambda r: r["full_ndcg@10"]) if allowed else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=pathlib.Path, nargs="?", default=DEFAULT_CHECKPOINT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data, splits, _ = load_splits(cfg.DATASET)
    saved = torch.load(args.checkpoint, weights_only=False)
    model = SASRec(SASRecConfig(**saved["extra"]["model_config"]))
    model.load_state_dict(saved["model"])
    model.eval()
    cases = splits.dev
    user_index = {user: i for i, user in enumerate(data.histories)}
    negatives = np.stack([sample_negatives(user_index[c.user], set(data.histories[c.user]), data.num_items)
                          for c in cases])
    targets = np.array([c.target for c in cases])
    base = sasrec_scores(model, cases)
    alone = metrics(base, targets, negatives, cases)
    print(json.dumps({"sasrec_alone": alone}))
    gram_eigen = eigen(gram_matrix(splits.train.values(), data.num_items))
    whole = [torch.tensor([list(dict.fromkeys(c.history))]) for c in cases]
    results = []
    for l2, rank in itertools.product(GRID["l2"], GRID["rank"]):
        history_factors, item_factors = ease_low_rank(gram_eigen, l2, rank)
        with torch.no_grad():
            term = CooccurrenceScores(history_factors, item_factors, 1.0)
            ease = np.concatenate([term(w).numpy() for w in whole])
        for weight in GRID["weight"]:
            row = {"l2": l2, "rank": rank, "weight": weight, **metrics(base + weight * ease, targets, negatives, cases)}
            results.append(row)
            print(json.dumps(row), flush=True)
    print("chosen", json.dumps(choose(results, alone)))


if __name__ == "__main__":
    main()
