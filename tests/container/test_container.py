"""The built image, run with podman as `docker run` users run it (read-only root filesystem), called
from this host: every seqserve endpoint, health, reflection and metrics; then a SIGTERM stop.

Skipped unless SEQSERVE_CONTAINER_IMAGE names a built image: `make container-test` builds it and
runs these (deploy/container/test.sh)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from container_support import (
    IMAGE,
    SKIP_REASON,
    STOP_TIMEOUT_SECONDS,
    Running,
    health,
    inspect,
    podman,
    run_container,
    stop_and_time,
)
from deploy_support import REPO, exposed_ports, image_user
from exported_models import DEFAULT_SENTIMENT
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from seqserve.v1 import admin_pb2, admin_pb2_grpc, models_pb2, models_pb2_grpc, sentiment_pb2, sentiment_pb2_grpc

pytestmark = pytest.mark.container
if not IMAGE:
    pytest.skip(SKIP_REASON, allow_module_level=True)

EXPORTED = REPO / "exported"

# A serving image is ~430 MB (a third of it the Debian base); torch alone would add gigabytes.
MAX_IMAGE_BYTES = 700 * 10**6
# The runtime must hold the project and its serving dependencies, nothing else: every installed
# distribution is reachable from seqserve's own requirements (no torch, no pip, no test tools).
PACKAGES_SCRIPT = r"""
import importlib.metadata as md, importlib.util, json
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
installed = {canonicalize_name(d.metadata["Name"]): d for d in md.distributions()}
needed, todo = set(), ["seqserve"]
while todo:
    name = canonicalize_name(todo.pop())
    if name in needed or name not in installed:
        continue
    needed.add(name)
    for text in installed[name].requires or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            todo.append(req.name)
