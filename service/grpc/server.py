"""The grpc.aio server: seqserve services, V2 inference, health, reflection, TLS/auth, and the
SIGTERM sequence (NOT_SERVING at once -> drain delay, still answering -> new calls refused UNAVAILABLE and
Watch streams ended until calls stop arriving -> grpc stopped with a grace period for the calls in flight)."""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import Executor
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from seqserve.oip import grpc_service_pb2_grpc
from seqserve.v1 import (
    admin_pb2_grpc,
    classification_pb2_grpc,
    document_pb2_grpc,
    models_pb2_grpc,
    ner_pb2_grpc,
    recommendation_pb2_grpc,
    sentiment_pb2_grpc,
    translation_pb2_grpc,
)

from service.config import Settings
from service.grpc import (
    admin_servicer,
    classification_servicer,
    document_servicer,
    models_servicer,
    ner_servicer,
    recommendation_servicer,
    sentiment_servicer,
    translation_servicer,
)
from service.grpc.admin_servicer import AdminServicer
from service.grpc.calls import set_max_response_bytes
from service.grpc.classification_servicer import ClassificationServicer
from service.grpc.decoding import DecodeErrorInterceptor
from service.grpc.document_servicer import DocumentServicer
from service.grpc.health import HealthServicer
from service.grpc.models_servicer import ModelsServicer
from service.grpc.ner_servicer import NerServicer
from service.grpc.readiness import Readiness
from service.grpc.recommendation_servicer import RecommendationServicer
from service.grpc.sentiment_servicer import SentimentServicer
from service.grpc.shutdown_gate import QUIET_LIMIT_SECONDS, ShutdownGate
from service.grpc.translation_servicer import TranslationServicer
from service.grpc.v2 import servicer as v2_servicer
from service.grpc.v2.servicer import InferenceServicer
from service.grpc.validation import TextLimits
from service.metrics.registry import ServingMetrics
from service.registry.manager import ModelManager
from service.security.auth import AuthInterceptor, Tokens
from service.security.tls import server_credentials

log = logging.getLogger(__name__)

# Services answering for a task or for the models; each has a health name of its own.
SEQSERVE_SERVICES = (
    sentiment_servicer.SERVICE_NAME, translation_servicer.SERVICE_NAME, models_servicer.SERVICE_NAME,
    ner_servicer.SERVICE_NAME, classification_servicer.SERVICE_NAME,
    admin_servicer.SERVICE_NAME, v2_servicer.SERVICE_NAME, recommendation_servicer.SERVICE_NAME,
    document_servicer.SERVICE_NAME,
)
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
    health: HealthServicer
    readiness: Readiness
    gate: ShutdownGate
    address: str


def server_options(settings: Settings, shared_port: bool = False) -> list[tuple[str, int]]:
    """grpc options; `shared_port` for a worker of --workers N, which binds the port its siblings bind."""
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        # grpc sets SO_REUSEPORT by default, which lets a second server bind a busy port and
        # silently share its traffic; a port clash must fail at start instead. Workers do share one
        # port: their supervisor has proved it free and holds it (service/workers.py).
        ("grpc.so_reuseport", 1 if shared_port else 0),
    ]
    if settings.max_connection_age_seconds > 0:
        # Long-lived HTTP/2 connections pin a client to one replica forever; closing them after an
        # age (GOAWAY, then a grace for the calls on them) makes clients reconnect and rebalance.
        age_ms = int(settings.max_connection_age_seconds * 1000)
        options += [
            ("grpc.max_connection_age_ms", age_ms),
            ("grpc.max_connection_age_grace_ms", int(max(settings.grace_seconds, 1.0) * 1000)),
        ]
    return options


def add_task_servicers(server: grpc.aio.Server, manager: ModelManager, settings: Settings,
                       metrics: ServingMetrics) -> None:
    """One servicer per task API. A new task (translation, ...) adds its line here and its name to
    SEQSERVE_SERVICES; it gets batching, auth, metrics and health from the rest of this module."""
    limits = TextLimits(max_texts=settings.max_texts, max_text_chars=settings.max_text_chars)
    sentiment_pb2_grpc.add_SentimentServicer_to_server(SentimentServicer(manager, limits, metrics), server)
    classification_pb2_grpc.add_ClassificationServicer_to_server(
        ClassificationServicer(manager, limits, metrics), server)
    translation_pb2_grpc.add_TranslationServicer_to_server(
        TranslationServicer(manager, limits, metrics, max_cost=settings.max_translate_cost,
                            heavy_at_once=settings.inference_workers,
                            min_confidence=settings.min_translation_confidence), server)
    ner_pb2_grpc.add_NerServicer_to_server(NerServicer(manager, limits, metrics), server)
    recommendation_pb2_grpc.add_RecommendationServicer_to_server(RecommendationServicer(manager, metrics), server)
    document_pb2_grpc.add_DocumentServicer_to_server(DocumentServicer(manager, limits, metrics), server)


