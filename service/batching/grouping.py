"""Which queued calls run together: the oldest first, then those of the most similar length.

Kept apart from the asyncio machinery so the choice can be tested as a plain function. A batch is
padded to its longest text, so mixing a 5-token tweet with a 250-token review makes the tweet cost
250 tokens; grouping by length keeps that padding (and the token budget it counts against) down.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    size: int        # texts in the call
    tokens: int      # estimated tokens of its longest text
    # Calls only share a batch with calls of the same group (V2 raw tensors: same graph, same
    # per-row shapes and outputs, so they stack without padding). None for task calls: all mix.
    group: Hashable = None


def choose_batch(queued: Sequence[Candidate], max_batch_size: int, token_budget: int) -> list[int]:
    """Indices (into `queued`, oldest first) of the calls to run now; never empty if `queued` is not.

    The oldest call always goes in (no starvation), even alone above the limits: a call is never split.
    Others of the oldest call's group join, closest in length first, while texts <= max_batch_size
    and texts x longest <= budget.
    """
    if not queued:
        return []
    anchor = queued[0]
    chosen = [0]
    texts, longest = anchor.size, anchor.tokens
    same_group = [i for i in range(1, len(queued)) if queued[i].group == anchor.group]
    by_similarity = sorted(same_group, key=lambda i: (abs(queued[i].tokens - anchor.tokens), i))
    for index in by_similarity:
        candidate = queued[index]
        new_texts, new_longest = texts + candidate.size, max(longest, candidate.tokens)
        if new_texts > max_batch_size or new_texts * new_longest > token_budget:
            continue
        chosen.append(index)
        texts, longest = new_texts, new_longest
        if texts == max_batch_size:
            break
    return sorted(chosen)
