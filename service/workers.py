"""`--workers N`: N server processes on one port, supervised by the process the operator started.

One grpc.aio process never uses much more than one core of Python (issue 20), so a server spreads over
several: the supervisor starts N workers as fresh interpreters (`python -m service` again, spawned, never
forked after grpc exists: grpc's own multiprocessing example forks before any grpc object is made), each
loading the repository and binding the same port with SO_REUSEPORT so the kernel shares connections
among them. The supervisor holds no grpc object at all. It:

- reserves the port first: a plain bind proves nobody (a single-worker seqserve, another group) holds it,
  so a clash still fails at start; then it keeps a non-listening SO_REUSEPORT socket on it for its whole
  life, so a later server's plain bind fails as well (as grpc's example reserves its port);
- serves the one /metrics: every worker's series summed (service/metrics/multiprocess.py);
- forwards SIGTERM/SIGINT to every worker, each of which runs the server's SIGTERM sequence, and exits 0
  once all of them stopped cleanly;
- stops everything and exits 1 when a worker dies before it serves (a bad TLS file, no loadable model:
  the worker's own critical line says why); a worker that dies while serving is restarted, logged and
  counted (seqserve_worker_restarts_total, seqserve_workers_alive below seqserve_workers_configured).

A worker knows it is one by the environment the supervisor gives it (WORKER_ENV); it writes a ready
file once it listens, and stops itself if the supervisor disappears (SIGKILL leaves no one to forward).
"""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from service.config import Settings
from service.metrics.http import start_metrics_server
from service.metrics.multiprocess import SupervisorMetrics
from service.runtime.threads import cpu_budget

log = logging.getLogger("service.workers")

WORKER_ENV = "SEQSERVE_WORKER"  # "<index>/<count>/<run dir>/<supervisor pid>", set by the supervisor only
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# How often the supervisor looks at its workers (and a worker at its parent): a crash is noticed within it.
POLL_SECONDS = 0.2
# After the workers' own SIGTERM sequence (drain + grace) has had its time, whatever is left is killed.
STOP_MARGIN_SECONDS = 15.0


class PortTaken(Exception):
    """The gRPC port is held by another process."""


def worker_count(settings: Settings) -> int:
    """--workers, with 0 meaning one per CPU of the budget (affinity, cgroup quota)."""
    return settings.workers if settings.workers > 0 else cpu_budget()[0]


@dataclass(frozen=True)
class WorkerIdentity:
    """What a worker process learns from its environment."""

    index: int
    count: int
    run_dir: pathlib.Path
    supervisor_pid: int

    def mark_ready(self) -> None:
        """Tell the supervisor this worker listens (a file, so no pipe has to survive the spawn)."""
        (self.run_dir / f"ready-{self.index}-{os.getpid()}").touch()

    async def supervisor_gone(self) -> None:
        """Returns when the supervisor has died (this process was re-parented): the worker must stop."""
        while os.getppid() == self.supervisor_pid:
            await asyncio.sleep(1.0)
        log.warning("supervisor %d is gone; stopping", self.supervisor_pid)


def worker_identity() -> WorkerIdentity | None:
    raw = os.environ.get(WORKER_ENV)
    if not raw:
        return None
    index, count, rest = raw.split("/", 2)
    run_dir, supervisor_pid = rest.rsplit("/", 1)
    return WorkerIdentity(int(index), int(count), pathlib.Path(run_dir), int(supervisor_pid))


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket holding host:port for the workers (port 0: a free one); PortTaken if anyone holds it."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    with socket.socket(family, kind, proto) as probe:  # no SO_REUSEPORT: fails if any socket has the port
        try:
            probe.bind(address)
        except OSError as exc:
            raise PortTaken(f"cannot bind {host}:{port}: {exc.strerror}") from None
        address = (address[0], probe.getsockname()[1], *address[2:])
    held = socket.socket(family, kind, proto)
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        held.bind(address)  # another process could have taken it since the probe closed
    except OSError as exc:
        held.close()
        raise PortTaken(f"cannot bind {host}:{port}: {exc.strerror}") from None
    return held


@dataclass
class Worker:
    index: int
    process: subprocess.Popen[bytes]
    ready: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid


