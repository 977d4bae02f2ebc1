"""Entity offsets: whatever the text (emoji, accents, URLs, repeated spaces, any Unicode), every word
and every entity the NER pipeline returns slices the raw text to exactly its surface text."""

from __future__ import annotations

import pytest
from exported_models import EXPORTED, latest_version_dir
from hypothesis import given, settings
from hypothesis import strategies as st

from service.pipelines.ner import NerPipeline, TaggedWord, entities_from_tags
from service.pipelines.ner_words import split_words
from service.runtime.version_loader import load_version

PIECES = st.sampled_from([
    "Paris", "New York", "Zoë", "Beyoncé", "São Paulo", "Ünal", "e\u0301", "@justinbieber", "#NYC", "😀", "👍🏽",
    "👩\u200d👩\u200d👧", "1️⃣", "http://t.co/Ab12?x=1", "www.example.com/a", "it's", "U.S.", "!!", "...", "  ", "\t",
    " \n ", "McDonald's", "iPhone", "2016", "東京", "ok", "Obama", "Apple", "$5", "—",
])
TEXTS = st.one_of(
    st.lists(PIECES, min_size=1, max_size=25).map(" ".join),
    st.lists(PIECES, min_size=1, max_size=25).map("".join),
    st.text(min_size=1, max_size=80),
)
# Python's str.isspace() counts these as whitespace; the word pattern's \s (Oniguruma) does not, so a
# word may be one of them.
NOT_SPACE_TO_WORDS = "\x1c\x1d\x1e\x1f\x85"
TAGS = st.sampled_from(["O", "B-person", "I-person", "B-geo-loc", "I-geo-loc", "I-other"])


@settings(max_examples=300, deadline=None)
@given(text=TEXTS)
def test_words_slice_the_text_never_hold_whitespace_and_cover_every_other_character(text: str) -> None:
    words = split_words(text)
    covered = set()
    for word in words:
        assert text[word.start : word.end] == word.text
        assert word.text and not any(c.isspace() for c in word.text if c not in NOT_SPACE_TO_WORDS)
        covered.update(range(word.start, word.end))
    assert [w.start for w in words] == sorted(w.start for w in words)
    uncovered = "".join(text[i] for i in range(len(text)) if i not in covered)
    assert not uncovered.strip(), uncovered


@settings(max_examples=300, deadline=None)
@given(text=TEXTS, tags=st.lists(TAGS, min_size=200, max_size=200))
def test_entities_built_from_any_tags_slice_the_text(text: str, tags: list[str]) -> None:
    words = [TaggedWord(w.text, w.start, w.end, tag, 0.5) for w, tag in zip(split_words(text), tags, strict=False)]
    for entity in entities_from_tags(text, words):
        assert text[entity.start : entity.end] == entity.text
        assert entity.text == entity.text.strip(" \t\n\r\v\f")


def test_bio_is_read_the_conlleval_way() -> None:
    text = "Paris Hilton visited New York City"
    tags = ["B-person", "I-person", "O", "I-geo-loc", "I-geo-loc", "B-geo-loc"]
    words = [TaggedWord(w.text, w.start, w.end, t, 0.8) for w, t in zip(split_words(text), tags, strict=True)]
    found = [(e.type, e.text, e.start, e.end) for e in entities_from_tags(text, words)]
    assert found == [("person", "Paris Hilton", 0, 12), ("geo-loc", "New York", 21, 29), ("geo-loc", "City", 30, 34)]


COMMITTED = [n for n in ("ner-bilstm-crf", "ner-minilm-int8") if (EXPORTED / n).is_dir()]


@pytest.fixture(scope="module", params=COMMITTED)
def pipeline(request) -> NerPipeline:
    return NerPipeline(load_version(latest_version_dir(request.param)))


@settings(max_examples=30, deadline=None)
@given(texts=st.lists(TEXTS, min_size=1, max_size=4))
def test_served_entities_and_tokens_slice_the_raw_text(pipeline, texts: list[str]) -> None:
    for text, prediction in zip(texts, pipeline(texts), strict=True):
        for entity in prediction.entities:
            assert text[entity.start : entity.end] == entity.text
            assert 0 < entity.confidence <= 1
        for word in prediction.words:
            assert text[word.start : word.end] == word.text
            assert word.tag in pipeline.labels


def test_offsets_are_code_points_after_emoji_and_repeated_spaces(pipeline) -> None:
    text = "😀😀  I   love   👩\u200d👩\u200d👧 Zoë in   Paris  http://t.co/x  #NYC"
    (prediction,) = pipeline([text])
    by_text = {w.text: (w.start, w.end) for w in prediction.words}
    assert by_text["Paris"] == (text.index("Paris"), text.index("Paris") + 5)
    assert by_text["Zoë"] == (text.index("Zoë"), text.index("Zoë") + 3)
    assert by_text["http://t.co/x"][0] == text.index("http")
    assert "👩\u200d👩\u200d👧" in by_text
