"""EASE item co-occurrence (Steck 2019, "Embarrassingly Shallow Autoencoders"), in low rank: a second
scoring term the served recommender adds to SASRec's.

EASE fits B = argmin ||X - XB||^2 + l2 ||B||^2 with diag(B) = 0, X the user x item 0/1 matrix of the
training interactions; closed form B = I - P diag(1 / diag(P)), P = (X^T X + l2 I)^-1. A user's item
scores are x_u B: every item scored by how it co-occurs with the items of the WHOLE history, where
SASRec reads the last max_length items, in order. On ML-1M dev the sum of the two ranks better than
either (docs/recommendation.md): SASRec alone 0.1986 full NDCG@10 / 0.8545 sampled HR@10, EASE alone
0.05 / 0.72, the sum 0.2099 / 0.8690.

Low rank, why it is exact enough: with X^T X = V diag(s) V^T, P = I / l2 + V diag(1/(s + l2) - 1/l2) V^T.
The I / l2 part only reaches B's diagonal, so off the diagonal B = V f(s) V^T diag(-1 / diag(P)) with
f(s) = 1/(s + l2) - 1/l2, whose terms vanish for s << l2: keep the `rank` largest eigenvalues. Then
x_u B = (x_u A) C with A = V_r f_r [N, r] and C = V_r^T diag(-1 / diag(P)) [r, N]: a sum of history
rows of A, one small matrix product. The product has a diagonal where EASE has 0 (an item's
co-occurrence with itself, larger for popular items); CooccurrenceScores subtracts it, so an item of
the history (recommended again when a client turns exclude_seen off) is scored by the others only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class CooccurrenceConfig:
    l2: float  # EASE's ridge penalty
    rank: int  # eigenvalues of X^T X kept
    weight: float  # the term's weight beside SASRec's scores (which are softmax logits)


def gram_matrix(sequences: Iterable[Sequence[int]], num_items: int) -> np.ndarray:
    """X^T X [N, N] (float64) for the 0/1 user x item matrix X of the sequences (item ids 1..N; an item
    repeated in one sequence counts once)."""
    rows = [np.unique(np.asarray(seq, dtype=np.int64)) - 1 for seq in sequences]
    users = np.zeros((len(rows), num_items), dtype=np.float64)
    for row, items in enumerate(rows):
        users[row, items] = 1.0
    return users.T @ users


def eigen(gram: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(eigenvalues largest first, eigenvectors as columns) of the symmetric gram matrix."""
    eigenvalues, eigenvectors = np.linalg.eigh(gram)
    order = np.argsort(-eigenvalues)
    return eigenvalues[order], eigenvectors[:, order]


def ease_low_rank(gram_eigen: tuple[np.ndarray, np.ndarray], l2: float, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """(history_factors [N + 1, rank] with row 0 = padding = 0, item_factors [rank, N]), float32, such that
    the sum over a history's items of history_factors @ item_factors ~ EASE's x_u B off the diagonal
    (exact at rank N). `gram_eigen` = eigen(gram_matrix(...)), computed once for any l2 and rank."""
    eigenvalues, eigenvectors = gram_eigen
    inverse_diagonal = (eigenvectors**2) @ (1.0 / (eigenvalues + l2))  # diag(P), from all eigenvalues
    kept = eigenvectors[:, :rank]
    shrink = 1.0 / (eigenvalues[:rank] + l2) - 1.0 / l2
    history_factors = np.zeros((eigenvectors.shape[0] + 1, rank), dtype=np.float32)
    history_factors[1:] = kept * shrink[None, :]
    item_factors = (kept.T / -inverse_diagonal[None, :]).astype(np.float32)
    return history_factors, item_factors


def ease_exact(gram: np.ndarray, l2: float) -> np.ndarray:
    """EASE's B [N, N] in closed form (what ease_low_rank approximates; tests and measurements)."""
    inverse = np.linalg.inv(gram + l2 * np.eye(gram.shape[0]))
    weights = inverse / -np.diag(inverse)[None, :]
    np.fill_diagonal(weights, 0.0)
    return weights


class CooccurrenceScores(nn.Module):
    """whole_history [B, M] (distinct item ids, right-padded with 0) -> weight * EASE scores [B, N]
    (column j = item j + 1). The factors are stored in float16 (half the file; the computation is
    float32), the weight folded into the item factors."""

    # Registered as buffers in __init__ (declared here for the type checker: Module attributes are untyped).
    history_factors: torch.Tensor
    item_factors: torch.Tensor
    self_scores: torch.Tensor

    def __init__(self, history_factors: np.ndarray, item_factors: np.ndarray, weight: float) -> None:
        super().__init__()
        self.register_buffer("history_factors", torch.from_numpy(history_factors).half())
        self.register_buffer("item_factors", torch.from_numpy(item_factors * weight).half())
        # The low-rank product's diagonal, from the stored (rounded) factors: index = item id, 0 = padding.
        diagonal = (self.history_factors[1:].float() * self.item_factors.float().T).sum(dim=1)
        self.register_buffer("self_scores", torch.cat([torch.zeros(1), diagonal]))

    def forward(self, whole_history: torch.Tensor) -> torch.Tensor:
        summed = self.history_factors[whole_history].float().sum(dim=1)
        scores = summed @ self.item_factors.float()
        own = torch.zeros(whole_history.shape[0], self.self_scores.shape[0], device=whole_history.device).scatter_add(
            1, whole_history, self.self_scores[whole_history])
        return scores - own[:, 1:]


def cooccurrence_scores(sequences: Iterable[Sequence[int]], num_items: int,
                        config: CooccurrenceConfig) -> CooccurrenceScores:
    history_factors, item_factors = ease_low_rank(eigen(gram_matrix(sequences, num_items)), config.l2, config.rank)
    return CooccurrenceScores(history_factors, item_factors, config.weight)
