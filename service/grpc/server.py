"""The grpc.aio server: seqserve services, health, reflection, and a graceful stop on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from seqserve.v1 import models_pb2_grpc, sentiment_pb2_grpc

from service.config import Settings
from service.grpc import models_servicer, sentiment_servicer
from service.grpc.decoding import DecodeErrorInterceptor
from service.grpc.models_servicer import ModelsServicer
from service.grpc.sentiment_servicer import SentimentServicer
from service.grpc.validation import TextLimits
from service.metrics.registry import ServingMetrics
from service.pipelines.sentiment import SentimentPipeline
from service.repository.repository import ModelRepository

log = logging.getLogger(__name__)

SEQSERVE_SERVICES = (sentiment_servicer.SERVICE_NAME, models_servicer.SERVICE_NAME)
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
# "" is the whole server, as the kubelet's gRPC probe and `grpc_health_probe` ask by default.
HEALTH_NAMES = ("", *SEQSERVE_SERVICES)


class ServeError(Exception):
    """The server could not start (e.g. its port is taken)."""


def listen_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


@dataclass
class RunningServer:
    server: grpc.aio.Server
    health: health_aio.HealthServicer
    address: str


async def start_server(
    settings: Settings,
    repository: ModelRepository,
    pipelines: Mapping[str, SentimentPipeline],
    executor: Executor,
    metrics: ServingMetrics,
) -> RunningServer:
    server = grpc.aio.server(
        interceptors=[DecodeErrorInterceptor(metrics, SEQSERVE_SERVICES)],
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            # grpc sets SO_REUSEPORT by default, which lets a second server bind a busy port and
            # silently share its traffic; a port clash must fail at start instead.
            ("grpc.so_reuseport", 0),
        ]
    )
    limits = TextLimits(max_texts=settings.max_texts, max_text_chars=settings.max_text_chars)
    sentiment_pb2_grpc.add_SentimentServicer_to_server(
        SentimentServicer(repository, pipelines, limits, executor, metrics), server
    )
    models_pb2_grpc.add_ModelsServicer_to_server(ModelsServicer(repository, metrics), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection((*SEQSERVE_SERVICES, HEALTH_SERVICE, reflection.SERVICE_NAME), server)

    # The health servicer starts out reporting "" as SERVING; nothing may say so before we listen.
    for name in HEALTH_NAMES:
        await health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    try:
        port = server.add_insecure_port(listen_address(settings.host, settings.port))
    except RuntimeError as exc:  # grpc reports a failed bind as RuntimeError("Failed to bind ...")
        raise ServeError(str(exc)) from None
    await server.start()
    # Models were loaded and verified before the server was built, so it is ready as soon as it listens.
    for name in HEALTH_NAMES:
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    address = listen_address(settings.host, port)
    log.info("serving on %s", address)
    return RunningServer(server=server, health=health, address=address)


async def stop_server(running: RunningServer, grace_seconds: float) -> None:
    # NOT_SERVING first, for every name at once, so load balancers stop routing here while the
    # calls already in flight get `grace_seconds` to finish.
    await running.health.enter_graceful_shutdown()
    log.info("health NOT_SERVING; stopping with %.1f s grace for in-flight calls", grace_seconds)
    await running.server.stop(grace_seconds)
    log.info("stopped")


def stop_signal_future() -> asyncio.Future[signal.Signals]:
    """A future that SIGTERM or SIGINT completes with the signal.

    loop.add_signal_handler, not Python's default SIGINT handling: as PID 1 in a container a process
    gets no default SIGTERM action, so without a handler `podman stop` ends in SIGKILL.
    """
    loop = asyncio.get_running_loop()
    received: asyncio.Future[signal.Signals] = loop.create_future()

    def on_signal(sig: signal.Signals) -> None:
        if received.done():
            log.info("received %s again; already stopping", sig.name)
        else:
            log.info("received %s", sig.name)
            received.set_result(sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    return received


async def serve(
    settings: Settings,
    repository: ModelRepository,
    pipelines: Mapping[str, SentimentPipeline],
    executor: Executor,
    metrics: ServingMetrics,
) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully."""
    # Handlers go in before the port opens, so a signal that arrives early still stops cleanly.
    stop_signal = stop_signal_future()
    running = await start_server(settings, repository, pipelines, executor, metrics)
    try:
        await stop_signal
    finally:
        await stop_server(running, settings.grace_seconds)
