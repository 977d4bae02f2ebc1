"""Shared by the reliability tests: the server's memory, its metrics, and the mixed call set."""

from __future__ import annotations

import json
import pathlib
import urllib.request

import numpy as np
from grpc_health.v1 import health_pb2
from prometheus_client.parser import text_string_to_metric_families
from seqserve.v1 import models_pb2, sentiment_pb2

# tritonclient's V2 messages, not seqserve.oip: both define inference.*, and a pytest process that
# imports both fails (see tests/test_v2_protocol.py). Same wire format.
from tritonclient.grpc import service_pb2 as oip

from bench.loadgen import Call

SENTIMENT = "/seqserve.v1.Sentiment/Analyze"
V2 = "/inference.GRPCInferenceService/"
MODELS = "/seqserve.v1.Models/"
HEALTH = "/grpc.health.v1.Health/Check"
EXPORTED = pathlib.Path(__file__).resolve().parents[1] / "exported"


def rss_bytes(pid: int) -> int:
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:"))


def metric_sum(metrics_url: str, name: str, **labels: str) -> float:
    """Sum of every sample of `name` whose labels include `labels` (0 if none)."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def v2_request(model: str, ids: list[list[int]]) -> oip.ModelInferRequest:
    array = np.asarray(ids, dtype=np.int64)
    request = oip.ModelInferRequest(model_name=model)
    for name, values in (("input_ids", array), ("attention_mask", np.ones_like(array))):
        request.inputs.add(name=name, datatype="INT64", shape=list(values.shape))
        request.raw_input_contents.append(values.astype("<i8").tobytes())
    return request


def mixed_calls() -> list[Call]:
    """Every read-only call of the server, models fp32 and int8, small and larger batches."""
    texts = ["What a wonderful day", "The food was cold and the staff rude", "meh, it was fine I guess " * 8]
    calls = [
        Call(SENTIMENT, sentiment_pb2.AnalyzeSentimentRequest(texts=texts[:1]).SerializeToString()),
        Call(SENTIMENT, sentiment_pb2.AnalyzeSentimentRequest(texts=texts, model="sentiment-bigru-int8")
             .SerializeToString()),
        Call(SENTIMENT, sentiment_pb2.AnalyzeSentimentRequest(texts=texts * 5, model="sentiment-bigru")
             .SerializeToString()),
        Call(V2 + "ModelInfer", v2_request("sentiment-bigru", [[5, 6, 7, 8]]).SerializeToString()),
        Call(V2 + "ModelInfer", v2_request("sentiment-bigru-int8", [[9, 10, 11], [12, 13, 14]]).SerializeToString()),
        Call(V2 + "ModelMetadata", oip.ModelMetadataRequest(name="sentiment-bigru").SerializeToString()),
        Call(V2 + "ServerReady", oip.ServerReadyRequest().SerializeToString()),
        Call(MODELS + "ListModels", models_pb2.ListModelsRequest().SerializeToString()),
        Call(MODELS + "GetModel", models_pb2.GetModelRequest(name="sentiment-bigru-int8").SerializeToString()),
        Call(HEALTH, health_pb2.HealthCheckRequest().SerializeToString()),
    ]
    return calls + translation_calls() + ner_calls() + recommendation_calls()


def translation_calls() -> list[Call]:
    """A short greedy Translate, once the translation API and an exported translation model exist."""
    try:
        from seqserve.v1 import translation_pb2
    except ImportError:
        return []
    if not _has_model_of_task("translation"):
        return []
    request = translation_pb2.TranslateRequest(texts=["In the beginning was the word."],
                                               options=translation_pb2.DecodingOptions(beam_size=1))
    return [Call("/seqserve.v1.Translation/Translate", request.SerializeToString())]


def ner_calls() -> list[Call]:
    """Recognize on a tweet, once the NER API and an exported NER model exist."""
    try:
        from seqserve.v1 import ner_pb2
    except ImportError:
        return []
    if not _has_model_of_task("ner"):
        return []
    request = ner_pb2.RecognizeEntitiesRequest(texts=["@Bob flew to Paris with Air France 😀 #travel"],
                                               include_tokens=True)
    return [Call("/seqserve.v1.Ner/Recognize", request.SerializeToString())]


def recommendation_calls() -> list[Call]:
    """Recommend after a short history, and the empty-history fallback, once the API and a model exist."""
    try:
        from seqserve.v1 import recommendation_pb2
    except ImportError:
        return []
    if not _has_model_of_task("recommendation"):
        return []
    history = [recommendation_pb2.HistoryItem(id=item_id) for item_id in (1, 2, 3, 5, 8)]
    return [
        Call("/seqserve.v1.Recommendation/Recommend",
             recommendation_pb2.RecommendRequest(history=history, k=10, exclude_seen=True).SerializeToString()),
        Call("/seqserve.v1.Recommendation/Recommend", recommendation_pb2.RecommendRequest(k=5).SerializeToString()),
    ]


def _has_model_of_task(task: str) -> bool:
    for manifest in EXPORTED.glob("*/*/manifest.json"):
        if json.loads(manifest.read_text("utf-8")).get("task") == task:
            return True
    return False

