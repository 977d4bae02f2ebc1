"""`python -m service`: load and verify the models, then serve them over gRPC until SIGTERM/SIGINT.

Exit status: 0 after a graceful stop, 1 if nothing could be served (no loadable model, a port that
cannot be bound), 2 for invalid settings (argparse).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from service.config import Settings, configure_logging, parse_settings
from service.grpc.pipelines import build_sentiment_pipelines
from service.grpc.server import ServeError, serve
from service.metrics.http import start_metrics_server
from service.metrics.registry import ServingMetrics
from service.pipelines.sentiment import SentimentPipeline
from service.repository.repository import ModelRepository, load_repository

log = logging.getLogger("service")

# Worst case of UTF-8: 4 bytes per character.
_MAX_UTF8_BYTES_PER_CHAR = 4


def load_models(
    settings: Settings, metrics: ServingMetrics
) -> tuple[ModelRepository, dict[str, SentimentPipeline]]:
    repository = load_repository(settings.model_dir, intra_op_threads=settings.threads)
    pipelines = build_sentiment_pipelines(repository)
    # Refusals were logged where they happened, one line each; here they are only counted.
    for failure in repository.failures:
        metrics.record_load_failure(failure.model)
    for model in repository.models.values():
        metrics.record_loaded_model(model)
    return repository, pipelines


def warn_about_limits(settings: Settings) -> None:
    # A request within the text limits must also fit in a message, or clients get RESOURCE_EXHAUSTED
    # for a call the documented limits allow.
    largest = settings.max_texts * settings.max_text_chars * _MAX_UTF8_BYTES_PER_CHAR
    if largest > settings.max_message_bytes:
        log.warning(
            "max-texts x max-text-chars allows requests of up to %d bytes, above max-message-bytes %d",
            largest, settings.max_message_bytes,
        )


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(argv)
    configure_logging(settings.log_level)
    log.info("starting with %s", settings)
    warn_about_limits(settings)
    metrics = ServingMetrics()
    try:
        repository, pipelines = load_models(settings, metrics)
    except FileNotFoundError as exc:
        log.critical("cannot serve: %s", exc)
        return 1
    if not repository.models:
        refused = ", ".join(f"{f.model} version {f.version}" for f in repository.failures) or "none found"
        log.critical("cannot serve: no model could be loaded from %s (refused: %s)",
                     settings.model_dir, refused)
        return 1

    try:
        metrics_server, metrics_port = start_metrics_server(
            settings.host, settings.metrics_port, metrics.registry
        )
    except OSError as exc:
        log.critical("cannot serve metrics on %s:%d: %s", settings.host, settings.metrics_port, exc)
        return 1
    log.info("metrics on http://%s:%d/metrics", settings.host, metrics_port)

    executor = ThreadPoolExecutor(settings.inference_workers, thread_name_prefix="inference")
    try:
        asyncio.run(serve(settings, repository, pipelines, executor, metrics))
    except ServeError as exc:
        log.critical("cannot serve: %s", exc)
        return 1
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        metrics_server.shutdown()
    log.info("exiting")
    return 0


if __name__ == "__main__":
    sys.exit(main())
