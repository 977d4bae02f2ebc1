"""A translation's confidence: features of what the model saw and did, and the calibrated score over them.

The features (`confidence_features`) come from the best hypothesis as decoded (its tokens' log-probs and
its cross-attention) and from the source's subwords; the score is a logistic regression over them whose
coefficients were fitted offline (training/calibrate_translation.py) and stored in the manifest's
`decoding.confidence` section, so the server needs numpy alone. A model without that section gets no
confidence at all, never a made-up one. docs/translation.md "Confidence" has the measured separation.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.model.manifest_schema import ConfidenceSection

# The features, in the order the manifest's coefficients may name them.
FEATURES = (
    "mean_log_prob",       # mean log-prob of the best hypothesis's tokens, [EOS] included
    "min_log_prob",        # its least likely token
    "subwords_per_word",   # source fragmentation: words the vocabulary lacks split into many pieces
    "unknown_rate",        # share of source subwords that are [UNK] or byte-fallback <0xNN> tokens
    "coverage",            # share of source subwords receiving attention mass >= the threshold in total
    "attention_entropy",   # mean entropy of each output token's attention row, / log(source length)
    "log_length_ratio",    # log((output tokens + 1) / (source subwords + 1))
    "repetition",          # share of output bigrams that repeat an earlier one (loops)
)
# A source subword counts as covered once the output's attention to it adds up to this (half a token's).
COVERAGE_THRESHOLD = 0.5
BYTE_TOKEN = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")
# The probability assigned below this is as good as 0 for a reader; keeps exp() in range.
_LOGIT_LIMIT = 40.0


@dataclass(frozen=True)
class ConfidenceInputs:
    """What one translation's features are computed from (the best hypothesis only)."""

    source_text: str
    source_ids: Sequence[int]          # subwords + [EOS]
    output_ids: Sequence[int]          # without [EOS]
    token_log_probs: Sequence[float]   # one per scored output token, [EOS] included when it ended
    attention: np.ndarray              # [len(output_ids), >= len(source_ids)] cross-attention


def confidence_features(inputs: ConfidenceInputs, unknown_ids: frozenset[int], coverage_threshold: float
                        ) -> dict[str, float]:
    """The named features of one translation; every value finite."""
    source_length = len(inputs.source_ids)             # [EOS] included: it is an attention column
    subwords = max(1, source_length - 1)
    words = max(1, len(inputs.source_text.split()))
    log_probs = np.asarray(inputs.token_log_probs, dtype=np.float64)
    # A hypothesis always scores at least one token; an empty list only comes from a zero-step budget.
    mean_log_prob = float(log_probs.mean()) if len(log_probs) else 0.0
    min_log_prob = float(log_probs.min()) if len(log_probs) else 0.0
    attention = np.asarray(inputs.attention, dtype=np.float64)[:, :source_length]
    if len(attention):
        received = attention[:, : source_length - 1].sum(axis=0)  # per real subword, over the output
        coverage = float((received >= coverage_threshold).mean()) if source_length > 1 else 0.0
        rows = np.clip(attention, 1e-12, None)
        rows = rows / rows.sum(axis=1, keepdims=True)
        entropy = -(rows * np.log(rows)).sum(axis=1)
        attention_entropy = float(entropy.mean() / math.log(source_length)) if source_length > 1 else 0.0
    else:
        coverage, attention_entropy = 0.0, 0.0
    output = list(inputs.output_ids)
    bigrams = list(itertools.pairwise(output))
    repetition = 1.0 - len(set(bigrams)) / len(bigrams) if bigrams else 0.0
    return {
        "mean_log_prob": mean_log_prob,
        "min_log_prob": min_log_prob,
        "subwords_per_word": subwords / words,
        "unknown_rate": sum(1 for i in inputs.source_ids[:-1] if i in unknown_ids) / subwords,
        "coverage": coverage,
        "attention_entropy": attention_entropy,
        "log_length_ratio": math.log((len(output) + 1) / (subwords + 1)),
        "repetition": repetition,
    }


def unknown_token_ids(vocabulary: dict[str, int], unk_id: int | None) -> frozenset[int]:
    """[UNK] and the byte-fallback tokens: the source pieces the vocabulary had no subword for."""
    ids = {i for token, i in vocabulary.items() if BYTE_TOKEN.match(token)}
    if unk_id is not None:
        ids.add(unk_id)
    return frozenset(ids)


@dataclass(frozen=True)
class ConfidenceModel:
    """The fitted logistic regression: sigmoid(intercept + sum(coef * (feature - mean) / scale))."""

    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    coefficients: np.ndarray
    intercept: float
    coverage_threshold: float

    @classmethod
    def from_section(cls, section: ConfidenceSection) -> ConfidenceModel:
        return cls(features=tuple(section.features), mean=np.asarray(section.mean, dtype=np.float64),
                   scale=np.asarray(section.scale, dtype=np.float64),
                   coefficients=np.asarray(section.coefficients, dtype=np.float64),
                   intercept=float(section.intercept), coverage_threshold=float(section.coverage_threshold))

    def score(self, features: dict[str, float]) -> float:
        """The confidence in [0, 1]."""
        values = np.array([features[name] for name in self.features], dtype=np.float64)
        logit = self.intercept + float(((values - self.mean) / self.scale) @ self.coefficients)
        return float(1.0 / (1.0 + math.exp(-min(_LOGIT_LIMIT, max(-_LOGIT_LIMIT, logit)))))