print(json.dumps({
    "installed": sorted(installed), "needed": sorted(needed),
    "missing": sorted({canonicalize_name(Requirement(t).name) for t in installed["seqserve"].requires or []
                       if Requirement(t).marker is None} - set(installed)),
    "modules": {m: importlib.util.find_spec(m) is not None
                for m in ("torch", "training", "pip", "service", "seqserve.v1")},
}))
"""


@pytest.fixture(scope="module")
def container() -> Iterator[Running]:
    running = run_container(f"seqserve-test-{os.getpid()}")
    try:
        running.wait_until_serving()
        yield running
    finally:
        podman("rm", "--force", "--time", "0", running.name, check=False)


@pytest.fixture(scope="module")
def channel(container: Running) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(container.target) as open_channel:
        yield open_channel


def test_health_reports_serving_for_the_server_and_each_service(channel: grpc.Channel, container: Running) -> None:
    for service in ("", "seqserve.v1.Sentiment", "seqserve.v1.Models"):
        assert health(container.target, service) == health_pb2.HealthCheckResponse.SERVING


def test_sentiment_analyze_answers(channel: grpc.Channel) -> None:
    texts = ["What a wonderful day", "The food was cold and the staff rude"]
    response = sentiment_pb2_grpc.SentimentStub(channel).Analyze(
        sentiment_pb2.AnalyzeSentimentRequest(texts=texts), timeout=30)
    assert len(response.results) == 2
    assert [result.label for result in response.results] == ["positive", "negative"]
    for result in response.results:
        assert abs(sum(p.probability for p in result.probabilities) - 1) < 1e-4
        assert result.tokens and abs(sum(t.weight for t in result.tokens) - 1) < 1e-3
    assert response.model.name == DEFAULT_SENTIMENT.parent.name


def test_a_bad_request_gets_its_status_code_through_the_container(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        sentiment_pb2_grpc.SentimentStub(channel).Analyze(sentiment_pb2.AnalyzeSentimentRequest(texts=[]), timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_models_lists_and_describes_the_committed_model(channel: grpc.Channel) -> None:
    stub = models_pb2_grpc.ModelsStub(channel)
    listed = stub.ListModels(models_pb2.ListModelsRequest(), timeout=30)
    # Every model committed in exported/ is in the image and serves.
    assert sorted(model.name for model in listed.models) == sorted(path.name for path in EXPORTED.iterdir())
    [default] = [model for model in listed.models if model.is_default and model.task == "sentiment"]
    assert default.name == DEFAULT_SENTIMENT.parent.name
    described = stub.GetModel(models_pb2.GetModelRequest(name=default.name), timeout=30)
    assert described.version == default.version


def test_v2_inference_protocol_reports_live_and_ready(container: Running) -> None:
    # tritonclient, not seqserve.oip: both define inference.* messages (see tests/test_v2_protocol.py).
    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(container.target)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("sentiment-bigru")
    finally:
        client.close()


def test_admin_is_refused_without_a_token(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        admin_pb2_grpc.AdminStub(channel).ListVersions(admin_pb2.ListVersionsRequest(name="sentiment-bigru"),
                                                       timeout=30)
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_reflection_lists_every_service(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    [response] = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                 timeout=30))
    services = {service.name for service in response.list_services_response.service}
    assert {"seqserve.v1.Sentiment", "seqserve.v1.Models", "seqserve.v1.Admin", "inference.GRPCInferenceService",
            "grpc.health.v1.Health"} <= services


def test_metrics_are_scraped_from_the_host(channel: grpc.Channel, container: Running) -> None:
    sentiment_pb2_grpc.SentimentStub(channel).Analyze(sentiment_pb2.AnalyzeSentimentRequest(texts=["Fine."]),
                                                      timeout=30)
    with urllib.request.urlopen(container.metrics_url, timeout=10) as response:
        exposition = response.read()
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in text_string_to_metric_families(exposition.decode()) for sample in family.samples}
    ok = [value for (name, labels), value in samples.items()
          if name == "seqserve_requests_total" and ("code", "OK") in labels and ("method", "Analyze") in labels]
    assert ok and ok[0] >= 1
    assert any(name == "seqserve_model_info" for name, _ in samples)
    promtool = shutil.which("promtool")
    if promtool:
        result = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, timeout=60,
                                check=False)
        assert result.returncode == 0, (result.stdout + result.stderr).decode()


def test_the_image_healthcheck_passes(container: Running) -> None:
    result = podman("healthcheck", "run", container.name, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_it_runs_as_the_image_user_on_a_read_only_root(container: Running) -> None:
    details = inspect(container.name)
    assert details["HostConfig"]["ReadonlyRootfs"] is True
    uid, gid = image_user()
    assert podman("exec", container.name, "id", "-u").stdout.strip() == str(uid)
    assert podman("exec", container.name, "id", "-g").stdout.strip() == str(gid)
    for path in ("/srv/seqserve/exported/x", "/tmp/x", "/opt/seqserve/x"):
        assert podman("exec", container.name, "touch", path, check=False).returncode != 0, path


def test_the_image_holds_only_the_serving_environment() -> None:
    result = podman("run", "--rm", "--read-only", "--entrypoint", "python", IMAGE, "-c", PACKAGES_SCRIPT)
    packages = json.loads(result.stdout)
    assert packages["missing"] == []
    assert packages["installed"] == packages["needed"], "installed but not needed to serve: " + ", ".join(
        sorted(set(packages["installed"]) - set(packages["needed"])))
    assert packages["modules"] == {"torch": False, "training": False, "pip": False, "service": True,
                                   "seqserve.v1": True}


def test_the_image_metadata_matches_the_manifests() -> None:
    config = json.loads(podman("image", "inspect", IMAGE).stdout)[0]["Config"]
    assert {int(port.split("/")[0]) for port in config["ExposedPorts"]} == exposed_ports()
    assert config["User"] == "{}:{}".format(*image_user())
    assert config["Entrypoint"] == ["python", "-m", "service"]
    size = int(podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    assert size < MAX_IMAGE_BYTES, f"image is {size / 1e6:.0f} MB"


def test_sigterm_stops_it_with_exit_0_well_before_the_kill() -> None:
    running = run_container(f"seqserve-stop-{os.getpid()}")
    try:
        running.wait_until_serving()
        with grpc.insecure_channel(running.target) as open_channel:
            sentiment_pb2_grpc.SentimentStub(open_channel).Analyze(
                sentiment_pb2.AnalyzeSentimentRequest(texts=["Goodbye."]), timeout=30)
        seconds = stop_and_time("stop", "--time", str(STOP_TIMEOUT_SECONDS), running.name)
        state = running.state()
        logs = running.logs()
        assert state["ExitCode"] == 0, logs
        # Nothing is in flight, so the grace period is not needed: a SIGKILL would take 30 s.
        assert seconds < STOP_TIMEOUT_SECONDS / 3, f"stop took {seconds:.1f} s"
        assert "received SIGTERM" in logs and "exiting" in logs, logs
    finally:
        podman("rm", "--force", "--time", "0", running.name, check=False)
