"""--workers 2: the real server as a supervisor and two worker processes on one port (service/workers.py)."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence

import grpc
import pytest
from conftest import REPO, STARTUP_SECONDS, ServerProcess, free_port
from exported_models import SENTIMENT
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from seqserve.v1 import sentiment_pb2, sentiment_pb2_grpc

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
# A new TCP connection per channel: grpc shares one among channels of equal target and options otherwise,
# and SO_REUSEPORT picks the worker per connection.
FRESH = [("grpc.use_local_subchannel_pool", 1)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The sentiment model alone: each worker loads the whole repository, and this one loads in ~0.1 s."""
    root = tmp_path_factory.mktemp("models")
    shutil.copytree(SENTIMENT, root / "sentiment-bigru" / SENTIMENT.name)
    return root


def launch(log_path: pathlib.Path, model_dir: pathlib.Path, args: Sequence[str], port: int | None = None
           ) -> ServerProcess:
    port = port or free_port()
    metrics_port = free_port()
    command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port),
               "--metrics-port", str(metrics_port), "--model-dir", str(model_dir), *args]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
                                   stdout=log_file, stderr=subprocess.STDOUT)
    return ServerProcess(process=process, port=port, metrics_port=metrics_port, log_path=log_path)


@pytest.fixture
def servers(tmp_path: pathlib.Path, model_dir: pathlib.Path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def start(args: Sequence[str] = ("--workers", "2"), port: int | None = None) -> ServerProcess:
        server = launch(tmp_path / f"server-{len(started)}.log", model_dir, args, port)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def wait_for_log(server: ServerProcess, pattern: str, count: int = 1) -> list[re.Match[str]]:
    """The log's matches of `pattern` once there are `count` of them (the server writes them as it goes)."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        found = list(re.finditer(pattern, server.log()))
        if len(found) >= count:
            return found
        if server.process.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"no {count} x {pattern!r} in the log (exit {server.process.poll()}):\n{server.log()}")


def all_workers_serving(server: ServerProcess, workers: int = 2) -> list[int]:
    """The workers' pids, once the supervisor has logged every one of them serving."""
    wait_for_log(server, rf"{workers} of {workers} workers serving")
    return [int(m.group(1)) for m in re.finditer(r"worker \d+ started \(pid (\d+)\)", server.log())]


def scrape(server: ServerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        text = response.read().decode("utf-8")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def fresh_health(server: ServerProcess) -> int:
    with grpc.insecure_channel(server.target, options=FRESH) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def test_calls_over_fresh_connections_reach_both_workers_and_one_endpoint_sums_them(servers) -> None:
    server = servers()
    all_workers_serving(server)
    calls = 40  # each on its own connection: all 40 on one worker would have odds of 2**-39
    for _ in range(calls):
        with grpc.insecure_channel(server.target, options=FRESH) as channel:
            reply = sentiment_pb2_grpc.SentimentStub(channel).Analyze(
                sentiment_pb2.AnalyzeSentimentRequest(texts=["A lovely, moving film."]), timeout=30)
            assert reply.results[0].label == "positive"
    samples = scrape(server)
    per_worker = {dict(labels)["worker"]: value for (name, labels), value in samples.items()
                  if name == "seqserve_worker_calls_total"}
    assert set(per_worker) == {"0", "1"} and min(per_worker.values()) >= 1, per_worker
    answered = samples[("seqserve_requests_total", (("code", "OK"), ("method", "Analyze"), ("model", "sentiment-bigru"),
                                                    ("service", "seqserve.v1.Sentiment"), ("version", SENTIMENT.name)))]
    assert answered == calls == sum(per_worker.values())
    assert samples[("seqserve_workers_alive", ())] == samples[("seqserve_workers_configured", ())] == 2
    # The group's memory, not the supervisor's alone: two workers with a model each are far above one.
    assert samples[("process_resident_memory_bytes", ())] > 2 * 60 * 2**20


def test_sigterm_turns_every_worker_not_serving_then_stops_them_all_and_exits_0(servers) -> None:
    server = servers(["--workers", "2", "--drain-seconds", "3"])
    pids = all_workers_serving(server)
    assert len(pids) == 2 and all(fresh_health(server) == SERVING for _ in range(10))
    server.process.send_signal(signal.SIGTERM)
    wait_for_log(server, r"health NOT_SERVING; draining for", count=2)  # one line per worker
    # During the drain every connection, whichever worker it lands on, hears NOT_SERVING.
    assert [fresh_health(server) for _ in range(10)] == [NOT_SERVING] * 10
    assert server.wait_for_exit(timeout=60) == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert "exiting with status 0" in server.log()


def test_a_busy_port_still_fails_at_start_either_way(servers) -> None:
    single = servers(["--workers", "1"])
    single.wait_until_serving()
    clash = servers(["--workers", "2"], port=single.port)
    assert clash.wait_for_exit() == 1
    assert "cannot serve: cannot bind" in clash.log() and "worker 0 started" not in clash.log()

    group = servers(["--workers", "2"])
    all_workers_serving(group)
    for args in (["--workers", "1"], ["--workers", "2"]):
        late = servers(args, port=group.port)
        assert late.wait_for_exit() == 1, late.log()
        assert "cannot serve" in late.log()
    assert group.health() == SERVING


def test_a_worker_that_cannot_start_stops_the_server_with_status_1(servers, tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "no-such-cert.pem"
    server = servers(["--workers", "2", "--tls-cert", str(missing), "--tls-key", str(missing)])
    assert server.wait_for_exit() == 1
    log = server.log()
    assert re.search(r"CRITICAL service: cannot serve: worker \d: .*no-such-cert\.pem", log), log
    assert re.search(r"cannot serve: worker \d \(pid \d+\) ended before serving \(exit status 1\)", log), log


def test_a_worker_killed_while_serving_is_restarted_logged_and_counted(servers) -> None:
    server = servers()
    killed = all_workers_serving(server)[0]
    os.kill(killed, signal.SIGKILL)
    wait_for_log(server, rf"worker 0 \(pid {killed}\) died while serving \(signal SIGKILL\); restarting it")
    wait_for_log(server, r"worker 0 \(pid \d+\) serving", count=2)
    samples = scrape(server)
    assert samples[("seqserve_worker_restarts_total", (("reason", "signal SIGKILL"),))] == 1
    assert samples[("seqserve_workers_alive", ())] == 2
    assert fresh_health(server) == SERVING


def test_workers_share_the_thread_budget(tmp_path: pathlib.Path) -> None:
    from service.runtime.threads import thread_budget

    # 4 threads for the server: 2 per worker, 1 per session of each worker's 2 inference threads.
    assert thread_budget(4, 2, root=tmp_path, processes=2).total == 2
    assert thread_budget(4, 2, root=tmp_path, processes=2).per_session == 1
    assert thread_budget(1, 1, root=tmp_path, processes=3).total == 1  # never below one thread
    assert thread_budget(4, 2, root=tmp_path).total == 4  # a single process keeps the whole budget
