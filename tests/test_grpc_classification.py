"""Classification.Classify over gRPC against the real server on the committed models: with no
classification model loaded it serves the sentiment model, answering exactly what Sentiment.Analyze
answers; bad calls get INVALID_ARGUMENT / NOT_FOUND naming the field or the model."""

from __future__ import annotations

import grpc
import pytest
from seqserve.v1 import classification_pb2, classification_pb2_grpc, sentiment_pb2

TEXTS = ["What a wonderful, sunny day!", "This is the worst service I have ever had."]


@pytest.fixture(scope="module")
def classify(channel: grpc.Channel) -> classification_pb2_grpc.ClassificationStub:
    return classification_pb2_grpc.ClassificationStub(channel)


def refusal(stub: classification_pb2_grpc.ClassificationStub, texts: list[str], model: str = "") -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        stub.Classify(classification_pb2.ClassifyRequest(texts=texts, model=model), timeout=30)
    return error.value


def test_classify_serves_the_sentiment_model_as_analyze_does(classify, sentiment) -> None:
    classified = classify.Classify(classification_pb2.ClassifyRequest(texts=TEXTS), timeout=30)
    analyzed = sentiment.Analyze(sentiment_pb2.AnalyzeSentimentRequest(texts=TEXTS), timeout=30)
    assert classified.model == analyzed.model
    assert [r.SerializeToString() for r in classified.results] == [r.SerializeToString() for r in analyzed.results]
    assert [p.label for p in classified.results[0].probabilities] == ["negative", "neutral", "positive"]


def test_omit_tokens_leaves_out_only_the_tokens(classify) -> None:
    full = classify.Classify(classification_pb2.ClassifyRequest(texts=TEXTS), timeout=30)
    lean = classify.Classify(classification_pb2.ClassifyRequest(texts=TEXTS, omit_tokens=True), timeout=30)
    assert all(r.tokens for r in full.results) and not any(r.tokens for r in lean.results)
    for result in full.results:
        del result.tokens[:]
    assert lean == full


def test_bad_calls_name_the_field_or_the_model(classify) -> None:
    error = refusal(classify, [])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "texts" in error.details()
    error = refusal(classify, ["fine", "   "])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "texts[1]: is empty" in error.details()
    error = refusal(classify, TEXTS, model="no-such-model")
    assert error.code() == grpc.StatusCode.NOT_FOUND and "no-such-model" in error.details()
    # A model of another task is not a classifier.
    error = refusal(classify, TEXTS, model="ner-bilstm-crf")
    assert error.code() == grpc.StatusCode.NOT_FOUND and "classification" in error.details()


@pytest.mark.parametrize("model", ["no-such-model", "ner-bilstm-crf", "transformer"])
def test_not_found_lists_the_models_classify_serves(classify, model: str) -> None:
    # Session 8 outside-in pass: with only sentiment models loaded the refusal said "(loaded: none)",
    # though both sentiment models answer Classify: a client could not find a name that works.
    error = refusal(classify, TEXTS, model=model)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert repr(model) in error.details()
    assert "sentiment-bigru, sentiment-bigru-int8" in error.details() and "none" not in error.details()


def test_the_service_has_a_health_name(channel) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    status = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="seqserve.v1.Classification"), timeout=10)
    assert status.status == health_pb2.HealthCheckResponse.SERVING
