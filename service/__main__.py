"""`python -m service`: load, verify and warm the models, then serve them over gRPC until SIGTERM/SIGINT.

Exit status: 0 after a graceful stop, 1 if nothing could be served (no loadable model, a port that
cannot be bound, unreadable TLS or token files, a bad model config), 2 for invalid settings (argparse).

With --workers N > 1 this process supervises N worker processes, each of which runs this same module
(service/workers.py); with --workers 1 (the default) it serves by itself, as it always did.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from service.config import Settings, configure_logging, parse_settings
from service.grpc.server import ServeError, start_server, stop_server, stop_signal_future
from service.metrics.http import start_metrics_server
from service.metrics.registry import ServingMetrics
from service.model.model_config import ModelConfigError, load_model_config
from service.registry.manager import ModelManager
from service.runtime.threads import thread_budget
from service.security.auth import TokenFileError, Tokens, read_token
from service.security.tls import TlsConfigError
from service.workers import WorkerIdentity, supervise, worker_count, worker_identity

log = logging.getLogger("service")

# Worst case of UTF-8: 4 bytes per character.
_MAX_UTF8_BYTES_PER_CHAR = 4


class CannotServe(Exception):
    """Start-up failed for a reason the operator must fix; logged as one critical line."""


def warn_about_limits(settings: Settings) -> None:
    # A request within the text limits must also fit in a message, or clients get RESOURCE_EXHAUSTED
    # for a call the documented limits allow.
    largest = settings.max_texts * settings.max_text_chars * _MAX_UTF8_BYTES_PER_CHAR
    if largest > settings.max_message_bytes:
        log.warning(
            "max-texts x max-text-chars allows requests of up to %d bytes, above max-message-bytes %d",
            largest, settings.max_message_bytes,
        )


async def run(settings: Settings, metrics: ServingMetrics, executor: ThreadPoolExecutor,
              worker: WorkerIdentity | None = None) -> None:
    # Handlers go in first, so a signal that arrives while models load still stops cleanly.
    stop_signal = stop_signal_future()
    try:
        tokens = Tokens(admin=read_token(settings.admin_token_file), api=read_token(settings.api_token_file))
        config = load_model_config(settings.model_config, settings.batch_config())
    except (TokenFileError, ModelConfigError) as exc:
        raise CannotServe(str(exc)) from None
    budget = thread_budget(settings.threads, settings.inference_workers, processes=worker.count if worker else 1)
    log.info("onnxruntime threads: %d in all (%s), %d per session, %d inference workers",
             budget.total, budget.source, budget.per_session, settings.inference_workers)
    manager = ModelManager(settings.model_dir, config, budget, metrics, executor)
    try:
        try:
            await manager.sync()
        except FileNotFoundError as exc:
            raise CannotServe(str(exc)) from None
        if not manager.registry.models:
            refused = ", ".join(f"{f.model} version {f.version}" for f in manager.registry.failures) or "none found"
            raise CannotServe(f"no model could be loaded from {settings.model_dir} (refused: {refused})")
        try:
            running = await start_server(settings, manager, executor, metrics, tokens, shared_port=worker is not None)
        except TlsConfigError as exc:
            raise CannotServe(str(exc)) from None
        poller = (
            asyncio.get_running_loop().create_task(manager.poll_forever(settings.poll_seconds))
            if settings.poll_seconds > 0 else None
        )
        orphaned = None
        if worker is not None:
            worker.mark_ready()
            orphaned = asyncio.ensure_future(worker.supervisor_gone())
        try:
            ending: list[asyncio.Future[Any]] = [stop_signal, *([orphaned] if orphaned else [])]
            await asyncio.wait(ending, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (poller, orphaned):
                if task is not None:
                    task.cancel()
            await stop_server(running, settings.grace_seconds, settings.drain_seconds)
    finally:
        await manager.close()  # after the server: calls still queued at stop run to the end


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    settings = parse_settings(arguments)
    configure_logging(settings.log_level, settings.log_format)
    worker = worker_identity()
    if worker is not None:
        return serve(settings, worker)
    log.info("starting with %s", settings)
    warn_about_limits(settings)
    if worker_count(settings) > 1:
        return supervise(settings, arguments)
    metrics = ServingMetrics()
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
        asyncio.run(run(settings, metrics, executor))
    except (ServeError, CannotServe) as exc:
        log.critical("cannot serve: %s", exc)
        return 1
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        metrics_server.shutdown()
    log.info("exiting")
    return 0


def serve(settings: Settings, worker: WorkerIdentity) -> int:
    """One worker of --workers N: its metrics go to the supervisor's multiprocess files, not a port."""
    log.info("worker %d of %d (pid %d)", worker.index, worker.count, os.getpid())
    executor = ThreadPoolExecutor(settings.inference_workers, thread_name_prefix="inference")
    try:
        asyncio.run(run(settings, ServingMetrics(worker=worker.index), executor, worker))
    except (ServeError, CannotServe) as exc:
        log.critical("cannot serve: worker %d: %s", worker.index, exc)
        return 1
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    log.info("worker %d exiting", worker.index)
    return 0


if __name__ == "__main__":
    sys.exit(main())
