"""Top-k ranking metrics for next-item recommendation, shared by training (dev) and the served evaluation.

Two protocols, both leave-one-out with one held-out target per user:
- sampled (the SASRec paper's): the target is ranked against 100 items drawn uniformly, without
  replacement, from the items the user never interacted with (the whole history, targets included);
  the draw is seeded per user, so every model is ranked against the same candidates.
- full: the target is ranked against the whole catalogue minus the items already in the input
  history (they are not recommended again, see exclude_seen in the service).
Ties count against the target (rank = number of candidates scoring >= it): a constant model scores 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NUM_NEGATIVES = 100
NEGATIVE_SEED = 2018  # the SASRec paper's year; any fixed number, recorded in the manifest


def hit_rate_and_ndcg(ranks: Sequence[int] | np.ndarray, k: int = 10) -> tuple[float, float]:
    """HR@k and NDCG@k from 0-based ranks of the single relevant item per case."""
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        return 0.0, 0.0
    hits = ranks < k
    ndcg = np.where(hits, 1.0 / np.log2(ranks + 2.0), 0.0)
    return float(hits.mean()), float(ndcg.mean())


def sample_negatives(user_index: int, interacted: set[int], num_items: int,
                     n: int = NUM_NEGATIVES, seed: int = NEGATIVE_SEED) -> np.ndarray:
    """n distinct item ids from 1..num_items that the user never interacted with (seeded by user)."""
    rng = np.random.default_rng([seed, user_index])
    candidates = np.setdiff1d(np.arange(1, num_items + 1), np.fromiter(interacted, dtype=np.int64))
    return rng.choice(candidates, size=min(n, candidates.size), replace=False)


def sampled_ranks(scores: np.ndarray, targets: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """scores [B, N] (column j = item j + 1), targets [B], negatives [B, n] -> 0-based ranks [B]."""
    rows = np.arange(len(targets))
    target_scores = scores[rows, targets - 1]
    return (scores[rows[:, None], negatives - 1] >= target_scores[:, None]).sum(axis=1)


def full_ranks(scores: np.ndarray, targets: np.ndarray, seen: Sequence[Sequence[int]]) -> np.ndarray:
    """Rank of each target among all items not in its row's `seen` (the target itself always competes)."""
    scores = scores.copy()
    rows = np.arange(len(targets))
    target_scores = scores[rows, targets - 1].copy()
    for row, items in enumerate(seen):
        scores[row, np.asarray(items, dtype=np.int64) - 1] = -np.inf
    scores[rows, targets - 1] = -np.inf  # not counted against itself
    return (scores >= target_scores[:, None]).sum(axis=1)
