"""The Python gRPC floor: a bare grpc.aio unary echo server, measured beside seqserve in the same run.

It answers one method with the request's own bytes: no (de)serialisation, no interceptors, no metrics,
no model. What a seqserve call costs above this is seqserve's own per-call work (issue #20), so the
report publishes seqserve/echo for calls/s and server CPU per call. Run as
`python -m bench.peer.echo PORT [MODE [THREADS]]`; `start_echo` starts it as a process of its own.

The other modes measure one server design choice each against the floor (`python -m bench floor
--echo-variants`): `interceptors` adds three pass-through aio interceptors (seqserve has three),
`sync` is grpc's thread-pool server with THREADS threads, `handoff` hands every batch of waiting calls to a
thread and back, as seqserve's batcher does, and `sync-handoff` is the sync server doing the same (each
call's pool thread waits for its batch, as a batching sync seqserve would).
"""

from __future__ import annotations

import asyncio
import pathlib
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from bench.endpoints import Endpoint
from bench.servers import REPO, Server, free_port

ECHO_METHOD = "/bench.Echo/Echo"
ECHO_MODES = ("aio", "interceptors", "sync", "handoff", "sync-handoff")


def _echo_handler(echo: Any) -> grpc.GenericRpcHandler:
    # No serializer either way: bytes in, the same bytes out.
    return grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)})


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


class _PassThrough(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        return await continuation(details)


class _HandOff:
    """Calls queue; one task hands each batch of waiting calls to a thread and back (seqserve's batcher,
    without a model)."""

    def __init__(self, threads: int) -> None:
        self._waiting: list[tuple[bytes, asyncio.Future[bytes]]] = []
        self._wakeup = asyncio.Event()
        self._pool = ThreadPoolExecutor(threads)

    async def echo(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, answer))
        self._wakeup.set()
        return await answer

    async def run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch, self._waiting = self._waiting, []
            requests = [request for request, _ in batch]
            answers = await asyncio.get_running_loop().run_in_executor(self._pool, list, requests)
            for (_, answer), raw in zip(batch, answers, strict=True):
                if not answer.done():
                    answer.set_result(raw)


async def serve(port: int, mode: str = "aio", threads: int = 2) -> None:
    server = grpc.aio.server(interceptors=[_PassThrough() for _ in range(3)] if mode == "interceptors" else None)
    worker = None
    if mode == "handoff":
        handoff = _HandOff(threads)
        worker = asyncio.get_running_loop().create_task(handoff.run())
        server.add_generic_rpc_handlers((_echo_handler(handoff.echo),))
    else:
        server.add_generic_rpc_handlers((_echo_handler(_echo),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    # SIGTERM (Server.stop) ends it cleanly, exit 0, as seqserve does: the harness counts other exits as errors.
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    await stopping.wait()
    await server.stop(None)
    if worker is not None:
        worker.cancel()


class _SyncHandOff:
    """The sync server's form of _HandOff: a call's pool thread queues it and waits; one batching thread
    takes every waiting call, "runs" the batch and wakes each call's thread."""

    def __init__(self) -> None:
        self._waiting: list[tuple[bytes, threading.Event, list[bytes]]] = []
        self._ready = threading.Condition()
        threading.Thread(target=self._run, name="batcher", daemon=True).start()

    def echo(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        done, answer = threading.Event(), list[bytes]()
        with self._ready:
            self._waiting.append((request, done, answer))
            self._ready.notify()
        done.wait()
        return answer[0]

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._waiting:
                    self._ready.wait()
                batch, self._waiting = self._waiting, []
            for request, done, answer in batch:
                answer.append(request)
                done.set()


def serve_sync(port: int, threads: int, handoff: bool = False) -> None:
    """grpc's thread-pool server: each call runs in one of `threads` threads, no event loop; `handoff`: calls
    wait for a batching thread (_SyncHandOff)."""
    def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        return request

    handler = _SyncHandOff().echo if handoff else echo
    server = grpc.server(ThreadPoolExecutor(threads))
    server.add_generic_rpc_handlers((_echo_handler(handler),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    stopping.wait()
    server.stop(None).wait()


def echo_ready(channel: grpc.Channel) -> bool:
    echo: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(ECHO_METHOD)
    return echo(b"ready", timeout=1) == b"ready"


def start_echo(log_dir: pathlib.Path, mode: str = "aio", threads: int = 2) -> Server:
    """The echo server as its own process (one event loop, as seqserve's default single worker); `mode` and
    `threads` as in the module's docstring."""
    port = free_port()
    name = "echo" if mode == "aio" else f"echo-{mode}-{threads}"
    log_path = log_dir / f"{name}.log"
    started = time.monotonic()
    with log_path.open("wb") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "bench.peer.echo", str(port), mode, str(threads)],
                                   cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT)
    server = Server(name, process, f"127.0.0.1:{port}", log_path)
    try:
        server.wait_ready(echo_ready, started)
    except Exception:
        server.stop()
        raise
    return server


def echo_endpoint(requests: list[bytes]) -> Endpoint:
    """The same request bytes seqserve gets, echoed back; the check is that they come back unchanged."""
    sent = set(requests)

    def check(raw: bytes) -> None:
        assert raw in sent, raw[:80]

    def no_baseline(i: int) -> object:  # nothing to run in-process: the echo does no work
        return requests[i % len(requests)]

    return Endpoint(name="echo (grpc.aio floor)", method=ECHO_METHOD, requests=requests, raw=no_baseline,
                    check=check)


def main(argv: list[str]) -> None:
    port, mode, threads = int(argv[0]), argv[1] if len(argv) > 1 else "aio", int(argv[2]) if len(argv) > 2 else 2
    if mode not in ECHO_MODES:
        raise SystemExit(f"mode: {mode!r} is not one of {', '.join(ECHO_MODES)}")
    if mode in ("sync", "sync-handoff"):
        serve_sync(port, threads, handoff=mode == "sync-handoff")
    else:
        asyncio.run(serve(port, mode, threads))


if __name__ == "__main__":
    main(sys.argv[1:])