async def start_server(
    settings: Settings,
    manager: ModelManager,
    executor: Executor,
    metrics: ServingMetrics,
    tokens: Tokens,
    shared_port: bool = False,
) -> RunningServer:
    def count_refusal(method: str, code: str) -> None:
        service, _, name = method.lstrip("/").rpartition("/")
        if service in SEQSERVE_SERVICES:
            metrics.observe_call(service, name, "", code, 0.0)

    # The gate comes last: a call auth refuses is answered (and counted) once, by auth.
    gate = ShutdownGate((HEALTH_SERVICE,), count_refusal)
    set_max_response_bytes(settings.max_message_bytes)
    server = grpc.aio.server(
        interceptors=[AuthInterceptor(tokens, count_refusal), DecodeErrorInterceptor(metrics, SEQSERVE_SERVICES), gate],
        options=server_options(settings, shared_port),
    )
    readiness = Readiness()
    add_task_servicers(server, manager, settings, metrics)
    models_pb2_grpc.add_ModelsServicer_to_server(ModelsServicer(manager.registry, metrics), server)
    admin_pb2_grpc.add_AdminServicer_to_server(AdminServicer(manager, metrics), server)
    grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
        InferenceServicer(manager, readiness, executor, metrics,
                          max_rows=settings.max_texts, max_elements=settings.max_message_bytes,
                          max_positions=settings.max_v2_positions),
        server,
    )
    # NOT_SERVING for every name until the server listens with every model warmed.
    health = HealthServicer(HEALTH_NAMES)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection((*SEQSERVE_SERVICES, HEALTH_SERVICE, reflection.SERVICE_NAME), server)

    address = listen_address(settings.host, settings.port)
    try:
        if settings.tls_cert is not None and settings.tls_key is not None:
            credentials = server_credentials(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
            port = server.add_secure_port(address, credentials)
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpc reports a failed bind as RuntimeError("Failed to bind ...")
        raise ServeError(str(exc)) from None
    await server.start()
    # Models were loaded, verified and warmed before the server was built: ready as soon as it listens.
    health.set(health_pb2.HealthCheckResponse.SERVING)
    readiness.ready = True
    address = listen_address(settings.host, port)
    tls = "mutual TLS" if settings.tls_client_ca else "TLS" if settings.tls_cert else "plaintext"
    log.info("serving on %s (%s)", address, tls)
    return RunningServer(server=server, health=health, readiness=readiness, gate=gate, address=address)


async def stop_server(running: RunningServer, grace_seconds: float, drain_seconds: float = 0.0) -> None:
    # NOT_SERVING first, for every name at once, so load balancers stop routing here...
    running.readiness.ready = False
    running.health.enter_graceful_shutdown()
    # ...but keep answering for the drain delay: Kubernetes removes a pod from its endpoints some
    # seconds after the signal, and calls routed meanwhile must still succeed.
    if drain_seconds > 0:
        log.info("health NOT_SERVING; draining for %.1f s while still answering", drain_seconds)
        await asyncio.sleep(drain_seconds)
    # grpc's own stop answers CANCELLED to calls that reach it or still wait in it (shutdown_gate.py): hold new
    # calls and refuse them UNAVAILABLE ourselves, stop grpc once none arrive, and only then answer the held
    # ones. Watch streams end now, or grpc's stop would wait the whole grace period for them.
    running.gate.close()
    running.health.end_watches()
    waited = await running.gate.wait_until_quiet(limit=min(grace_seconds, QUIET_LIMIT_SECONDS))
    grace_left = max(grace_seconds - waited, 0.0)
    log.info("health NOT_SERVING; new calls held for %.2f s until none arrived (%d held); stopping with %.1f s "
             "grace for in-flight calls", waited, running.gate.held_calls, grace_left)
    stopping = asyncio.ensure_future(running.server.stop(grace_left))
    # One step of the stop task runs grpc_server_shutdown_and_notify (port closed, GOAWAY on every
    # connection) before it first waits; the held calls are answered after that.
    await asyncio.sleep(0)
    running.gate.release()
    await stopping
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
