"""Sentiment.Analyze on `sentiment-minilm-int8` over gRPC, against the real server: emoji and emoticons reach
the model as their names (its manifest's classification.replacements table), and every token answered still
points into the text as sent."""

from __future__ import annotations

import pytest
from test_grpc_sentiment import analyze

MODEL = "sentiment-minilm-int8"
# What the version's table calls each symbol used below (training/export/text_replacements.py).
NAMES = {"🔥": "fire", ":)": "slightly smiling face", "😤": "face with steam from nose"}


def test_a_token_of_an_emoji_name_points_at_the_emoji_and_the_others_at_the_words(sentiment) -> None:
    text = "  Dinner was 🔥🔥 :) but the wait 😤"
    response = analyze(sentiment, [text], model=MODEL)
    assert response.model.name == MODEL
    (result,) = response.results
    assert sum(t.weight for t in result.tokens) == pytest.approx(1, abs=1e-4)
    named = set()
    for token in result.tokens:
        piece = text[token.start : token.end]
        word = token.token.removeprefix("##")
        if piece in NAMES:
            assert word in NAMES[piece].replace("-", " - ").split(), (token, piece)
            named.add(token.start)
        else:
            assert word == piece.lower(), (token, piece)
    assert named == {text.index("🔥"), text.index("🔥") + 1, text.index(":)"), text.index("😤")}
    assert "[UNK]" not in {t.token for t in result.tokens}


def test_emoji_alone_are_read_by_their_meaning(sentiment) -> None:
    loved, crying = analyze(sentiment, ["😍😍😍", "😭😭😭"], model=MODEL).results
    assert (loved.label, crying.label) == ("positive", "negative")


def test_the_largest_allowed_request_is_answered_and_truncated(sentiment) -> None:
    # 2,000 emoji become ~30,000 characters of names: still one call, cut at the model's 128 tokens
    longest = "😀" * 2000
    response = analyze(sentiment, [longest] + ["fine"] * 63, model=MODEL)
    assert len(response.results) == 64
    assert response.results[0].truncated and not response.results[1].truncated
    assert all(longest[t.start : t.end] == "😀" for t in response.results[0].tokens)
