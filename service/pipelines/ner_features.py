"""Word features of the BiLSTM-CRF tagger: word id, character ids, word shape.

Shared by training and the served pipeline (numpy only), so both compute identical inputs. The
vocabularies live beside the model in vocab.json ({"words": [...], "chars": [...]}, index 0 = <pad>,
index 1 = <unk>).

Word ids are looked up on a normalised key (lowercased, digits -> 0, URLs -> <url>): casing is carried
by the shape feature and by the case-sensitive character CNN instead, which is what lets the tagger
use capitalisation that an uncased encoder throws away.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

PAD, UNK, URL = "<pad>", "<unk>", "<url>"
SHAPES = ("lower", "upper", "title", "mixed", "number", "alnum", "mention", "hashtag", "url", "punct", "other")
SHAPE_ID = {shape: i + 1 for i, shape in enumerate(SHAPES)}  # 0 is padding
_URL = re.compile(r"^(https?://|www\.)", re.IGNORECASE)
_DIGIT = re.compile(r"\d")


def word_key(word: str) -> str:
    if _URL.match(word):
        return URL
    return _DIGIT.sub("0", word.lower())


def word_shape(word: str) -> str:
    if _URL.match(word):
        return "url"
    if len(word) > 1 and word[0] == "@":
        return "mention"
    if len(word) > 1 and word[0] == "#":
        return "hashtag"
    if word.isdigit():
        return "number"
    if word.isalpha():
        if word.islower():
            return "lower"
        if word.isupper():
            return "upper" if len(word) > 1 else "title"
        return "title" if word[0].isupper() and word[1:].islower() else "mixed"
    if any(c.isalnum() for c in word):
        return "alnum"
    if all(not c.isalnum() and ord(c) < 0x2000 for c in word):
        return "punct"
    return "other"  # emoji and other symbols


class WordFeaturizer:
    def __init__(self, words: Sequence[str], chars: Sequence[str], max_word_chars: int) -> None:
        self.word_index = {w: i for i, w in enumerate(words)}
        self.char_index = {c: i for i, c in enumerate(chars)}
        self.max_word_chars = max_word_chars
        self.unk = self.word_index[UNK]
        self.char_unk = self.char_index[UNK]

    def word_ids(self, words: Sequence[str]) -> list[int]:
        return [self.word_index.get(word_key(w), self.unk) for w in words]

    def char_ids(self, word: str) -> list[int]:
        return [self.char_index.get(c, self.char_unk) for c in word[: self.max_word_chars]]

    def batch(self, sentences: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
        """Padded model inputs for a batch of word lists (each non-empty)."""
        width = max(len(s) for s in sentences)
        chars_width = max(min(len(w), self.max_word_chars) for s in sentences for w in s)
        word_ids = np.zeros((len(sentences), width), dtype=np.int64)
        shape_ids = np.zeros((len(sentences), width), dtype=np.int64)
        char_ids = np.zeros((len(sentences), width, max(chars_width, 1)), dtype=np.int64)
        mask = np.zeros((len(sentences), width), dtype=np.int64)
        for i, words in enumerate(sentences):
            word_ids[i, : len(words)] = self.word_ids(words)
            shape_ids[i, : len(words)] = [SHAPE_ID[word_shape(w)] for w in words]
            mask[i, : len(words)] = 1
            for j, word in enumerate(words):
                ids = self.char_ids(word)
                char_ids[i, j, : len(ids)] = ids
        return {"word_ids": word_ids, "char_ids": char_ids, "shape_ids": shape_ids, "mask": mask}
