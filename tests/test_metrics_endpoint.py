"""Prometheus metrics scraped over HTTP from the real server, after real calls."""

from __future__ import annotations

import urllib.request

import grpc
import pytest
from exported_models import SENTIMENT
from prometheus_client.parser import text_string_to_metric_families
from seqserve.v1 import models_pb2, sentiment_pb2

Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(server) -> Samples:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        text = response.read().decode("utf-8")
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: Samples, metric: str, **labels: str) -> float | None:
    for sample_labels, sample_value in samples.get(metric, []):
        if all(sample_labels.get(k) == v for k, v in labels.items()):
            return sample_value
    return None


@pytest.fixture(scope="module")
def after_calls(server, sentiment, models) -> Samples:
    sentiment.Analyze(sentiment_pb2.AnalyzeSentimentRequest(texts=["Lovely!", "Dreadful."]), timeout=30)
    with pytest.raises(grpc.RpcError):
        sentiment.Analyze(sentiment_pb2.AnalyzeSentimentRequest(texts=[]), timeout=30)
    with pytest.raises(grpc.RpcError):
        models.GetModel(models_pb2.GetModelRequest(name="no-such-model"), timeout=30)
    return scrape(server)


def test_requests_are_counted_with_the_status_code_the_client_got(after_calls: Samples) -> None:
    ok = value(after_calls, "seqserve_requests_total", service="seqserve.v1.Sentiment", method="Analyze",
               model="sentiment-bigru", code="OK")
    invalid = value(after_calls, "seqserve_requests_total", service="seqserve.v1.Sentiment", method="Analyze",
                    code="INVALID_ARGUMENT")
    not_found = value(after_calls, "seqserve_requests_total", service="seqserve.v1.Models", method="GetModel",
                      code="NOT_FOUND")
    assert ok is not None and ok >= 1
    assert invalid is not None and invalid >= 1
    assert not_found is not None and not_found >= 1


def test_calls_carry_the_version_that_answered_and_refusals_none(after_calls: Samples) -> None:
    answered = value(after_calls, "seqserve_requests_total", service="seqserve.v1.Sentiment", method="Analyze",
                     model="sentiment-bigru", version=SENTIMENT.name, code="OK")
    refused = value(after_calls, "seqserve_requests_total", service="seqserve.v1.Sentiment", method="Analyze",
                    model="", version="", code="INVALID_ARGUMENT")
    timed = value(after_calls, "seqserve_request_duration_seconds_count", service="seqserve.v1.Sentiment",
                  method="Analyze", model="sentiment-bigru", version=SENTIMENT.name)
    assert answered is not None and answered >= 1
    assert refused is not None and refused >= 1
    assert timed is not None and timed >= 1


def test_a_refused_model_name_does_not_become_a_label(after_calls: Samples) -> None:
    models_seen = {labels["model"] for labels, _ in after_calls["seqserve_requests_total"]}
    assert "no-such-model" not in models_seen


def test_request_latency_is_a_histogram(after_calls: Samples) -> None:
    count = value(after_calls, "seqserve_request_duration_seconds_count", method="Analyze", model="sentiment-bigru")
    assert count is not None and count >= 1
    assert value(after_calls, "seqserve_request_duration_seconds_bucket", method="Analyze", le="+Inf") is not None


def test_each_pipeline_stage_is_timed(after_calls: Samples) -> None:
    stages = {
        labels["stage"]
        for labels, sample_value in after_calls["seqserve_stage_duration_seconds_count"]
        if labels["model"] == "sentiment-bigru" and labels["version"] == SENTIMENT.name and sample_value >= 1
    }
    assert stages == {"tokenize", "inference", "postprocess"}


def test_no_call_is_in_flight_once_they_have_answered(after_calls: Samples) -> None:
    assert value(after_calls, "seqserve_requests_in_flight", service="seqserve.v1.Sentiment", method="Analyze") == 0
    assert value(after_calls, "seqserve_requests_in_flight", service="seqserve.v1.Models", method="ListModels") == 0


def test_the_loaded_model_is_described_with_the_hash_of_its_graph(after_calls: Samples, manifest) -> None:
    info = value(after_calls, "seqserve_model_info", name="sentiment-bigru", version=SENTIMENT.name, task="sentiment",
                 sha256=manifest["files"]["model.onnx"])
    assert info == 1
