"""Linear-chain CRF decoding in numpy, from exported emissions and the CRF parameters (crf.json).

Same scoring as training/models/crf.py: start[y_0] + sum_t emissions[t, y_t] + sum_t transitions[y_{t-1},
y_t] + end[y_last]. `viterbi` gives the best path (tests pin it to the torch decoder); `marginals`
gives p(y_t = k | sentence) by forward-backward, which the pipeline averages over an entity's words
as its confidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CRFParameters:
    start: np.ndarray  # [K]
    end: np.ndarray  # [K]
    transitions: np.ndarray  # [K from, K to]

    @classmethod
    def from_json(cls, data: dict[str, list]) -> CRFParameters:
        return cls(*(np.asarray(data[key], dtype=np.float64) for key in ("start", "end", "transitions")))


# A transition BIO forbids scores this much lower: finite, so forward-backward never computes
# -inf - -inf, and far below any real path (log-probabilities of a sentence stay above -1e3).
FORBIDDEN = -1e4


def bio_constraints(labels: Sequence[str]) -> CRFParameters:
    """A chain that allows exactly the valid BIO sequences and prefers none of them: I-x may only follow
    B-x or I-x. Viterbi with it over a tagger's per-word log-probabilities gives the most probable tag
    sequence that reads as whole entities (a tagger without a CRF, decoded by argmax, can emit an I-x
    after O, which conlleval then counts as an entity of its own)."""
    size = len(labels)
    start, transitions = np.zeros(size), np.zeros((size, size))
    for j, to in enumerate(labels):
        if to.startswith("I-"):
            start[j] = FORBIDDEN
            for i, source in enumerate(labels):
                if source[2:] != to[2:] or source == "O":
                    transitions[i, j] = FORBIDDEN
    return CRFParameters(start, np.zeros(size), transitions)


def viterbi(emissions: np.ndarray, crf: CRFParameters) -> list[int]:
    """Best tag sequence for one sentence's emissions [T, K] (T >= 1)."""
    emissions = emissions.astype(np.float64)
    score = crf.start + emissions[0]
    backpointers = np.zeros(emissions.shape, dtype=np.int64)
    for t in range(1, len(emissions)):
        candidate = score[:, None] + crf.transitions  # [from, to]
        backpointers[t] = candidate.argmax(axis=0)
        score = candidate.max(axis=0) + emissions[t]
    tag = int((score + crf.end).argmax())
    path = [tag]
    for t in range(len(emissions) - 1, 0, -1):
        tag = int(backpointers[t, tag])
        path.append(tag)
    return path[::-1]


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    top = x.max(axis=axis, keepdims=True)
    return (top + np.log(np.exp(x - top).sum(axis=axis, keepdims=True))).squeeze(axis)


def marginals(emissions: np.ndarray, crf: CRFParameters) -> np.ndarray:
    """p(y_t = k | sentence), [T, K]; every row sums to 1."""
    emissions = emissions.astype(np.float64)
    length = len(emissions)
    alpha = np.zeros(emissions.shape)
    beta = np.zeros(emissions.shape)
    alpha[0] = crf.start + emissions[0]
    for t in range(1, length):
        alpha[t] = _logsumexp(alpha[t - 1][:, None] + crf.transitions, axis=0) + emissions[t]
    beta[-1] = crf.end
    for t in range(length - 2, -1, -1):
        beta[t] = _logsumexp(crf.transitions + (emissions[t + 1] + beta[t + 1])[None, :], axis=1)
    log_z = _logsumexp(alpha[-1] + crf.end, axis=0)
    return np.exp(alpha + beta - log_z)
