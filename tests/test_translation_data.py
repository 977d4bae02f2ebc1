"""The translation data: cleaning, a deterministic whole-chapter split, token batches, the joint tokenizer."""

from __future__ import annotations

import pytest

from training.batching import token_budget_batches
from training.configs import translation_transformer as cfg
from training.data.translation import (
    MAX_WORDS,
    VERSE_MARKER,
    VersePair,
    clean_english,
    clean_french,
    clean_pairs,
    load_splits,
    split,
)
from training.tokenizer import BOS, EOS, PAD, UNK, train_joint_bpe


@pytest.fixture(scope="module")
def splits() -> tuple[dict[str, list[VersePair]], dict[str, str]]:
    return load_splits()


def test_cleaning() -> None:
    assert clean_english("God`s  Spirit said, `Go.`\n") == "God's Spirit said, 'Go.'"
    assert clean_french("(7:26) L'Éternel dit à Moïse:") == "L'Éternel dit à Moïse:"
    assert clean_french("Et Jésus lui dit: Va. (10:53) Aussitôt il recouvra la vue.") is None  # two verses merged
    rows = [(1, 1, 1, "dummy verses inserted by amos", "Texte."), (1, 1, 2, "...", "Texte."),
            (1, 1, 3, "Text.", " "), (1, 1, 4, "Jesus wept.", "Jésus pleura.")]
    assert clean_pairs(rows) == [VersePair(1, 1, 4, "Jesus wept.", "Jésus pleura.")]


def test_sizes_and_recorded_choices(splits) -> None:
    parts, info = splits
    # Pinned: a change here changes the split hashes recorded beside every checkpoint and manifest.
    assert {k: len(v) for k, v in parts.items()} == {"train": 26453, "dev": 589, "test": 1091}
    assert info["cleaned_pairs"] == "31032" and info["train_max_words"] == str(MAX_WORDS)
    assert all(p.max_words <= MAX_WORDS for p in parts["train"])
    assert any(p.max_words > MAX_WORDS for p in parts["test"]), "test is reported on every held-out verse"
    for pair in (p for rows in parts.values() for p in rows):
        assert "`" not in pair.english and not VERSE_MARKER.search(pair.french) and pair.english and pair.french


def test_whole_chapters_are_held_out(splits) -> None:
    parts, _ = splits
    chapters = {name: {(p.book, p.chapter) for p in rows} for name, rows in parts.items()}
    assert not chapters["train"] & chapters["dev"]
    assert not chapters["train"] & chapters["test"]
    assert not chapters["dev"] & chapters["test"]
    total = sum(len(c) for c in chapters.values())
    for name in ("dev", "test"):
        assert 0.015 < len(chapters[name]) / total < 0.045, name  # ~3% of the 1,189 chapters each


def test_split_is_deterministic_and_ignores_row_order(splits) -> None:
    parts, info = splits
    everything = [p for rows in parts.values() for p in rows]
    again = split(list(reversed(everything)))
    assert again["test"] == parts["test"] and again["dev"] == parts["dev"]
    assert load_splits()[1] == info


def test_token_budget_batches() -> None:
    lengths = [(i * 37) % 60 + 1 for i in range(3000)] + [500]
    batches = token_budget_batches(lengths, max_tokens=400, seed=3, bucket_items=1000)
    assert batches == token_budget_batches(lengths, max_tokens=400, seed=3, bucket_items=1000)
    assert batches != token_budget_batches(lengths, max_tokens=400, seed=4, bucket_items=1000)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) * max(lengths[i] for i in batch) <= 400 or len(batch) == 1
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert padded < 1.1 * sum(lengths)  # sorted buckets: little padding


@pytest.fixture(scope="module")
def tokenizer(splits):
    parts, _ = splits
    return train_joint_bpe([t for p in parts["train"] for t in (p.english, p.french)], **cfg.TOKENIZER)


def test_tokenizer_special_tokens(tokenizer) -> None:
    assert [tokenizer.token_to_id(t) for t in (PAD, UNK, BOS, EOS)] == [0, 1, 2, 3]
    assert tokenizer.get_vocab_size() == cfg.TOKENIZER["vocab_size"]


def test_tokenizer_round_trips_held_out_verses(tokenizer, splits) -> None:
    parts, _ = splits
    texts = [t for name in ("dev", "test") for p in parts[name] for t in (p.english, p.french)]
    encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
    decoded = tokenizer.decode_batch([e.ids for e in encodings])
    assert [t for t, d in zip(texts, decoded, strict=True) if t != d] == []
    # Special tokens (as the decoder emits them around a sentence) vanish without disturbing spacing.
    ids = [2, *tokenizer.encode("L'Éternel dit: Va, vite!", add_special_tokens=False).ids, 3, 0]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "L'Éternel dit: Va, vite!"
    # A character never seen in training (no guillemets in LSG) becomes [UNK] instead of failing.
    assert tokenizer.token_to_id(UNK) in tokenizer.encode("«vite»", add_special_tokens=False).ids
