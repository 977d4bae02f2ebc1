"""Fixtures that run the REAL server (`python -m service`) as a subprocess, as it runs in production."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from exported_models import SENTIMENT
from grpc_health.v1 import health_pb2, health_pb2_grpc
from seqserve.v1 import models_pb2_grpc, sentiment_pb2_grpc

REPO = pathlib.Path(__file__).resolve().parents[1]
EXPORTED = REPO / "exported"
MODEL_DIR = SENTIMENT  # the newest committed version
STARTUP_SECONDS = 90  # loading is ~1 s, but this machine also runs training jobs


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def exported_manifest() -> dict[str, Any]:
    return json.loads((MODEL_DIR / "manifest.json").read_text("utf-8"))


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    log_path: pathlib.Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def log(self) -> str:
        return self.log_path.read_text("utf-8", errors="replace")

    def health(self, service: str = "", timeout: float = 2.0) -> int:
        with grpc.insecure_channel(self.target) as channel:
            request = health_pb2.HealthCheckRequest(service=service)
            return health_pb2_grpc.HealthStub(channel).Check(request, timeout=timeout).status

    def wait_until_serving(self) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if self.health() == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass  # not listening yet
            time.sleep(0.2)
        raise AssertionError(f"server not SERVING after {STARTUP_SECONDS} s:\n{self.log()}")

    def wait_for_exit(self, timeout: float = STARTUP_SECONDS) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def launch_server(
    log_path: pathlib.Path, model_dir: pathlib.Path = EXPORTED, extra_args: Sequence[str] = ()
) -> ServerProcess:
    port, metrics_port = free_port(), free_port()
    command = [
        sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port),
        "--metrics-port", str(metrics_port), "--model-dir", str(model_dir), *extra_args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with log_path.open("wb") as log_file:
        # The log goes to a file, not a pipe: nobody reads a pipe while tests run, and a full pipe
        # would block the server.
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    return ServerProcess(process=process, port=port, metrics_port=metrics_port, log_path=log_path)


@pytest.fixture
def start_server(tmp_path: pathlib.Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start extra servers (for shutdown and refusal tests); each one is stopped after the test."""
    started: list[ServerProcess] = []

    def start(model_dir: pathlib.Path = EXPORTED, extra_args: Sequence[str] = (), wait: bool = True) -> ServerProcess:
        server = launch_server(tmp_path / f"server-{len(started)}.log", model_dir, extra_args)
        started.append(server)
        if wait:
            server.wait_until_serving()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server on the committed exported/ models, shared by the read-only integration tests."""
    running = launch_server(tmp_path_factory.mktemp("server") / "server.log")
    try:
        running.wait_until_serving()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.target) as open_channel:
        yield open_channel


@pytest.fixture(scope="session")
def sentiment(channel: grpc.Channel) -> sentiment_pb2_grpc.SentimentStub:
    return sentiment_pb2_grpc.SentimentStub(channel)


@pytest.fixture(scope="session")
def models(channel: grpc.Channel) -> models_pb2_grpc.ModelsStub:
    return models_pb2_grpc.ModelsStub(channel)


@pytest.fixture(scope="session")
def health(channel: grpc.Channel) -> health_pb2_grpc.HealthStub:
    return health_pb2_grpc.HealthStub(channel)


@pytest.fixture(scope="session")
def manifest() -> dict[str, Any]:
    """The manifest of the committed sentiment model, as the server should report it."""
    return exported_manifest()


@pytest.fixture(scope="session")
def tiny_translation_models(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A model directory with a tiny random Transformer as `transformer/1` (exported once per session)."""
    from translation_support import tiny_model_dir

    return tiny_model_dir(tmp_path_factory.mktemp("tiny-translation"))


@pytest.fixture(scope="session")
def translation_server(tiny_translation_models: pathlib.Path, tmp_path_factory: pytest.TempPathFactory
                       ) -> Iterator[ServerProcess]:
    """The real server on the tiny translation model only (fast to load; tests need no trained model)."""
    running = launch_server(tmp_path_factory.mktemp("translation-server") / "server.log", tiny_translation_models)
    try:
        running.wait_until_serving()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def tiny_recommendation(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(model directory holding `sasrec-tiny/1`, the Trained run behind it): a SASRec trained for a few
    steps on MovieLens-100K and exported through the real code (once per session)."""
    from recommendation_support import tiny_model_dir

    return tiny_model_dir(tmp_path_factory.mktemp("tiny-recommendation"))


@pytest.fixture(scope="session")
def recommendation_server(tiny_recommendation: Any, tmp_path_factory: pytest.TempPathFactory
                          ) -> Iterator[ServerProcess]:
    """The real server on the tiny recommendation model only."""
    running = launch_server(tmp_path_factory.mktemp("recommendation-server") / "server.log", tiny_recommendation[0])
    try:
        running.wait_until_serving()
        yield running
    finally:
        running.stop()
