"""`podman kube play` of the dev overlay's Deployment, from the built image: podman applies the pod's
securityContext, resources and ConfigMap environment (it ignores the gRPC probes and the HPA, and
runs one replica). The test calls the pod from this host and stops it as the kubelet would.

Skipped unless SEQSERVE_CONTAINER_IMAGE names a built image (`make container-test`)."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator

import grpc
import pytest
import yaml
from container_support import (
    IMAGE,
    SKIP_REASON,
    Running,
    free_port,
    health,
    inspect,
    podman,
)
from deploy_support import image_user, one, render
from exported_models import DEFAULT_SENTIMENT
from grpc_health.v1 import health_pb2
from seqserve.v1 import sentiment_pb2, sentiment_pb2_grpc

pytestmark = pytest.mark.container
if not IMAGE:
    pytest.skip(SKIP_REASON, allow_module_level=True)

OVERLAY = "overlays/dev"


def playable(name: str, grpc_port: int, metrics_port: int) -> list[dict]:
    """The overlay's ConfigMap and Deployment, changed only as a single host without a registry or a
    kubelet needs: the local image never pulled, one replica, the container ports published on
    loopback, and no restart (the kubelet does not restart a container of a pod it is deleting, but
    podman would restart it as soon as it exits after the test's SIGTERM)."""
    docs = render(OVERLAY)
    deployment = one(docs, "Deployment")
    deployment["metadata"]["name"] = name  # unique, so parallel runs do not collide
    deployment["spec"]["replicas"] = 1
    deployment["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    container["image"] = IMAGE
    container["imagePullPolicy"] = "Never"
    host_ports = {"grpc": grpc_port, "metrics": metrics_port}
    for port in container["ports"]:
        port["hostPort"] = host_ports[port["name"]]
        port["hostIP"] = "127.0.0.1"
    return [one(docs, "ConfigMap"), deployment]


@pytest.fixture(scope="module")
def pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Running]]:
    name = f"seqserve-kube-{os.getpid()}"
    grpc_port, metrics_port = free_port(), free_port()
    manifest = tmp_path_factory.mktemp("kube") / "seqserve.yaml"
    manifest.write_text(yaml.safe_dump_all(playable(name, grpc_port, metrics_port), sort_keys=False), "utf-8")
    played = podman("kube", "play", str(manifest))
    try:
        pod_id = re.search(r"Pod:\s*\n([0-9a-f]{64})", played.stdout)
        container_id = re.search(r"Container:\s*\n([0-9a-f]{64})", played.stdout)
        assert pod_id and container_id, played.stdout
        running = Running(name=container_id.group(1), grpc_port=grpc_port, metrics_port=metrics_port)
        running.wait_until_serving()
        yield pod_id.group(1), running
    finally:
        podman("kube", "down", str(manifest), check=False)


def test_the_pod_answers_from_the_host(pod: tuple[str, Running]) -> None:
    _, running = pod
    with grpc.insecure_channel(running.target) as channel:
        response = sentiment_pb2_grpc.SentimentStub(channel).Analyze(
            sentiment_pb2.AnalyzeSentimentRequest(texts=["Kubernetes, more or less."]), timeout=30)
    assert response.model.name == DEFAULT_SENTIMENT.parent.name


def test_podman_applied_the_pod_security_context(pod: tuple[str, Running]) -> None:
    _, running = pod
    details = inspect(running.name)
    assert details["HostConfig"]["ReadonlyRootfs"] is True
    uid, gid = image_user()
    assert podman("exec", running.name, "id", "-u").stdout.strip() == str(uid)
    assert podman("exec", running.name, "id", "-g").stdout.strip() == str(gid)
    status = podman("exec", running.name, "cat", "/proc/1/status").stdout
    assert re.search(r"^CapEff:\s*0+$", status, re.MULTILINE), "capabilities were not all dropped"
    assert re.search(r"^CapBnd:\s*0+$", status, re.MULTILINE)
    assert re.search(r"^NoNewPrivs:\s*1$", status, re.MULTILINE), "allowPrivilegeEscalation: false not applied"
    assert re.search(r"^Seccomp:\s*2$", status, re.MULTILINE), "no seccomp filter"


def test_podman_applied_the_resources_and_the_configmap(pod: tuple[str, Running]) -> None:
    _, running = pod
    deployment = one(render(OVERLAY), "Deployment")
    limits = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    host = inspect(running.name)["HostConfig"]
    assert host["Memory"] == int(limits["memory"].removesuffix("Mi")) * 2**20
    assert host["CpuQuota"] / host["CpuPeriod"] == float(limits["cpu"])
    # The server logs the settings it started with; the overlay's ConfigMap sets these two.
    logs = running.logs()
    assert "inference_workers=1" in logs and "log_level='DEBUG'" in logs, logs


def test_sigterm_drains_then_exits_zero_within_the_grace_period(pod: tuple[str, Running]) -> None:
    # As the kubelet stops a pod: SIGTERM to the app container while the pod (its network) stays up,
    # SIGKILL after terminationGracePeriodSeconds. (`podman pod stop` would stop the infra container
    # at once and cut the published ports, hiding the drain.) Meanwhile the server must say
    # NOT_SERVING yet keep answering for SEQSERVE_DRAIN_SECONDS, then exit 0.
    _, running = pod
    docs = render(OVERLAY)
    grace_period = one(docs, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    drain = float(one(docs, "ConfigMap")["data"]["SEQSERVE_DRAIN_SECONDS"])
    assert drain >= 2, "the overlay's drain is too short to observe"
    started = time.monotonic()
    podman("kill", "--signal", "TERM", running.name)
    answered_while_draining = 0
    with grpc.insecure_channel(running.target) as channel:
        stub = sentiment_pb2_grpc.SentimentStub(channel)
        while time.monotonic() - started < drain - 1:
            if health(running.target) == health_pb2.HealthCheckResponse.NOT_SERVING:
                response = stub.Analyze(sentiment_pb2.AnalyzeSentimentRequest(texts=["Still here?"]), timeout=5)
                assert response.results
                answered_while_draining += 1
            time.sleep(0.2)
    try:
        exit_code = podman("wait", running.name, timeout=grace_period).stdout.strip()
    except subprocess.TimeoutExpired:
        podman("kill", running.name, check=False)
        pytest.fail(f"still running {grace_period} s after SIGTERM (the kubelet would SIGKILL it):\n{running.logs()}")
    took = time.monotonic() - started
    assert inspect(running.name)["RestartCount"] == 0, running.logs()
    assert answered_while_draining >= 1, "never saw NOT_SERVING with calls still answered during the drain"
    assert exit_code == "0", running.logs()
    assert drain <= took < grace_period, f"stopped {took:.1f} s after SIGTERM"
    assert "received SIGTERM" in running.logs()
