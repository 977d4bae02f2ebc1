"""The Python gRPC floor: a bare grpc.aio unary echo server, measured beside seqserve in the same run.

It answers one method with the request's own bytes: no (de)serialisation, no interceptors, no metrics,
no model. What a seqserve call costs above this is seqserve's own per-call work (issue #20), so the
report publishes seqserve/echo for calls/s and server CPU per call. Run as
`python -m bench.peer.echo PORT`; `start_echo` starts it as a process of its own.
"""

from __future__ import annotations

import asyncio
import pathlib
import signal
import subprocess
import sys
import time

import grpc

from bench.endpoints import Endpoint
from bench.servers import REPO, Server, free_port

ECHO_METHOD = "/bench.Echo/Echo"


def _echo_handler() -> grpc.GenericRpcHandler:
    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    # No serializer either way: bytes in, the same bytes out.
    return grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)})


async def serve(port: int) -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_echo_handler(),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    # SIGTERM (Server.stop) ends it cleanly, exit 0, as seqserve does: the harness counts other exits as errors.
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    await stopping.wait()
    await server.stop(None)


def echo_ready(channel: grpc.Channel) -> bool:
    echo: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(ECHO_METHOD)
    return echo(b"ready", timeout=1) == b"ready"


def start_echo(log_dir: pathlib.Path) -> Server:
    """The echo server as its own process (one event loop, as seqserve's default single worker)."""
    port = free_port()
    log_path = log_dir / "echo.log"
    started = time.monotonic()
    with log_path.open("wb") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "bench.peer.echo", str(port)], cwd=REPO,
                                   stdout=log_file, stderr=subprocess.STDOUT)
    server = Server("echo", process, f"127.0.0.1:{port}", log_path)
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


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
