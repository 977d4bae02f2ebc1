"""Sentiment.Analyze over gRPC, against the real server on the committed model."""

from __future__ import annotations

import unicodedata
from typing import Any

import grpc
import pytest
from exported_models import DEFAULT_SENTIMENT
from seqserve.v1 import sentiment_pb2, sentiment_pb2_grpc

from service.model.manifest import read_manifest
from service.pipelines.text_replacements import TextReplacements

LABELS = ["negative", "neutral", "positive"]
# Calls below name no model: the default answers (its emoji table, if it has one, says what an emoji's
# tokens are called).
DEFAULT = read_manifest(DEFAULT_SENTIMENT)
_TABLE = DEFAULT.spec.classification.replacements if DEFAULT.spec.classification else None
REPLACEMENTS = TextReplacements.from_file(DEFAULT.path(_TABLE)) if _TABLE else None


def analyze(
    stub: sentiment_pb2_grpc.SentimentStub, texts: list[str], model: str = ""
) -> sentiment_pb2.AnalyzeSentimentResponse:
    return stub.Analyze(sentiment_pb2.AnalyzeSentimentRequest(texts=texts, model=model), timeout=30)


def refusal(stub: sentiment_pb2_grpc.SentimentStub, texts: list[str], model: str = "") -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as error:
        analyze(stub, texts, model)
    return error.value.code(), error.value.details()


def without_marks(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))


def assert_tokens_point_into(text: str, result: sentiment_pb2.SentimentResult,
                             replacements: TextReplacements | None = REPLACEMENTS) -> None:
    """Every token slices the text as sent: its own spelling, or (a model with an emoji table) a word of
    the name of the emoji or emoticon it slices."""
    assert result.tokens, "every text gets at least one token"
    for token in result.tokens:
        assert 0 <= token.start <= token.end <= len(text), token
        piece = text[token.start : token.end]
        if token.token == "[UNK]":
            continue  # an unknown character keeps its own offsets but not its spelling
        # The tokenizer NFKC-normalises (an uncased one lowercases) and marks word continuations with "##".
        expected = token.token.removeprefix("##")
        if replacements is not None and (name := replacements.normalise(piece).text.strip()) != piece:
            # a subword of one of the name's words ("party popper": pop, ##per)
            assert any(expected in word for word in name.lower().replace("-", " - ").split()), (token, piece, name)
            continue
        normalised = unicodedata.normalize("NFKC", piece)
        if expected in (normalised, normalised.lower()):
            continue
        # Known tokenizers behaviour: a letter composed from a decomposed accent ("e" + U+0301) gets the
        # offsets of the base letter only, so the slice lacks the combining mark; an uncased tokenizer
        # strips accents.
        assert without_marks(piece).lower() == without_marks(expected).lower(), (token, piece)
        if without_marks(expected) != expected:  # the token kept the accent the slice lacks
            assert unicodedata.combining(text[token.end]), (token, piece)


def test_every_text_gets_a_label_and_a_distribution_over_the_labels_in_order(sentiment) -> None:
    texts = ["What a wonderful, joyful day!", "The package arrived on Tuesday.", "ok"]
    response = analyze(sentiment, texts)
    assert len(response.results) == len(texts)
    assert (response.model.name, response.model.version) == (DEFAULT.name, DEFAULT.version)
    for result in response.results:
        assert [p.label for p in result.probabilities] == DEFAULT.labels == LABELS
        assert sum(p.probability for p in result.probabilities) == pytest.approx(1, abs=1e-4)
        assert result.label == max(result.probabilities, key=lambda p: p.probability).label
        assert not result.truncated


def test_attention_is_a_distribution_whose_offsets_slice_the_text_as_sent(sentiment) -> None:
    texts = ["  The acting was GREAT,   but the plot... meh!!  ", "I didn't like it :("]
    for text, result in zip(texts, analyze(sentiment, texts).results, strict=True):
        assert sum(t.weight for t in result.tokens) == pytest.approx(1, abs=1e-4)
        assert all(t.weight >= 0 for t in result.tokens)
        assert_tokens_point_into(text, result)


def test_omit_tokens_answers_the_same_labels_and_probabilities_without_the_tokens(sentiment) -> None:
    texts = ["What a wonderful, joyful day!", "The package arrived on Tuesday."]
    full = analyze(sentiment, texts)
    lean = sentiment.Analyze(sentiment_pb2.AnalyzeSentimentRequest(texts=texts, omit_tokens=True), timeout=30)
    assert lean.model == full.model
    assert lean.ByteSize() < full.ByteSize() / 2  # the tokens were most of the response
    for with_tokens, without in zip(full.results, lean.results, strict=True):
        assert with_tokens.tokens and not without.tokens
        del with_tokens.tokens[:]
        assert without == with_tokens  # label, probabilities and truncation unchanged


