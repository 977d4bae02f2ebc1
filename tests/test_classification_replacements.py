"""A classification version that declares an emoji/emoticon table (manifest classification.replacements)
is read through it by the served pipeline: emoji reach the model as words, not [UNK], and every token's
offsets still point into the text as sent.

The committed BiGRU's graph and tokenizer with the table added stand in for any version that opts in
(its own manifest has no table, so its answers do not change)."""

from __future__ import annotations

import pathlib
import shutil

import pytest
from exported_models import SENTIMENT

from service.model.manifest import read_manifest, republish_manifest
from service.pipelines.classification import ClassificationPipeline
from service.registry.loader import LoadError, prepare_version
from service.runtime.version_loader import load_version
from training.export.text_replacements import FILE_NAME, write_table


def with_table(tmp_path: pathlib.Path, table: str | None = FILE_NAME) -> pathlib.Path:
    version_dir = tmp_path / "sentiment-bigru-emoji" / SENTIMENT.name
    shutil.copytree(SENTIMENT, version_dir)
    write_table(version_dir / FILE_NAME)
    section = {"add_special_tokens": False, "architecture": "bigru", **({"replacements": table} if table else {})}
    republish_manifest(version_dir, {"name": "sentiment-bigru-emoji", "classification": section,
                                     "default_for_task": False})
    return version_dir


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory: pytest.TempPathFactory) -> tuple[ClassificationPipeline, ClassificationPipeline]:
    """(as committed, the same version reading emoji through the table)."""
    plain = ClassificationPipeline(load_version(SENTIMENT))
    return plain, ClassificationPipeline(load_version(with_table(tmp_path_factory.mktemp("v"))))


def test_emoji_only_texts_no_longer_read_as_unknown(pipelines: tuple[ClassificationPipeline, ...]) -> None:
    plain, replaced = pipelines
    texts = ["😍😍😍", "😭😭😭", "🔥🔥", "👍"]
    # without the table every one of them is nothing but [UNK]: the model cannot tell them apart
    for prediction in plain(texts):
        assert {t.token for t in prediction.tokens} == {"[UNK]"}
    answers = replaced(texts)
    for prediction in answers:
        assert "[UNK]" not in {t.token for t in prediction.tokens}
    assert answers[0].probabilities != answers[1].probabilities


def test_offsets_still_point_into_the_text_as_sent(pipelines: tuple[ClassificationPipeline, ...]) -> None:
    _, replaced = pipelines
    text = "  Loved it 😍😍 :) but the 🍕 was cold :( http://x.co/a "
    (prediction,) = replaced([text])
    emoji_spans = {(11, 12): "😍", (12, 13): "😍", (14, 16): ":)", (25, 26): "🍕", (36, 38): ":("}
    seen = set()
    for token in prediction.tokens:
        span = (token.start, token.end)
        if span in emoji_spans:  # a subword of an emoji's name points at the emoji
            assert text[token.start : token.end] == emoji_spans[span]
            seen.add(span)
        else:  # any other subword is the text itself
            assert token.token.removeprefix("##").lower() == text[token.start : token.end].lower(), token
    assert seen == set(emoji_spans)
    assert abs(sum(t.weight for t in prediction.tokens) - 1) < 1e-5


def test_a_text_without_emoji_gets_the_committed_answer(pipelines: tuple[ClassificationPipeline, ...]) -> None:
    plain, replaced = pipelines
    text = "The food was cold and the staff rude, 2 stars."
    (before,), (after,) = plain([text]), replaced([text])
    assert [(t.token, t.start, t.end) for t in before.tokens] == [(t.token, t.start, t.end) for t in after.tokens]
    for label, probability in before.probabilities.items():
        assert abs(after.probabilities[label] - probability) < 1e-6


def test_a_table_the_folder_lacks_is_refused_at_load_naming_it(tmp_path: pathlib.Path) -> None:
    version_dir = with_table(tmp_path, table="missing.json")
    with pytest.raises(LoadError, match=r"classification\.replacements 'missing\.json' is not a file"):
        prepare_version(version_dir)
    assert read_manifest(SENTIMENT).spec.classification is None  # the committed version is untouched
