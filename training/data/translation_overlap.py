"""Near-duplicate passages between the training verses and a held-out split (issue #19 item 3).

The chapter split keeps whole chapters apart, but the Bible repeats whole passages in other books
(2 Chronicles 9 ~ 1 Kings 10, 2 Kings 18 ~ Isaiah 36, Psalm 18 ~ 2 Samuel 22, ...): a held-out verse can
have a near-verbatim twin in training, and a model that memorised the twin scores far above what it
does on text it has not seen. The measure is the one the issue used: the share of a held-out verse's
reference (French) word 4-grams found inside ONE training verse, maximised over training verses. A verse
at or above LEAK_THRESHOLD (half its 4-grams) counts as leaked; the "clean" split is the rest.

Words are lower-cased and split on whitespace after sacreBLEU's 13a tokenisation (the tokenisation BLEU
itself counts 4-grams with), so "clean" means: no training verse could lend it half of its BLEU 4-grams.
A verse with fewer than 4 words has no 4-grams and is never counted as leaked.

The posting lists make this one pass over the held-out verses (~1k test verses against ~28k training
verses: about a second), deterministic and independent of row order.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

N = 4
LEAK_THRESHOLD = 0.5

_tokenize = Tokenizer13a()


def ngrams(text: str, n: int = N) -> set[tuple[str, ...]]:
    words = _tokenize(text.lower()).split()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


@dataclass(frozen=True)
class Overlap:
    """How much of one held-out verse one training verse contains."""

    share: float  # shared 4-grams / the held-out verse's 4-grams, in [0, 1]
    train_index: int  # the training verse with the largest share (-1: none shares any)

    @property
    def leaked(self) -> bool:
        return self.share >= LEAK_THRESHOLD


def max_overlaps(held_out: Sequence[str], train: Sequence[str], n: int = N) -> list[Overlap]:
    """For every held-out text, the training text that contains most of its n-grams, and the share."""
    postings: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for index, text in enumerate(train):
        for gram in ngrams(text, n):
            postings[gram].append(index)
    overlaps = []
    for text in held_out:
        grams = ngrams(text, n)
        counts: Counter[int] = Counter()
        for gram in grams:
            counts.update(postings.get(gram, ()))
        if not grams or not counts:
            overlaps.append(Overlap(0.0, -1))
            continue
        # Ties go to the earliest training verse, so the record does not depend on Counter order.
        best, shared = min(counts.items(), key=lambda item: (-item[1], item[0]))
        overlaps.append(Overlap(shared / len(grams), best))
    return overlaps


def leaked_mask(held_out: Sequence[str], train: Sequence[str]) -> list[bool]:
    return [overlap.leaked for overlap in max_overlaps(held_out, train)]
