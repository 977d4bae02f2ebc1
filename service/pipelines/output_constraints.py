"""Rules every decoded output obeys, applied to a step's log-probs before the search picks (issue #19 item 3).

- **No empty translation.** [EOS] is not allowed before `min_tokens` output tokens. A non-empty source
  ("." included) never comes back as "": the v1 transformer's beam 4 returned "" for ".".
- **No repetition loops.** A small model falls into loops ("s'enflammamamama", "et je te donnerai ...
  et je te donnerai ... et je te donnerai"): 15.5% of the transformer's greedy test outputs repeated an
  n-gram three times in a row. With `max_loop_ngram` = N, an n-gram (n <= N, in subword tokens) that has
  just occurred twice in a row may not start a third time: the token that would begin the third copy is
  forbidden for that one step. Two copies stay allowed ("très très", "non, non"), so ordinary repetition
  is untouched; only the third copy in a row is cut, and the search takes its next-best token instead.

A forbidden token gets FORBIDDEN as its log-prob, so greedy argmax and beam top-k never pick it while
there is any other choice (at most N + 1 tokens of a vocabulary are ever forbidden at once). The
log-prob reported for a chosen token is the model's own: only unchosen tokens are touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

FORBIDDEN = -1e9  # finite, like the beam search's NEG_INF: sums and comparisons stay free of inf - inf


@dataclass(frozen=True)
class OutputConstraints:
    min_tokens: int = 0      # [EOS] forbidden while an output has fewer tokens than this
    max_loop_ngram: int = 0  # forbid starting a third consecutive copy of any n-gram, n <= this; 0: off

    @property
    def active(self) -> bool:
        return self.min_tokens > 0 or self.max_loop_ngram > 0

    def apply(self, log_probs: np.ndarray, histories: Sequence[Sequence[int]] | np.ndarray, eos_id: int) -> None:
        """Forbid, in place, what each row may not produce next; row i has produced histories[i] so far."""
        if not self.active:
            return
        for row, history in enumerate(histories):
            if len(history) < self.min_tokens:
                log_probs[row, eos_id] = FORBIDDEN
            for token in loop_starts(history, self.max_loop_ngram):
                log_probs[row, token] = FORBIDDEN


UNCONSTRAINED = OutputConstraints()  # the model's own choices: what export parity compares against torch


def loop_starts(history: Sequence[int] | np.ndarray, max_ngram: int) -> set[int]:
    """The tokens that would start a third consecutive copy of an n-gram (n <= max_ngram) ending the history."""
    tokens = [int(t) for t in history[-2 * max_ngram :]] if max_ngram else []
    starts = set()
    for n in range(1, max_ngram + 1):
        if len(tokens) >= 2 * n and tokens[-n:] == tokens[-2 * n : -n]:
            starts.add(tokens[-n])
    return starts


def longest_loop(tokens: Sequence[int] | Sequence[str], max_ngram: int = 4) -> int:
    """The most consecutive copies of any n-gram (n <= max_ngram) in a sequence: the measure of a loop."""
    best = 1 if len(tokens) else 0
    for n in range(1, max_ngram + 1):
        for start in range(len(tokens) - n + 1):
            copies = 1
            while tokens[start + copies * n : start + (copies + 1) * n] == tokens[start : start + n]:
                copies += 1
            best = max(best, copies)
    return best

