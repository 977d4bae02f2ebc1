"""Run a call's texts through its model's batcher, turning batcher refusals into status codes.

Every task servicer (sentiment today, translation next) calls `run_batched`, so deadlines,
cancellation, queue limits and the swap-safe version report work the same for every task.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from service.batching.batcher import BatchResult
from service.batching.errors import BatcherClosedError, DeadlineExpiredError, QueueFullError
from service.grpc.validation import RequestError
from service.repository.manager import ModelManager
from service.repository.repository import LoadedModel


async def run_batched(
    manager: ModelManager, model: LoadedModel, texts: Sequence[str], context: grpc.aio.ServicerContext
) -> BatchResult:
    batcher = manager.batcher(model.name)
    if batcher is None:
        raise RequestError(grpc.StatusCode.UNAVAILABLE, f"model {model.name!r} is being unloaded; retry")
    try:
        return await batcher.submit(texts, timeout=context.time_remaining())
    except QueueFullError as exc:
        raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)) from None
    except BatcherClosedError as exc:
        raise RequestError(grpc.StatusCode.UNAVAILABLE, f"{exc}; retry") from None
    except DeadlineExpiredError as exc:
        raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, str(exc)) from None