def test_obviously_positive_and_negative_sentences_get_those_labels(sentiment, manifest: dict[str, Any]) -> None:
    if not manifest.get("metrics"):
        pytest.skip("the exported model has no test metrics yet, so it is not the trained model")
    positive, negative = analyze(
        sentiment, ["This is wonderful, I love it, best day ever!", "This is horrible, I hate it, worst day ever."]
    ).results
    assert positive.label == "positive"
    assert negative.label == "negative"


@pytest.mark.parametrize(
    "text",
    [
        "Très bien, naïve café crème — ça marche!",
        "Cafe\u0301 de\u0301licieux",  # decomposed accents: offsets must still land on the raw text
        "I love it 😀😀🎉 ❤️",
        "素晴らしい映画でした",
        "Ελληνικά και русский текст",
    ],
)
def test_unicode_emoji_and_accented_text_is_answered(sentiment, text: str) -> None:
    (result,) = analyze(sentiment, [text]).results
    assert result.label in LABELS
    assert sum(t.weight for t in result.tokens) == pytest.approx(1, abs=1e-4)
    assert_tokens_point_into(text, result)


def test_the_largest_allowed_request_is_answered(sentiment) -> None:
    response = analyze(sentiment, ["😀" * 2000] + ["fine"] * 63)  # 64 texts, the longest 2000 characters
    assert len(response.results) == 64
    assert response.results[0].truncated  # 2000 emoji are more tokens than the model reads


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ([], "texts: must hold at least 1 text"),
        (["fine"] * 65, "texts: 65 texts exceeds the limit of 64"),
        (["good", "bad", "ugly", ""], "texts[3]: is empty"),
        (["good", "bad", "ugly", " \t\n "], "texts[3]: is empty"),
        (["good", "bad", "x" * 2500], "texts[2]: 2500 characters exceeds the limit of 2000"),
        (["é" * 2001], "texts[0]: 2001 characters exceeds the limit of 2000"),
    ],
)
def test_bad_input_is_invalid_argument_naming_the_field_index_and_limit(sentiment, texts, message) -> None:
    assert refusal(sentiment, texts) == (grpc.StatusCode.INVALID_ARGUMENT, message)


def test_an_unknown_model_is_not_found_and_the_message_lists_the_loaded_ones(sentiment, manifest) -> None:
    code, message = refusal(sentiment, ["fine"], model="no-such-model")
    assert code == grpc.StatusCode.NOT_FOUND
    assert "'no-such-model'" in message and manifest["name"] in message


def test_a_model_can_be_named_explicitly(sentiment, manifest) -> None:
    assert analyze(sentiment, ["fine"], model=manifest["name"]).model.name == manifest["name"]


def test_error_messages_hold_no_traceback_or_server_path(sentiment, server) -> None:
    for texts, model in [([], ""), (["x" * 5000], ""), (["ok"], "../../etc/passwd")]:
        _, message = refusal(sentiment, texts, model)
        assert "Traceback" not in message and "/work" not in message and ".py" not in message


def test_a_message_over_the_size_limit_is_resource_exhausted(sentiment) -> None:
    code, _ = refusal(sentiment, ["x" * (5 * 1024 * 1024)])
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_the_request_id_comes_back_in_trailing_metadata(sentiment) -> None:
    request = sentiment_pb2.AnalyzeSentimentRequest(texts=["fine"])
    _, call = sentiment.Analyze.with_call(request, metadata=(("x-request-id", "test-123"),), timeout=30)
    assert ("x-request-id", "test-123") in tuple(call.trailing_metadata())
    with pytest.raises(grpc.RpcError) as error:
        sentiment.Analyze(sentiment_pb2.AnalyzeSentimentRequest(), metadata=(("x-request-id", "test-456"),))
    assert ("x-request-id", "test-456") in tuple(error.value.trailing_metadata())


def test_a_body_protobuf_cannot_parse_is_invalid_argument_not_unknown(channel) -> None:
    # A hand-rolled client can send a string field (texts, field 1) holding invalid UTF-8.
    raw_analyze = channel.unary_unary(
        "/seqserve.v1.Sentiment/Analyze", request_serializer=bytes, response_deserializer=bytes
    )
    with pytest.raises(grpc.RpcError) as error:
        raw_analyze(b"\x0a\x03\xff\xfe\x41", timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith("request: not a valid protobuf message")
    assert "Traceback" not in error.value.details() and "DecodeError" not in error.value.details()