def exit_reason(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"


@dataclass
class Supervisor:
    settings: Settings
    argv: Sequence[str]
    count: int
    run_dir: pathlib.Path
    port: int
    metrics: SupervisorMetrics
    workers: list[Worker] = field(default_factory=list)
    stop_requested: threading.Event = field(default_factory=threading.Event)

    def pids(self) -> list[int]:
        return [os.getpid(), *(w.pid for w in self.workers if w.process.poll() is None)]

    def spawn(self, index: int) -> Worker:
        env = {
            **os.environ,
            WORKER_ENV: f"{index}/{self.count}/{self.run_dir}/{os.getpid()}",
            MULTIPROC_ENV: str(self.metrics.multiprocess_dir),
        }
        # The port the supervisor reserved (it resolves --port 0); argparse takes the last --port given.
        command = [sys.executable, "-m", "service", *self.argv, "--port", str(self.port)]
        process = subprocess.Popen(command, env=env)  # stdout/stderr inherited: one log stream
        log.info("worker %d started (pid %d)", index, process.pid)
        return Worker(index, process)

    def request_stop(self, signum: int, _frame: object) -> None:
        log.info("received %s; stopping %d workers", signal.Signals(signum).name, len(self.workers))
        self.stop_requested.set()

    def check_ready(self) -> None:
        for worker in self.workers:
            if not worker.ready and (self.run_dir / f"ready-{worker.index}-{worker.pid}").exists():
                worker.ready = True
                serving = sum(w.ready for w in self.workers)
                log.info("worker %d (pid %d) serving; %d of %d workers serving", worker.index, worker.pid,
                         serving, self.count)

    def run(self) -> int:
        """Start the workers and watch them until a stop signal or a failed start; the exit status."""
        self.workers = [self.spawn(i) for i in range(self.count)]
        self.metrics.workers_configured.set(self.count)
        status = 0
        while not self.stop_requested.wait(POLL_SECONDS):
            self.check_ready()
            for position, worker in enumerate(self.workers):
                code = worker.process.poll()
                if code is None:
                    continue
                self.metrics.worker_exited(worker.pid)
                if not worker.ready:
                    log.critical("cannot serve: worker %d (pid %d) ended before serving (%s); stopping the "
                                 "others", worker.index, worker.pid, exit_reason(code))
                    status = 1
                    self.stop_requested.set()
                    break
                log.error("worker %d (pid %d) died while serving (%s); restarting it", worker.index, worker.pid,
                          exit_reason(code))
                self.metrics.worker_restarts.labels(exit_reason(code)).inc()
                self.workers[position] = self.spawn(worker.index)
            self.metrics.workers_alive.set(sum(w.process.poll() is None for w in self.workers))
        return max(status, self.stop_workers())

    def stop_workers(self) -> int:
        """SIGTERM every worker (each runs the drain/hold/stop sequence), wait, kill what overstays."""
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        limit = self.settings.drain_seconds + self.settings.grace_seconds + STOP_MARGIN_SECONDS
        status = 0
        for worker in self.workers:
            try:
                code = worker.process.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                log.error("worker %d (pid %d) still running %.0f s after SIGTERM; killing it",
                          worker.index, worker.pid, limit)
                worker.process.kill()
                code = worker.process.wait()
            self.metrics.worker_exited(worker.pid)
            if code != 0 and worker.ready:
                log.error("worker %d (pid %d) stopped with %s", worker.index, worker.pid, exit_reason(code))
                status = 1
        self.metrics.workers_alive.set(0)
        return status


def supervise(settings: Settings, argv: Sequence[str]) -> int:
    """The parent of --workers N > 1: reserve the port, serve the summed metrics, run the workers."""
    count = worker_count(settings)
    try:
        held = reserve_port(settings.host, settings.port)
    except PortTaken as exc:
        log.critical("cannot serve: %s", exc)
        return 1
    run_dir = pathlib.Path(tempfile.mkdtemp(prefix="seqserve-workers-"))
    try:
        multiprocess_dir = run_dir / "metrics"
        multiprocess_dir.mkdir()
        supervisor: Supervisor | None = None
        metrics = SupervisorMetrics(multiprocess_dir, lambda: supervisor.pids() if supervisor else [os.getpid()])
        try:
            metrics_server, metrics_port = start_metrics_server(settings.host, settings.metrics_port,
                                                                metrics.registry)
        except OSError as exc:
            log.critical("cannot serve metrics on %s:%d: %s", settings.host, settings.metrics_port, exc)
            return 1
        port = held.getsockname()[1]
        log.info("%d workers on port %d; metrics of all of them on http://%s:%d/metrics", count, port,
                 settings.host, metrics_port)
        supervisor = Supervisor(settings, argv, count, run_dir, port, metrics)
        previous = {sig: signal.signal(sig, supervisor.request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            status = supervisor.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            metrics_server.shutdown()
    finally:
        held.close()
        shutil.rmtree(run_dir, ignore_errors=True)
    log.info("exiting with status %d", status)
    return status
