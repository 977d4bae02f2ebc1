"""Ner.Recognize over gRPC, against the real server on the committed NER models."""

from __future__ import annotations

import json

import grpc
import pytest
from exported_models import latest_version_dir
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from seqserve.v1 import ner_pb2, ner_pb2_grpc

from service.config import Settings

NER_MODELS = ("ner-bilstm-crf", "ner-minilm-int8")
LIMITS = Settings()


@pytest.fixture(scope="module")
def ner(channel: grpc.Channel) -> ner_pb2_grpc.NerStub:
    return ner_pb2_grpc.NerStub(channel)


def recognize(stub: ner_pb2_grpc.NerStub, texts: list[str], model: str = "",
              include_tokens: bool = False) -> ner_pb2.RecognizeEntitiesResponse:
    request = ner_pb2.RecognizeEntitiesRequest(texts=texts, model=model, include_tokens=include_tokens)
    return stub.Recognize(request, timeout=30)


def refusal(stub: ner_pb2_grpc.NerStub, texts: list[str], model: str = "") -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as error:
        recognize(stub, texts, model)
    return error.value.code(), error.value.details()


def manifest_of(name: str) -> dict:
    return json.loads((latest_version_dir(name) / "manifest.json").read_text())


TWEET = "Heading to   Los Angeles with @Bob 😀 to see the Lakers play — love LA! http://t.co/abc #NBA"


@pytest.mark.parametrize("model", NER_MODELS)
def test_each_model_finds_entities_whose_offsets_slice_the_raw_text(ner, model: str) -> None:
    texts = [TWEET, "Barack Obama met Angela Merkel in Berlin on Monday .", "nothing to see here"]
    response = recognize(ner, texts, model=model)
    assert response.model.name == model and response.model.version == latest_version_dir(model).name
    assert len(response.results) == len(texts)
    for text, result in zip(texts, response.results, strict=True):
        assert not result.tokens  # only on request
        for entity in result.entities:
            assert text[entity.start : entity.end] == entity.text
            assert entity.type in {"person", "geo-loc", "company", "facility", "product", "musicartist", "movie",
                                   "sportsteam", "tvshow", "other"}
            assert 0 < entity.confidence <= 1
    found = {(e.type, e.text) for e in response.results[1].entities}
    assert found & {("person", "Barack Obama"), ("person", "Angela Merkel"), ("geo-loc", "Berlin")}


def test_tokens_and_tags_on_request(ner) -> None:
    response = recognize(ner, [TWEET], include_tokens=True)
    tokens = response.results[0].tokens
    assert [t.token for t in tokens][:4] == ["Heading", "to", "Los", "Angeles"]
    assert all(TWEET[t.start : t.end] == t.token for t in tokens)
    assert "😀" in [t.token for t in tokens] and "http://t.co/abc" in [t.token for t in tokens]
    labels = manifest_of(response.model.name)["labels"]
    assert all(t.tag in labels and 0 < t.confidence <= 1 for t in tokens)
    entity_words = {t.token for t in tokens if t.tag != "O"}
    assert all(word in entity_words for e in response.results[0].entities for word in e.text.split())


def test_the_default_model_is_the_one_that_scored_better_through_the_served_path(ner) -> None:
    manifests = {name: manifest_of(name) for name in NER_MODELS}
    defaults = [name for name, m in manifests.items() if m["default_for_task"]]
    assert len(defaults) == 1
    f1 = {name: m["metrics"]["served"]["micro"]["f1-score"] for name, m in manifests.items()}
    assert f1[defaults[0]] == max(f1.values())
    assert recognize(ner, ["Paris"]).model.name == defaults[0]


def test_a_long_run_of_words_is_tagged_up_to_the_limit_and_flagged(ner) -> None:
    max_words = manifest_of("ner-bilstm-crf")["limits"]["max_words"]
    response = recognize(ner, ["word " * (max_words + 5)], model="ner-bilstm-crf", include_tokens=True)
    assert response.results[0].truncated and len(response.results[0].tokens) == max_words
    assert not recognize(ner, ["word " * 10], model="ner-bilstm-crf").results[0].truncated


def test_an_empty_list_is_refused(ner) -> None:
    assert refusal(ner, []) == (grpc.StatusCode.INVALID_ARGUMENT, "texts: must hold at least 1 text")


@pytest.mark.parametrize("blank", ["", "   ", "\n\t "])
def test_an_empty_text_is_refused_naming_its_index(ner, blank: str) -> None:
    assert refusal(ner, ["Paris", blank]) == (grpc.StatusCode.INVALID_ARGUMENT, "texts[1]: is empty")


def test_a_too_long_text_is_refused_with_the_limit(ner) -> None:
    too_long = "a" * (LIMITS.max_text_chars + 1)
    assert refusal(ner, [too_long]) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        f"texts[0]: {LIMITS.max_text_chars + 1} characters exceeds the limit of {LIMITS.max_text_chars}",
    )


def test_too_many_texts_are_refused_with_the_limit(ner) -> None:
    count = LIMITS.max_texts + 1
    assert refusal(ner, ["Paris"] * count) == (
        grpc.StatusCode.INVALID_ARGUMENT, f"texts: {count} texts exceeds the limit of {LIMITS.max_texts}")


def test_an_unknown_model_is_not_found_and_another_tasks_model_is_not_served(ner) -> None:
    code, message = refusal(ner, ["Paris"], model="nope")
    assert code == grpc.StatusCode.NOT_FOUND and "'nope'" in message
    code, message = refusal(ner, ["Paris"], model="sentiment-bigru")
    assert code == grpc.StatusCode.NOT_FOUND and "sentiment-bigru" in message


def test_an_overlong_model_name_is_refused_with_the_limit(ner) -> None:
    code, message = refusal(ner, ["Paris"], model="m" * 201)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith("model: 201 characters exceeds")


def test_health_and_reflection_know_the_ner_service(channel, health) -> None:
    status = health.Check(health_pb2.HealthCheckRequest(service="seqserve.v1.Ner"), timeout=10).status
    assert status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    (answer,) = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                          timeout=10)
    assert "seqserve.v1.Ner" in {s.name for s in answer.list_services_response.service}
