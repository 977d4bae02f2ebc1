"""The NER data: WNUT-16 tweets read from the installed package, a deterministic split by tweet with
recorded hashes, raw text with exact gold spans, and gold tags projected onto the served words."""

from __future__ import annotations

import pytest

from training.data.ner import ENTITY_TYPES, TAGS, Tweet, load_splits, read_tweets, split, split_hashes, word_tags


@pytest.fixture(scope="module")
def tweets() -> list[Tweet]:
    return read_tweets()[0]


def test_the_package_holds_the_documented_corpus(tweets) -> None:
    assert len(tweets) == 2394
    assert sum(len(t.tokens) for t in tweets) == 46469
    first_tags = [tag for t in tweets for tag in t.tags if tag.startswith("B-")]
    assert first_tags.count("B-person") == 449 and first_tags.count("B-tvshow") == 34
    assert set(TAGS) == {"O"} | {f"{p}-{k}" for k in ENTITY_TYPES for p in "BI"}


def test_split_is_80_10_10_disjoint_and_independent_of_file_order(tweets) -> None:
    parts = split(tweets)
    assert [len(parts[k]) for k in ("train", "dev", "test")] == [1915, 239, 240]
    indices = {k: {t.index for t in v} for k, v in parts.items()}
    assert not indices["train"] & indices["dev"]
    assert not indices["train"] & indices["test"]
    assert not indices["dev"] & indices["test"]
    again = split(list(reversed(tweets)))
    assert split_hashes(again) == split_hashes(parts)


def test_split_hashes_change_when_a_label_changes(tweets) -> None:
    parts = split(tweets)
    changed = dict(parts)
    victim = parts["test"][0]
    changed["test"] = [Tweet(victim.index, victim.tokens, ("B-person", *victim.tags[1:])), *parts["test"][1:]]
    assert split_hashes(changed)["test"] != split_hashes(parts)["test"]
    assert split_hashes(changed)["train"] == split_hashes(parts)["train"]


def test_load_splits_records_data_and_split_hashes() -> None:
    _, info = load_splits()
    assert {"data_sha256", "train_sha256", "dev_sha256", "test_sha256"} <= set(info)
    assert all(len(info[k]) == 64 for k in ("data_sha256", "train_sha256", "dev_sha256", "test_sha256"))
    assert load_splits()[1] == info  # deterministic


def test_raw_text_is_tokens_joined_by_single_spaces_with_exact_spans(tweets) -> None:
    for tweet in tweets[:300]:
        assert [tweet.text[s:e] for s, e in tweet.token_spans] == list(tweet.tokens)


def test_projection_onto_served_words_loses_no_gold_token_tag(tweets) -> None:
    for tweet in tweets:
        words, tags = word_tags(tweet)
        first_word_tag = {}
        for word, tag in zip(words, tags, strict=True):
            token = next(i for i, (s, e) in enumerate(tweet.token_spans) if s <= word.start and word.end <= e)
            first_word_tag.setdefault(token, tag)
        assert [first_word_tag[i] for i in range(len(tweet.tokens))] == list(tweet.tags)


def test_a_token_split_into_several_words_continues_its_entity() -> None:
    tweet = Tweet(0, ("I", "love", "U.S.", "today"), ("O", "O", "B-geo-loc", "O"))
    words, tags = word_tags(tweet)
    assert [w.text for w in words] == ["I", "love", "U", ".", "S", ".", "today"]
    assert tags == ["O", "O", "B-geo-loc", "I-geo-loc", "I-geo-loc", "I-geo-loc", "O"]
