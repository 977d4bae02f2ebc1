"""One decoded output and the GNMT length penalty that scores it (shared by greedy and beam search)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def length_penalty(length: int, alpha: float) -> float:
    """GNMT (Wu et al. 2016): ((5 + |Y|) / 6) ** alpha; alpha 0 = plain sum of log-probs."""
    return float(((5.0 + length) / 6.0) ** alpha)


@dataclass(frozen=True)
class Hypothesis:
    token_ids: list[int]          # without [BOS] and [EOS]
    log_prob: float               # sum of the log-probs of every generated token, [EOS] included
    length: int                   # tokens scored: len(token_ids) + 1 if it ended with [EOS]
    score: float                  # log_prob / length_penalty(length, alpha): what beam search ranks by
    attention: np.ndarray | None  # [len(token_ids), src_len] cross-attention of the step producing each token
    # The log-prob of each scored token ([EOS] included when it ended), for the translation confidence.
    token_log_probs: list[float] = field(default_factory=list)
