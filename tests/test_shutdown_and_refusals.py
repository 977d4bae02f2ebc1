"""Lifecycle of the real server process: graceful stop on SIGTERM/SIGINT, and refusal of bad models."""

from __future__ import annotations

import json
import pathlib
import signal
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from exported_models import SENTIMENT, copy_as_version
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from seqserve.v1 import models_pb2, models_pb2_grpc, sentiment_pb2, sentiment_pb2_grpc

from service.repository.manifest import read_manifest, write_manifest

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING
# Long enough that a call takes a few hundred milliseconds here, so calls are still running at SIGTERM.
SLOW_TEXT = "the film was good but the ending dragged on and on " * 20


def metric_value(server, metric: str, **labels: str) -> float:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        text = response.read().decode("utf-8")
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == metric and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise AssertionError(f"{metric} {labels} not exposed")


def flip_a_byte(path: pathlib.Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_flips_health_lets_in_flight_calls_finish_and_exits_0(start_server, stop_signal) -> None:
    server = start_server(extra_args=["--grace-seconds", "20"])
    with grpc.insecure_channel(server.target) as channel, ThreadPoolExecutor(6) as pool:
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)
        assert next(watch).status == SERVING

        analyze = sentiment_pb2_grpc.SentimentStub(channel).Analyze
        request = sentiment_pb2.AnalyzeSentimentRequest(texts=[SLOW_TEXT] * 64)
        calls = [pool.submit(analyze, request, timeout=60) for _ in range(4)]
        # Signal only once every call has reached its handler: a call still on the wire when the
        # server stops is refused, not "in flight". This also shows the in-flight gauge at work.
        deadline = time.monotonic() + 30
        while metric_value(server, "seqserve_requests_in_flight", method="Analyze") < len(calls):
            assert time.monotonic() < deadline, "the calls did not all get in flight"
            time.sleep(0.01)

        server.process.send_signal(stop_signal)
        # Watchers hear NOT_SERVING before the calls in flight have finished.
        assert next(watch).status == NOT_SERVING
        watch.cancel()  # an open watch stream would otherwise hold the server for the whole grace period
        assert not all(call.done() for call in calls), "the calls finished before the signal; make them slower"
        responses = [call.result(timeout=60) for call in calls]

    assert [len(r.results) for r in responses] == [64] * 4
    assert server.wait_for_exit(timeout=60) == 0
    log = server.log()
    assert f"received {stop_signal.name}" in log
    assert log.index("health NOT_SERVING") < log.index("stopped")
    assert "Traceback" not in log


def test_a_corrupted_model_is_refused_and_with_no_model_left_the_server_exits_non_zero(
    start_server, tmp_path: pathlib.Path
) -> None:
    model_dir = tmp_path / "models"
    copy_as_version(SENTIMENT, model_dir / "sentiment-bigru" / "1", "1")
    flip_a_byte(model_dir / "sentiment-bigru/1/model.onnx")
    server = start_server(model_dir=model_dir, wait=False)
    assert server.wait_for_exit() != 0
    log = server.log()
    refusal = next(line for line in log.splitlines() if "refusing model sentiment-bigru version 1" in line)
    assert "checksum" in refusal and "model.onnx: sha256" in refusal
    assert "cannot serve: no model could be loaded" in log and "refused: sentiment-bigru version 1" in log
    assert "Traceback" not in log


def test_a_missing_model_directory_exits_non_zero_with_a_clear_message(start_server, tmp_path: pathlib.Path) -> None:
    server = start_server(model_dir=tmp_path / "nothing-here", wait=False)
    assert server.wait_for_exit() != 0
    assert "cannot serve: model directory" in server.log() and "does not exist" in server.log()


def test_with_a_good_and_a_corrupted_model_only_the_good_one_is_served(start_server, tmp_path: pathlib.Path) -> None:
    model_dir = tmp_path / "models"
    copy_as_version(SENTIMENT, model_dir / "sentiment-bigru" / "1", "1")
    copy_as_version(SENTIMENT, model_dir / "sentiment-copy" / "1", "1")
    copy = read_manifest(model_dir / "sentiment-copy/1")
    write_manifest(model_dir / "sentiment-copy/1", {**copy.data, "name": "sentiment-copy", "default_for_task": False})
    flip_a_byte(model_dir / "sentiment-copy/1/model.onnx")

    server = start_server(model_dir=model_dir)
    with grpc.insecure_channel(server.target) as channel:
        listed = models_pb2_grpc.ModelsStub(channel).ListModels(models_pb2.ListModelsRequest(), timeout=10)
        assert [m.name for m in listed.models] == ["sentiment-bigru"]
        with pytest.raises(grpc.RpcError) as error:
            sentiment_pb2_grpc.SentimentStub(channel).Analyze(
                sentiment_pb2.AnalyzeSentimentRequest(texts=["fine"], model="sentiment-copy"), timeout=10
            )
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
    refusal = next(line for line in server.log().splitlines() if "refusing model sentiment-copy" in line)
    assert "checksum" in refusal
    assert metric_value(server, "seqserve_model_load_failures_total", model="sentiment-copy") == 1
    assert json.loads(listed.models[0].manifest_json)["name"] == "sentiment-bigru"
