"""The committed sentiment models (the default and its int8 variant) through the serving pipeline (the
code the server runs)."""

from __future__ import annotations

import pytest
from exported_models import SENTIMENT, latest_version_dir

from service.batching.runs import run_pipeline
from service.model.timing import StageTimings
from service.pipelines.sentiment import SentimentPipeline
from service.runtime.version_loader import load_version

VERSION_DIR = SENTIMENT


# The int8 variant quantizes activations per run, so it is served one text per run (run_pipeline) to keep
# answers independent of batch-mates: every behaviour below holds for it too.
@pytest.fixture(scope="module", params=[VERSION_DIR, latest_version_dir("sentiment-bigru-int8")], ids=["fp32", "int8"])
def pipeline(request: pytest.FixtureRequest) -> SentimentPipeline:
    return SentimentPipeline(load_version(request.param))


def test_probabilities_and_attention_are_distributions(pipeline: SentimentPipeline) -> None:
    for prediction in pipeline(["What a wonderful, joyful day!", "ok"]):
        assert list(prediction.probabilities) == ["negative", "neutral", "positive"]
        assert abs(sum(prediction.probabilities.values()) - 1) < 1e-5
        assert prediction.label == max(prediction.probabilities, key=prediction.probabilities.get)
        assert abs(sum(t.weight for t in prediction.tokens) - 1) < 1e-5


def test_clear_cases_get_the_obvious_label(pipeline: SentimentPipeline) -> None:
    positive, negative = pipeline(["This is wonderful, I love it, best day ever!",
                                   "This is horrible, I hate it, worst day ever."])
    assert positive.label == "positive"
    assert negative.label == "negative"


def test_token_offsets_point_into_the_raw_text(pipeline: SentimentPipeline) -> None:
    text = "  Café   crème 😀 was GREAT!!  http://x.co/a "
    (prediction,) = pipeline([text])
    for token in prediction.tokens:
        piece = text[token.start : token.end]
        assert piece.strip() == piece and piece, token
        if token.token != "[UNK]":
            assert token.token.removeprefix("##") == piece
    assert text[prediction.tokens[-1].start : prediction.tokens[-1].end] == "a"


def test_a_text_gets_the_same_answer_alone_or_in_a_batch(pipeline: SentimentPipeline) -> None:
    text = "The plot was thin but the acting saved it."
    (alone,) = pipeline([text])
    batched = run_pipeline(pipeline, ["short", text, "a much longer text " * 20])[1]  # as served
    for label in alone.probabilities:
        assert abs(alone.probabilities[label] - batched.probabilities[label]) < 1e-5
    assert [t.token for t in alone.tokens] == [t.token for t in batched.tokens]


def test_long_texts_are_truncated_and_flagged(pipeline: SentimentPipeline) -> None:
    (prediction,) = pipeline(["good " * (pipeline.max_tokens + 10)])
    assert prediction.truncated
    assert len(prediction.tokens) == pipeline.max_tokens


def test_text_the_tokenizer_empties_still_gets_an_answer(pipeline: SentimentPipeline) -> None:
    (prediction,) = pipeline(["\u200b"])
    assert prediction.label in pipeline.labels
    assert len(prediction.tokens) == 1


def test_stage_timings_are_recorded(pipeline: SentimentPipeline) -> None:
    timings = StageTimings()
    pipeline(["fine"], timings)
    assert set(timings.seconds) == {"tokenize", "inference", "postprocess"}
    assert all(v >= 0 for v in timings.seconds.values())
