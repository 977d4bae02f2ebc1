"""Start the servers under test as separate processes, time their cold start and read their memory."""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from seqserve.oip import grpc_service_pb2 as oip
from seqserve.oip import grpc_service_pb2_grpc as oip_grpc

REPO = pathlib.Path(__file__).resolve().parents[1]
START_SECONDS = 120  # generous: the machine may be shared with training jobs


def free_port() -> int:
    """A free port: the OS's choice, or one of SEQSERVE_BENCH_PORTS ("50640-50649") when set, for a machine
    where each person's servers keep to their own ports. The range is scanned from after the last port
    handed out, so two calls in a row (a server's port and its metrics port) never get the same one."""
    span = os.environ.get("SEQSERVE_BENCH_PORTS", "")
    if not span:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    first, last = (int(part) for part in span.split("-"))
    ports = list(range(first, last + 1))
    start = (ports.index(_LAST[0]) + 1) if _LAST and _LAST[0] in ports else 0
    for port in ports[start:] + ports[:start]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _LAST[:] = [port]
        return port
    raise RuntimeError(f"no free port in SEQSERVE_BENCH_PORTS={span}")


_LAST: list[int] = []  # the SEQSERVE_BENCH_PORTS port handed out last


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants (MLServer runs worker processes)."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            status = pathlib.Path(f"/proc/{current}/status").read_text()
            total += next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:"))
            children = pathlib.Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except (OSError, StopIteration):
            continue
        pending += [int(c) for c in children]
    return total


def _tree(pid: int) -> list[int]:
    pids, pending = [], [pid]
    while pending:
        current = pending.pop()
        pids.append(current)
        try:
            pending += [int(c) for c in pathlib.Path(f"/proc/{current}/task/{current}/children").read_text().split()]
        except OSError:
            continue
    return pids


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its descendants so far (their threads included)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for current in _tree(pid):
        try:
            fields = pathlib.Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14 and 15 of stat)
    return total


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    target: str
    log_path: pathlib.Path
    start_seconds: float = 0.0   # spawn -> ready, measured by wait_ready

    def rss(self) -> int:
        return rss_bytes(self.process.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.process.pid)

    def wait_ready(self, ready: Callable[[grpc.Channel], bool], started: float) -> None:
        deadline = started + START_SECONDS
        with grpc.insecure_channel(self.target) as channel:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log_path}")
                try:
                    if ready(channel):
                        self.start_seconds = time.monotonic() - started
                        return
                except grpc.RpcError:
                    pass  # not listening yet
                time.sleep(0.02)
        raise RuntimeError(f"{self.name} not ready after {START_SECONDS} s; see {self.log_path}")

    def wait_for_log(self, text: str) -> None:
        """Until the server's log holds `text` (e.g. the supervisor's line that every worker serves)."""
        deadline = time.monotonic() + START_SECONDS
        while text not in self.log_path.read_text("utf-8", errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no {text!r} in the log; see {self.log_path}")
            time.sleep(0.05)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def health_serving(channel: grpc.Channel) -> bool:
    response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
    return response.status == health_pb2.HealthCheckResponse.SERVING


def v2_model_ready(model: str) -> Callable[[grpc.Channel], bool]:
    def ready(channel: grpc.Channel) -> bool:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        return stub.ModelReady(oip.ModelReadyRequest(name=model), timeout=1).ready

    return ready


def start_seqserve(name: str, model_dir: pathlib.Path, log_dir: pathlib.Path, extra_args: Sequence[str] = (),
                   code: pathlib.Path = REPO) -> Server:
    """`python -m service` as in production (default flags unless given), ready = health SERVING.
    `code`: the source tree whose service/ runs (another commit's checkout, for a before/after)."""
    port = free_port()
    command = [
        sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "0",
        "--model-dir", str(model_dir), "--log-level", "WARNING", *extra_args,
    ]
    log_path = log_dir / f"{name}.log"
    started = time.monotonic()
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, cwd=code, env={**os.environ, "OMP_NUM_THREADS": "1"},
                                   stdout=log_file, stderr=subprocess.STDOUT)
    server = Server(name, process, f"127.0.0.1:{port}", log_path)
    try:
        server.wait_ready(health_serving, started)
    except Exception:
        server.stop()
        raise
    return server


def start_seqserve_workers(name: str, model_dir: pathlib.Path, log_dir: pathlib.Path, workers: int) -> Server:
    """`python -m service --workers N`, ready once every worker serves (health answers from the first)."""
    server = start_seqserve(name, model_dir, log_dir, ("--workers", str(workers), "--log-level", "INFO"))
    try:
        server.wait_for_log(f"{workers} of {workers} workers serving")
    except Exception:
        server.stop()
        raise
    return server
