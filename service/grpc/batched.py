"""Run a call's texts through its model's batcher, turning batcher refusals into status codes.

Every task servicer (sentiment today, translation next) calls `run_batched`, so deadlines,
cancellation, queue limits and the swap-safe version report work the same for every task.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import grpc

from service.batching.batcher import BatchResult, DynamicBatcher
from service.batching.errors import BatcherClosedError, DeadlineExpiredError, QueueFullError
from service.grpc.calls import Call
from service.grpc.validation import RequestError, TextLimits, resolve_model, validate_texts
from service.model.loaded_model import LoadedModel
from service.registry.manager import ModelManager


async def run_batched(
    manager: ModelManager, model: LoadedModel, texts: Sequence[str], context: grpc.aio.ServicerContext
) -> BatchResult:
    batcher = manager.batcher(model.name)
    if batcher is None:
        raise RequestError(grpc.StatusCode.UNAVAILABLE, f"model {model.name!r} is being unloaded; retry")
    return await submit_batched(batcher, texts, context)


async def submit_batched(
    batcher: DynamicBatcher, items: Sequence[Any], context: grpc.aio.ServicerContext, group: Hashable = None
) -> BatchResult:
    """Queue a call's items on a batcher within the client's deadline; refusals become status codes."""
    try:
        return await batcher.submit(items, timeout=context.time_remaining(), group=group)
    except QueueFullError as exc:
        raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)) from None
    except BatcherClosedError as exc:
        raise RequestError(grpc.StatusCode.UNAVAILABLE, f"{exc}; retry") from None
    except DeadlineExpiredError as exc:
        raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, str(exc)) from None


async def run_text_task(
    manager: ModelManager, limits: TextLimits, task: str, texts: Sequence[str], model_name: str, call: Call,
    context: grpc.aio.ServicerContext,
) -> BatchResult:
    """The whole path of a call of plain texts (sentiment, NER): check the texts against the limits,
    resolve the task's model (named, or its default), run them batched with other calls' texts in a
    worker thread, and record on the call the model and the version that actually ran them."""
    validate_texts(list(texts), limits)
    model = resolve_model(manager.registry, task, model_name)
    call.model = model.name
    result = await run_batched(manager, model, texts, context)
    call.version = result.model.version
    return result
