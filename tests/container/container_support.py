"""Running the built image with podman, for tests/container (see deploy/container/test.sh)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

IMAGE = os.environ.get("SEQSERVE_CONTAINER_IMAGE", "")
STARTUP_SECONDS = 90
STOP_TIMEOUT_SECONDS = 30  # as `podman stop -t 30`: SIGKILL after this long

SKIP_REASON = "SEQSERVE_CONTAINER_IMAGE is not set: `make container-test` builds the image and runs these"


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("podman")
    if binary is None:
        pytest.fail("podman is not installed (deploy/container/test.sh installs it)")
    result = subprocess.run([binary, *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def inspect(name: str) -> dict:
    return json.loads(podman("inspect", name).stdout)[0]


def health(target: str, service: str = "", timeout: float = 2.0) -> int:
    with grpc.insecure_channel(target) as channel:
        request = health_pb2.HealthCheckRequest(service=service)
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=timeout).status


@dataclass
class Running:
    """A container (or a kube-play pod's container) answering on loopback ports of this host."""

    name: str
    grpc_port: int
    metrics_port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def state(self) -> dict:
        return inspect(self.name)["State"]

    def wait_until_serving(self) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if not self.state()["Running"]:
                raise AssertionError(f"{self.name} exited {self.state()['ExitCode']}:\n{self.logs()}")
            try:
                if health(self.target) == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass  # not listening yet
            time.sleep(0.5)
        raise AssertionError(f"{self.name} not SERVING after {STARTUP_SECONDS} s:\n{self.logs()}")


def run_container(name: str, *extra: str) -> Running:
    """`podman run` the image as users are told to run it: read-only root, loopback ports only."""
    running = Running(name=name, grpc_port=free_port(), metrics_port=free_port())
    podman(
        # --read-only-tmpfs=false: podman would otherwise mount tmpfs on /tmp, /var/tmp and /run,
        # which `docker run --read-only` and Kubernetes' readOnlyRootFilesystem do not; the server
        # must work with no writable path at all.
        "run", "--detach", "--name", name, "--read-only", "--read-only-tmpfs=false",
        # The image's HEALTHCHECK stays defined (the tests run it with `podman healthcheck run`);
        # only podman's systemd timer for it is off, since this machine has no systemd.
        "--health-interval=disable",
        "--publish", f"127.0.0.1:{running.grpc_port}:50051",
        "--publish", f"127.0.0.1:{running.metrics_port}:9090",
        *extra, IMAGE,
    )
    return running


def stop_and_time(*command: str) -> float:
    start = time.monotonic()
    podman(*command, timeout=STOP_TIMEOUT_SECONDS + 30)
    return time.monotonic() - start
